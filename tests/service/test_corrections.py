"""CorrectionStore on real photos: votes side by side, review, export, one transaction per vote,
and the export that `python -m pipeline.build --feedback` trains on. Tests taking `store_target`
run on a fresh SQLite file and on a fresh database of a real PostgreSQL server."""

import hashlib
import io
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from bundle.images import open_image, to_uint8
from bundle.labels import CLASS_NAMES
from classifier.readers import load_image_folder
from service.corrections import CorrectionError, CorrectionStore
from service.public import CORRECTION_SIDE, correction_png
from tests.conftest import REPO


@pytest.fixture(scope="module")
def pictures(example_photos):
    """name -> (PNG, hash) as the app keeps them for a correction: the correction copy of the
    upload (service.public) and the hash of the uploaded file (service.predictor)."""
    return {
        name: (correction_png(open_image(path)), hashlib.sha256(path.read_bytes()).hexdigest()[:32])
        for name, path in example_photos.items()
    }


def vote(store, picture, label, voter, answer="airplane", answered_by="fallback", session="s1"):
    png, picture_hash = picture
    return store.vote(png, picture_hash, label, answer, answered_by, voter, session)


def table(target, query):
    """Read the store with a connection of our own, as another process would."""
    if str(target).startswith("postgresql://"):
        import psycopg

        with psycopg.connect(str(target), options="-c search_path=corrections") as connection:
            return [tuple(row) for row in connection.execute(query).fetchall()]
    connection = sqlite3.connect(target)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_votes_never_overwrite_each_other(store_target, pictures, example_photos):
    store = CorrectionStore(store_target, CLASS_NAMES)
    ship = pictures["container_ship"]
    first = vote(store, ship, "ship", "voter-a", answer="airplane", answered_by="cnn", session="one")
    second = vote(store, ship, "ship", "voter-b")
    # A conflicting vote on the same picture is kept beside the others, for a reviewer to settle.
    third = vote(store, ship, "airplane", "voter-c", answer=None, answered_by="refused")
    assert first.picture == second.picture == third.picture == ship[1]
    assert [(v.id, v.label, v.voter, v.status) for v in store.votes(picture=ship[1])] == [
        (first.id, "ship", "voter-a", "pending"), (second.id, "ship", "voter-b", "pending"),
        (third.id, "airplane", "voter-c", "pending")]
    kept = store.votes_by_id(first.id)
    assert (kept.answer, kept.answered_by, kept.session, kept.reviewer) == ("airplane", "cnn", "one", None)
    assert store.votes_by_id(third.id).answer is None
    # One voter, one vote per picture: a second one (even for another class) is refused, the first stays.
    with pytest.raises(CorrectionError, match="already sent a correction"):
        vote(store, ship, "automobile", "voter-a")
    assert [v.label for v in store.votes(picture=ship[1])] == ["ship", "ship", "airplane"]
    # The picture is kept once, byte for byte, however many votes it has.
    assert table(store.target, "SELECT hash FROM pictures") == [(ship[1],)]
    assert store.picture(ship[1]) == ship[0] and store.picture("0" * 32) is None
    with Image.open(io.BytesIO(store.picture(ship[1]))) as saved:  # the app's correction copy, lossless
        assert saved.format == "PNG" and max(saved.size) <= CORRECTION_SIDE
        assert np.array_equal(np.asarray(saved), np.asarray(open_image(example_photos["container_ship"]).convert("RGB")))
    store.close()


def test_review_accepts_and_rejects(store_target, pictures):
    store = CorrectionStore(store_target, CLASS_NAMES)
    cat = vote(store, pictures["Siamese_cat"], "cat", "voter-a")
    dog = vote(store, pictures["Siamese_cat"], "dog", "voter-b")
    truck = vote(store, pictures["tow_truck"], "truck", "voter-a")
    accepted = store.review(cat.id, accept=True, reviewer="alice")
    assert (accepted.status, accepted.reviewer, accepted.label) == ("accepted", "alice", "cat")
    assert accepted.reviewed_at >= cat.time
    assert store.review(dog.id, accept=False).status == "rejected"
    assert [v.id for v in store.pending()] == [truck.id]
    assert [v.id for v in store.votes("accepted")] == [cat.id] and [v.id for v in store.votes("rejected")] == [dog.id]
    assert store.counts() == {"pending": 1, "accepted": 1, "rejected": 1}
    # A reviewer may change their mind; a vote that does not exist is a plain error.
    assert store.review(dog.id, accept=True, reviewer="bob").status == "accepted"
    with pytest.raises(CorrectionError, match="No vote has id 999"):
        store.review(999, accept=True)
    assert store.counts() == {"pending": 1, "accepted": 2, "rejected": 0}
    store.close()


def test_export_writes_accepted_pictures_or_everything_not_rejected(store_target, tmp_path, pictures):
    store = CorrectionStore(store_target, CLASS_NAMES)
    accepted = vote(store, pictures["Siamese_cat"], "cat", "a")
    vote(store, pictures["container_ship"], "ship", "a")  # pending
    rejected = vote(store, pictures["airliner"], "bird", "a")
    # Two accepted votes that disagree: the picture is left out, never trained on twice.
    both = [vote(store, pictures["tow_truck"], label, voter) for label, voter in (("truck", "a"), ("automobile", "b"))]
    # Accepted "dog", a rejected "cat" beside it: exported as a dog either way.
    settled = [vote(store, pictures["pug"], label, voter) for label, voter in (("dog", "a"), ("cat", "b"))]
    # Accepted "fruit_and_vegetables" and a pending "dog": agreed among accepted votes only.
    unsettled = vote(store, pictures["banana"], "fruit_and_vegetables", "a")
    vote(store, pictures["banana"], "dog", "b")
    for item in (accepted, *both, settled[0], unsettled):
        store.review(item.id, accept=True)
    for item in (rejected, settled[1]):
        store.review(item.id, accept=False)

    name = {label: pictures[photo][1] for label, photo in (("cat", "Siamese_cat"), ("ship", "container_ship"),
                                                           ("dog", "pug"), ("fruit", "banana"), ("truck", "tow_truck"))}
    report = store.export(tmp_path / "accepted", accepted_only=True)
    assert files_under(tmp_path / "accepted") == sorted([
        f"cat/{name['cat']}.png", f"dog/{name['dog']}.png", f"fruit_and_vegetables/{name['fruit']}.png"])
    assert report == {"pictures": 3, "conflicting": [name["truck"]], "accepted_only": True}
    report = store.export(tmp_path / "all", accepted_only=False)
    assert files_under(tmp_path / "all") == sorted([f"cat/{name['cat']}.png", f"dog/{name['dog']}.png", f"ship/{name['ship']}.png"])
    assert report == {"pictures": 3, "conflicting": sorted([name["truck"], name["fruit"]]), "accepted_only": False}
    # The files are the stored pictures, and an image-folder reader takes the tree as it is.
    assert (tmp_path / "all" / "ship" / f"{name['ship']}.png").read_bytes() == pictures["container_ship"][0]
    x, y, classes = load_image_folder(tmp_path / "all")
    assert classes == ("cat", "dog", "ship") and x.shape == (3, 32, 32, 3) and y.tolist() == [0, 1, 2]
    store.close()


@pytest.mark.parametrize("label", ["../evil", "cat/../../evil", "/etc/passwd", "", "CAT", "cat ", None, 3, "cat\x00"])
def test_an_invalid_label_is_refused_and_nothing_is_kept(store_target, pictures, label):
    store = CorrectionStore(store_target, CLASS_NAMES)
    with pytest.raises(CorrectionError, match="Unknown label .*choose one of: airplane, automobile"):
        vote(store, pictures["Siamese_cat"], label, "voter-a")
    assert store.votes() == [] and store.picture(pictures["Siamese_cat"][1]) is None
    assert table(store.target, "SELECT COUNT(*) FROM pictures") == [(0,)]
    store.close()


def test_a_picture_and_its_vote_are_stored_together_or_not_at_all(store_target, pictures):
    store = CorrectionStore(store_target, CLASS_NAMES)
    ship_png, ship_hash = pictures["container_ship"]
    # The vote row fails after the picture row was inserted: the transaction takes both back.
    with pytest.raises(CorrectionError):
        store.vote(ship_png, ship_hash, "ship", "airplane", None, "voter-a", "s1")  # answered_by is required
    assert store.picture(ship_hash) is None and store.votes() == []
    # A vote without its picture is refused too (the picture row is required by a foreign key).
    with pytest.raises(CorrectionError):
        store.vote(None, ship_hash, "ship", "airplane", "cnn", "voter-a", "s1")
    assert table(store.target, "SELECT COUNT(*) FROM pictures") == [(0,)] and store.votes() == []
    # The failures left nothing behind that blocks the real vote.
    vote(store, pictures["container_ship"], "ship", "voter-a")
    assert store.picture(ship_hash) == ship_png and len(store.votes()) == 1
    if store.path is not None:
        assert table(store.target, "PRAGMA journal_mode") == [("wal",)]
    store.close()


KILLED_WRITER = """
import sys
from bundle.labels import CLASS_NAMES
from service.corrections import CorrectionStore

store = CorrectionStore(sys.argv[1], CLASS_NAMES)
png = open(sys.argv[2], "rb").read()
for i in range(100_000):
    store.vote(png, f"{i:032x}", CLASS_NAMES[i % 13], None, "refused", "voter", "s")
    print(i, flush=True)
"""


def test_a_writer_killed_mid_stream_leaves_no_vote_without_picture(store_target, tmp_path, pictures):
    png = tmp_path / "picture.png"
    png.write_bytes(pictures["volcano"][0])
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, store_target, str(png)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    told = []  # votes the writer was told are saved
    try:
        while len(told) < 30:
            line = writer.stdout.readline()
            assert line, "the writer stopped before it was killed (see its error above)"
            told.append(int(line))
    finally:
        writer.kill()  # SIGKILL, at whatever point of a transaction it is
        writer.wait()
        writer.stdout.close()
    store = CorrectionStore(store_target, CLASS_NAMES)
    stored = {v.picture for v in store.votes()}
    assert {f"{i:032x}" for i in told} <= stored
    if store.path is not None:
        assert table(store_target, "PRAGMA integrity_check") == [("ok",)]
    assert {row[0] for row in table(store_target, "SELECT hash FROM pictures")} == stored  # no orphan either way
    assert all(store.picture(h) == pictures["volcano"][0] for h in list(stored)[:5])
    store.close()


def test_concurrent_votes_from_many_threads_lose_nothing(store_target, pictures):
    stores = [CorrectionStore(store_target, CLASS_NAMES) for _ in range(2)]  # two replicas, one store
    items = list(pictures.values())
    jobs = [(item, CLASS_NAMES[i % 13], f"voter-{v}") for i, item in enumerate(items) for v in range(4)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        votes = list(pool.map(lambda job: vote(stores[job[0] % 2], *job[1]), enumerate(jobs)))
    assert len({v.id for v in votes}) == len(jobs) == len(stores[0].votes())
    assert table(stores[0].target, "SELECT COUNT(*) FROM pictures") == [(len(items),)]
    # Every thread's second vote on a picture it voted on is refused, none slips through.
    errors = []

    def again(job):
        try:
            vote(stores[1], *job)
        except CorrectionError as error:
            errors.append(error)

    threads = [threading.Thread(target=again, args=(job,)) for job in jobs[:8]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 8 and len(stores[1].votes()) == len(jobs)
    for store in stores:
        store.close()


def _store_for_training(tmp_path, pictures):
    """Three accepted corrections, one pending, one rejected."""
    store = CorrectionStore(tmp_path / "state" / "corrections.sqlite", CLASS_NAMES)
    for photo, label in (("Siamese_cat", "cat"), ("airliner", "airplane"), ("container_ship", "ship")):
        store.review(vote(store, pictures[photo], label, "voter").id, accept=True)
    vote(store, pictures["pug"], "dog", "voter")
    store.review(vote(store, pictures["volcano"], "bird", "voter").id, accept=False)
    store.close()
    return store.path


def test_export_corrections_writes_the_tree_a_build_trains_on(tmp_path, pictures):
    from classifier.readers import DataUnavailable
    from pipeline.feedback import export_corrections

    path = _store_for_training(tmp_path, pictures)
    folder = export_corrections(path, accepted_only=True, cache_dir=tmp_path / "cache")
    x, y, classes = load_image_folder(folder)
    assert classes == ("airplane", "cat", "ship") and y.tolist() == [0, 1, 2]
    everything = export_corrections(path, accepted_only=False, cache_dir=tmp_path / "cache")
    assert everything != folder and load_image_folder(everything)[2] == ("airplane", "cat", "dog", "ship")
    with pytest.raises(DataUnavailable, match="no corrections store"):
        export_corrections(tmp_path / "missing.sqlite", cache_dir=tmp_path / "cache")


def test_accepted_corrections_join_the_training_split(tmp_path, pictures, shared_data):
    from classifier.dataset import DataConfig, prepare_dataset
    from pipeline.feedback import export_corrections

    folder = export_corrections(_store_for_training(tmp_path, pictures), cache_dir=tmp_path / "cache")
    baseline_config = DataConfig(data_dir=str(shared_data), limit_per_class=40)
    baseline = prepare_dataset(baseline_config)
    config = DataConfig(data_dir=str(shared_data), limit_per_class=40, extra_train_folders=(folder,))
    dataset = prepare_dataset(config)
    assert np.sum(~dataset.train_augmented) == np.sum(~baseline.train_augmented) + 3
    flat = dataset.x_train.reshape(len(dataset.x_train), -1)
    for photo, label in (("Siamese_cat", "cat"), ("airliner", "airplane"), ("container_ship", "ship")):
        pixels = to_uint8(pictures[photo][0], config.preprocessing).reshape(-1)
        rows = np.flatnonzero(np.all(flat == pixels, axis=1))
        assert len(rows) >= 1 and dataset.class_names[dataset.y_train[rows[0]]] == label
