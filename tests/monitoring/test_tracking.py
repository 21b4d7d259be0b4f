"""MLflow upload logging (monitoring.tracking): real uploads through the real predictor into a real
local store, read back with mlflow.search_runs and MlflowClient.get_metric_history."""

import sqlite3
import sys
import time

import numpy as np
import pytest

from monitoring import PredictionLog
from monitoring.tracking import INSTALL_HINT, TrackingUnavailable, UploadTracker, UploadTrackingConfig

METRICS = {"confidence": 0.75, "entropy": 6.5, "histogram_distance": 0.25}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the MLflow extra is not installed (pip install -r requirements-mlflow.txt)")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "state"


def search_runs(uri, experiment="uploads"):
    """mlflow.search_runs on the store at `uri`, leaving the process's tracking URI as it was."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_names=[experiment])
    finally:
        mlflow.set_tracking_uri(previous)


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_each_upload_is_logged_with_its_answer_as_the_runs_tag(folder, cnn_bundle, example_photos):
    from mlflow.tracking import MlflowClient

    from service.predictor import Predictor

    tracker = UploadTracker(folder, UploadTrackingConfig(batch_rows=4), tags={"bundle": "assets"})
    predictor = Predictor(cnn_bundle, log=PredictionLog(folder / "monitoring.sqlite"), tracker=tracker)
    photos = sorted(example_photos.values())
    answers = [predictor.predict(path).label for path in photos]
    tracker.close()

    assert tracker.logged == len(photos) and tracker.dropped == tracker.failed == 0
    told = ["refused" if answer is None else answer for answer in answers]
    runs = search_runs(tracker.uri)
    assert sorted(runs["tags.answered_class"]) == sorted(set(told))
    assert set(runs["tags.session"]) == {tracker.session} and set(runs["tags.bundle"]) == {"assets"}
    assert set(runs["status"]) == {"FINISHED"}
    # Each run's metric history is its class's uploads, in order, as the prediction log has them.
    logged = predictor.log.window(last=len(photos))
    client = MlflowClient(tracker.uri)
    for _, run in runs.iterrows():
        mine = [i for i, answer in enumerate(told) if answer == run["tags.answered_class"]]
        for name in ("confidence", "entropy", "histogram_distance"):
            history = client.get_metric_history(run["run_id"], name)
            assert [point.step for point in history] == mine
            np.testing.assert_allclose([point.value for point in history], logged[name][mine], rtol=1e-6)


def test_rows_are_written_in_batches_of_n_or_after_t_seconds(folder):
    from mlflow.tracking import MlflowClient

    tracker = UploadTracker(folder, UploadTrackingConfig(batch_rows=5, flush_s=60.0))
    for _ in range(12):
        tracker.record(METRICS, "cat")
    assert wait_for(lambda: tracker.logged == 10)
    time.sleep(0.3)
    assert tracker.logged == 10  # the last two wait for a fifth, or for a minute
    tracker.close()
    assert tracker.logged == 12  # ... or for the exit
    assert len(MlflowClient(tracker.uri).get_metric_history(tracker.runs["cat"], "confidence")) == 12

    timed = UploadTracker(folder, UploadTrackingConfig(batch_rows=1000, flush_s=0.2))
    started = time.monotonic()
    timed.record(METRICS, None)
    timed.record({**METRICS, "histogram_distance": float("nan")}, None)  # no reference: no distance
    assert wait_for(lambda: timed.logged == 2) and time.monotonic() - started >= 0.2
    history = MlflowClient(timed.uri).get_metric_history(timed.runs["refused"], "histogram_distance")
    assert [point.step for point in history] == [0]
    timed.close()
    assert len(search_runs(timed.uri)) == 2  # cat from the first session, refused from the second


def test_a_slow_store_drops_uploads_instead_of_making_them_wait(folder):
    tracker = UploadTracker(folder, UploadTrackingConfig(batch_rows=1, queue_size=5))
    # Another writer holds the database: the tracker's writer waits on it, and the queue fills.
    blocker = sqlite3.connect(folder / "mlruns.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    started = time.perf_counter()
    kept = [tracker.record(METRICS, "dog") for _ in range(100)]
    elapsed = time.perf_counter() - started
    blocker.execute("COMMIT")
    blocker.close()
    tracker.close()
    assert elapsed < 0.5, "recording waited for the store"
    assert sum(kept) <= 6 and tracker.dropped == 100 - sum(kept) > 0
    assert tracker.logged == sum(kept) and tracker.failed == 0
    assert tracker.record(METRICS, "dog") is False  # closed: nothing more is taken


def test_without_mlflow_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets where it is not installed
    with pytest.raises(TrackingUnavailable) as refused:
        UploadTracker(tmp_path)
    assert str(refused.value) == INSTALL_HINT and "pip install -r requirements-mlflow.txt" in INSTALL_HINT
