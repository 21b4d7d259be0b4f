"""FeedbackStore on real photos: layout, duplicates, relabels, threads, path safety."""

import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from classifier.data import load_image_folder
from classifier.images import ImageError, open_image, to_mode
from similarity import FeedbackError, FeedbackStore
from similarity.feedback import LOG_FILE


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def test_save_writes_a_training_ready_png_and_a_log_row(tmp_path, real_photos):
    store = FeedbackStore(tmp_path / "feedback")
    record = store.save(real_photos["n03095699_container_ship"], "ship", predicted="airplane")

    assert record.label == "ship" and record.status == "new" and record.predicted == "airplane"
    assert record.source == "gallery" and len(record.hash) == 32
    assert files_under(store.root) == [f"ship/{record.hash}.png"] == [record.path]
    with Image.open(store.root / record.path) as saved:
        assert saved.format == "PNG"
        expected = np.asarray(to_mode(open_image(real_photos["n03095699_container_ship"])))
        assert np.array_equal(np.asarray(saved), expected)  # full resolution, lossless
    rows = [json.loads(line) for line in (store.root / LOG_FILE).read_text().splitlines()]
    assert rows == [{**rows[0], "label": "ship", "hash": record.hash, "predicted": "airplane", "status": "new"}]
    assert rows[0]["time"].endswith("+00:00")
    x, y, names = load_image_folder(store.root)
    assert names == ("ship",) and x.shape == (1, 32, 32, 3)


def test_the_same_picture_twice_is_one_record(tmp_path, real_photos, shared_data):
    store = FeedbackStore(tmp_path)
    path = shared_data / "imagenet-samples" / "n02690373_airliner.JPEG"
    first = store.save(real_photos["n02690373_airliner"], "airplane")
    second = store.save(path, "airplane", predicted="bird")  # same picture, sent another way
    assert second.hash == first.hash and second.status == "duplicate"
    assert files_under(tmp_path) == [first.path]
    assert [r.hash for r in store.records()] == [first.hash]
    assert [r.status for r in store.history()] == ["new", "duplicate"]


def test_relabelling_a_picture_keeps_only_the_latest_label(tmp_path, real_photos):
    store = FeedbackStore(tmp_path)
    first = store.save(real_photos["n02690373_airliner"], "bird")
    second = store.save(real_photos["n02690373_airliner"], "airplane")
    assert second.status == "relabelled" and second.previous_label == "bird"
    assert files_under(tmp_path) == [f"airplane/{first.hash}.png"]
    assert [(r.label, r.status) for r in store.records()] == [("airplane", "relabelled")]
    assert [r.label for r in store.history()] == ["bird", "airplane"]


def test_big_pictures_are_capped_to_1024_pixels(tmp_path, real_photos):
    photo = open_image(real_photos["n02123597_Siamese_cat"])
    big = photo.resize((photo.width * 4, photo.height * 4), Image.Resampling.LANCZOS)
    record = FeedbackStore(tmp_path).save(big, "cat")
    with Image.open(tmp_path / record.path) as saved:
        assert max(saved.size) == 1024
        assert abs(saved.width / saved.height - big.width / big.height) < 0.01


def test_concurrent_saves_from_many_threads_lose_nothing(tmp_path, real_photos):
    photos = list(real_photos.values())[:16]
    labels = ["cat", "dog", "ship", "truck"]
    # Each photo is sent three times, from different threads and two store objects on one folder.
    jobs = [(photo, labels[i % 4]) for i, photo in enumerate(photos)] * 3
    stores = [FeedbackStore(tmp_path), FeedbackStore(tmp_path)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        records = list(pool.map(lambda job: stores[job[0] % 2].save(*job[1]), enumerate(jobs)))

    hashes = {r.hash for r in records}
    assert len(hashes) == len(photos)
    assert len(files_under(tmp_path)) == len(photos)
    assert [r.status for r in records].count("new") == len(photos)
    # Then every photo is relabelled at once to two different classes: each ends in exactly one.
    racing = [(photo, label) for photo in photos for label in ("bird", "frog")]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda job: stores[job[0] % 2].save(*job[1]), enumerate(racing)))
    stored = files_under(tmp_path)
    assert len(stored) == len(photos) and {name.split("/")[1][:-4] for name in stored} == hashes
    lines = (tmp_path / LOG_FILE).read_text().splitlines()
    assert len(lines) == len(jobs) + len(racing) and all(json.loads(line)["hash"] in hashes for line in lines)
    latest = FeedbackStore(tmp_path).records()
    assert {r.hash for r in latest} == hashes and {r.path for r in latest} == set(stored)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("label", ["../evil", "cat/../../evil", "/etc/passwd", "", "CAT", None, 3, "cat\x00"])
def test_a_bad_label_is_refused_and_nothing_is_written(tmp_path, real_photos, label):
    root = tmp_path / "feedback"
    with pytest.raises(FeedbackError, match="Unknown label .*choose one of: airplane, automobile"):
        FeedbackStore(root).save(real_photos["n02123597_Siamese_cat"], label)
    assert not any(tmp_path.rglob("*.png")) and not (root / LOG_FILE).exists()


def test_bad_images_and_fields_are_refused_plainly(tmp_path, real_photos):
    store = FeedbackStore(tmp_path)
    with pytest.raises(ImageError, match="not an image"):
        store.save(b"certainly not a picture", "cat")
    with pytest.raises(ImageError, match="empty"):
        store.save(io.BytesIO(b""), "cat")
    with pytest.raises(FeedbackError, match="source"):
        store.save(real_photos["n02123597_Siamese_cat"], "cat", source="../x")
    with pytest.raises(FeedbackError, match="predicted"):
        store.save(real_photos["n02123597_Siamese_cat"], "cat", predicted="x" * 1000)
    assert not any(tmp_path.rglob("*.png")) and store.records() == []
