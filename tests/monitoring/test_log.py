"""The prediction log on both back ends: every test taking `store_target` runs on a fresh SQLite
file and on a fresh database of a real PostgreSQL server (tests/postgres_server.py)."""

import sqlite3
import threading

import numpy as np
import pytest

import storage
from monitoring import metrics
from monitoring.log import LogError, PredictionLog


def record(image, predicted_class="cat", confidence=0.8, answered_by="cnn", **extra):
    """A log record; an answered upload was told the CNN's class, a refused one nothing."""
    return {
        "predicted_class": predicted_class, "confidence": confidence,
        "entropy": metrics.intensity_entropy(image), "histogram_distance": 0.2,
        "colour_histogram": metrics.colour_histogram(image), "image": image,
        "answered_by": answered_by, "answer": None if answered_by == "refused" else predicted_class, **extra,
    }


def test_append_recent_tag_and_count(store_target, pictures):
    images = pictures[:12]
    with PredictionLog(store_target) as log:
        ids = [log.append(record(image, confidence=0.5 + i / 100)) for i, image in enumerate(images)]
        assert log.count() == 12
        log.tag(ids[3], "dog")
        recent = log.recent(10)
        assert [row["id"] for row in recent] == ids[::-1][:10]  # newest first
        np.testing.assert_array_equal(recent[0]["image"], images[-1])  # PNG thumbnails are lossless
        assert recent[0]["confidence"] == pytest.approx(0.61) and recent[0]["answered_by"] == "cnn"
        assert recent[0]["answer"] == "cat"
        assert recent[0]["utc"].endswith("+00:00")
        assert [row["tag"] for row in log.recent(12) if row["id"] == ids[3]] == ["dog"]


def test_concurrent_writers_lose_no_rows(store_target, pictures):
    images = pictures
    log = PredictionLog(store_target, busy_timeout_s=30)
    threads, per_thread, errors = 8, 100, []

    def write(thread):
        try:
            for i in range(per_thread):
                log.append(record(images[i % len(images)], predicted_class=f"thread{thread}", confidence=i / per_thread))
        except Exception as error:  # surfaced below: a lost row must fail the test, not vanish
            errors.append(error)

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert log.count() == threads * per_thread
    window = log.window()
    assert len(set(window["id"])) == threads * per_thread
    for t in range(threads):
        assert np.sum(window["predicted_class"] == f"thread{t}") == per_thread
    log.close()


def test_a_reopened_database_keeps_everything(store_target, pictures):
    path = store_target
    images = pictures[:30]
    log = PredictionLog(path)
    ids = [log.append(record(image, answered_by="refused" if i % 3 == 0 else "cnn", ood=i % 3 == 0, time=1_700_000_000 + i))
           for i, image in enumerate(images)]
    log.tag(ids[0], "insects")
    log.close()

    reopened = PredictionLog(path)
    assert reopened.count() == 30
    window = reopened.window(histograms=True)
    np.testing.assert_array_equal(window["id"], ids)
    np.testing.assert_array_equal(window["ood"], [i % 3 == 0 for i in range(30)])
    np.testing.assert_allclose(window["entropy"], metrics.intensity_entropies(images))
    np.testing.assert_allclose(window["colour_histogram"], metrics.colour_histograms(images).reshape(30, -1), atol=1e-7)
    oldest = reopened.recent(30)[-1]
    assert oldest["tag"] == "insects" and oldest["answered_by"] == "refused" and oldest["answer"] is None
    assert window["answer"].tolist() == [None if i % 3 == 0 else "cat" for i in range(30)]
    np.testing.assert_array_equal(oldest["image"], images[0])
    reopened.close()


def test_wal_mode_and_the_dashboard_queries_use_indexes(tmp_path, pictures):
    path = tmp_path / "log.sqlite"
    PredictionLog(path).append(record(pictures[0]))
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    plan = " ".join(row[-1] for row in connection.execute("EXPLAIN QUERY PLAN SELECT * FROM predictions WHERE time >= 0"))
    assert "predictions_time" in plan
    plan = " ".join(row[-1] for row in connection.execute(
        "EXPLAIN QUERY PLAN SELECT confidence FROM predictions WHERE predicted_class = 'cat' AND time >= 0"))
    assert "predictions_class_time" in plan
    connection.close()


def test_window_and_timeline(store_target, pictures):
    images = np.concatenate([pictures, pictures])[:40]
    with PredictionLog(store_target) as log:
        for i, image in enumerate(images):
            log.append(record(image, predicted_class="cat" if i % 2 else "dog", confidence=i / 40, time=1000.0 + i))
        assert len(log.window(last=7)["id"]) == 7
        since = log.window(since=1030.0)
        np.testing.assert_allclose(since["time"], 1030.0 + np.arange(10))
        assert len(log.window(since=1010.0, until=1020.0)["id"]) == 10
        starts, timeline = log.timeline(buckets=4)
        assert timeline["count"].sum() == 40
        cats = timeline["class"] == "cat"
        # Per-class means, weighted by count, give back the class's overall mean.
        mean = np.sum(timeline["confidence"][cats] * timeline["count"][cats]) / timeline["count"][cats].sum()
        assert mean == pytest.approx(np.mean(np.arange(1, 40, 2) / 40))
        assert starts[0] == pytest.approx(1000.0)
        # Buckets are whole minutes here (40 s of uploads): the integer part, not a rounding.
        starts, timeline = log.timeline(buckets=60)
        assert timeline["bucket"].tolist() == [0, 0] and timeline["count"].tolist() == [20, 20]
        log.append(record(images[0], time=1000.0 + 59.9))
        log.append(record(images[0], time=1000.0 + 90.0))
        assert sorted(log.timeline(buckets=60)[1]["bucket"].tolist()) == [0, 0, 1]


def test_bad_records_and_rows_get_clear_errors(store_target, pictures):
    image = pictures[0]
    with PredictionLog(store_target) as log:
        with pytest.raises(ValueError, match="answered_by"):
            log.append(record(image, answered_by="oracle"))
        with pytest.raises(ValueError, match="finite"):
            log.append(record(image, confidence=float("nan")))
        with pytest.raises(ValueError, match="Unknown"):
            log.append(record(image, colour="red"))
        # What the person was told must agree with who answered: a refusal tells no class.
        with pytest.raises(ValueError, match="refused upload has no answer"):
            log.append(record(image, answered_by="refused", answer="cat"))
        with pytest.raises(ValueError, match="answered one has one"):
            log.append(record(image, answered_by="fallback", answer=None))
        with pytest.raises(ValueError, match="No logged prediction"):
            log.tag(12345, "cat")
        assert log.count() == 0


def test_a_file_that_is_not_sqlite_gets_a_log_error(tmp_path):
    path = tmp_path / "log.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LogError, match="prediction log"):
        PredictionLog(path)


def test_threads_share_a_few_pooled_connections(store_target, pictures):
    log = PredictionLog(store_target)
    for _ in range(20):
        worker = threading.Thread(target=log.append, args=(record(pictures[0]),))
        worker.start()
        worker.join()
    # Threads come and go (a server's worker pool shrinks when idle); connections do not pile up.
    assert log.count() == 20 and log.engine.pool.checkedin() <= storage.POOL_SIZE
    log.close()


def test_two_processes_on_one_database_show_one_log(store_target, pictures):
    """Two replicas' logs (here two objects, each with its own connections) read each other's rows."""
    first, second = PredictionLog(store_target), PredictionLog(store_target)
    ids = [(first if i % 2 else second).append(record(pictures[i], time=1000.0 + i)) for i in range(10)]
    second.tag(ids[1], "dog")  # an upload logged by the first, corrected through the second
    for log in (first, second):
        assert log.count() == 10 and log.window()["id"].tolist() == ids
        assert [row["tag"] for row in log.recent(10) if row["id"] == ids[1]] == ["dog"]
    first.close()
    second.close()


OLD_SCHEMA = """
CREATE TABLE predictions (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, predicted_class TEXT NOT NULL, confidence REAL NOT NULL,
    entropy REAL NOT NULL, histogram_distance REAL, answered_by TEXT NOT NULL, ood INTEGER NOT NULL, tag TEXT
);
CREATE TABLE pictures (id INTEGER PRIMARY KEY REFERENCES predictions (id), histogram BLOB, thumbnail BLOB);
"""


def test_a_log_written_by_an_older_version_is_refused_plainly_and_left_as_it_was(tmp_path):
    import storage

    path = tmp_path / "log.sqlite"
    connection = sqlite3.connect(path)
    connection.executescript(OLD_SCHEMA)  # the table as logs deployed before the answer column have it
    connection.execute("INSERT INTO predictions (time, predicted_class, confidence, entropy, answered_by, ood)"
                       " VALUES (1000.0, 'dog', 0.9, 6.5, 'cnn', 0)")
    connection.commit()
    connection.close()
    with pytest.raises(storage.DatabaseError, match="older version .*lacks answer.*move that store aside"):
        PredictionLog(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM predictions").fetchone() == (1,)
