"""Readers (classifier.readers) on the real shared data, on the repository's example photos and
on CIFAR pickles written here."""

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle.images import Preprocessing
from bundle.labels import CIFAR10_CLASSES, EXTRA_CLASS_WNIDS
from classifier.readers import (
    DataUnavailable, load_cifar_pickle, load_image_folder, load_keras_dataset, load_mnist, load_tiny_imagenet_val,
)


def test_cifar10_archive_loads_class_folders(shared_data):
    x, y, names = load_image_folder(shared_data / "cifar10-jpeg.tgz", "cifar10/test", limit_per_class=3)
    assert names == tuple(sorted(CIFAR10_CLASSES))
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [3] * 10
    assert x.std() > 20, "real photos, not blank arrays"


def test_tiny_imagenet_is_lanczos_downscaled(shared_data):
    wnids = EXTRA_CLASS_WNIDS["insects"][:2]
    x, y, names = load_image_folder(shared_data / "tiny-imagenet-subset.tgz", "tiny-imagenet-200/train", classes=wnids, limit_per_class=4)
    assert names == wnids and x.shape == (8, 32, 32, 3)
    x_val, y_val = load_tiny_imagenet_val(shared_data / "tiny-imagenet-subset.tgz", wnids)
    assert len(x_val) == 100 and np.bincount(y_val).tolist() == [50, 50]


def test_image_folder_on_disk_with_nested_images(tmp_path, example_photos):
    photos = list(example_photos.values())
    for index, name in enumerate(("cat", "ship")):
        folder = tmp_path / name / "images"
        folder.mkdir(parents=True)
        Image.open(photos[index]).save(folder / "one.png")
    x, y, names = load_image_folder(tmp_path, preprocessing=Preprocessing(height=28, width=28, channels=1))
    assert names == ("cat", "ship") and x.shape == (2, 28, 28, 1) and y.tolist() == [0, 1]


def test_missing_classes_are_reported(shared_data):
    with pytest.raises(DataUnavailable, match="unicorn"):
        load_image_folder(shared_data / "cifar10-jpeg.tgz", "cifar10/test", classes=("cat", "unicorn"), limit_per_class=1)


def _write_pickle(path, value):
    with open(path, "wb") as handle:
        pickle.dump(value, handle)


def test_cifar10_pickle_format(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _write_pickle(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_CLASSES]})
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _write_pickle(folder / name, {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 3, 8, 3]})
    x, y, names = load_cifar_pickle(folder, "train")
    assert x.shape == (20, 32, 32, 3) and names == CIFAR10_CLASSES
    x, y, names = load_cifar_pickle(folder, "test", classes=("ship", "cat"))
    assert names == ("ship", "cat") and y.tolist() == [1, 0, 1]
    # The channel-first rows become channel-last pixels.
    with open(folder / "test_batch", "rb") as handle:
        raw = pickle.load(handle)[b"data"][1]
    assert np.array_equal(x[0][:, :, 0].ravel(), raw[:1024])


def test_cifar100_pickle_selects_fine_or_coarse_names(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"fine_{i}".encode() for i in range(100)]
    coarse = [f"coarse_{i}".encode() for i in range(20)]
    coarse[4], coarse[7] = b"fruit_and_vegetables", b"insects"
    _write_pickle(folder / "meta", {b"fine_label_names": fine, b"coarse_label_names": coarse})
    data = np.zeros((5, 3072), np.uint8)
    _write_pickle(folder / "train", {b"data": data, b"fine_labels": [1, 2, 3, 4, 5], b"coarse_labels": [4, 7, 0, 4, 9]})
    x, y, names = load_cifar_pickle(folder, "train", classes=("insects", "fruit_and_vegetables"), label_mode="coarse")
    assert names == ("insects", "fruit_and_vegetables") and y.tolist() == [1, 0, 1]
    x, y, _ = load_cifar_pickle(folder, "train", classes=("fine_5",))
    assert y.tolist() == [0] and len(x) == 1
    with pytest.raises(ValueError, match="Unknown classes"):
        load_cifar_pickle(folder, "train", classes=("unicorn",), label_mode="coarse")


def test_keras_datasets_offline_fails_clearly():
    if (Path.home() / ".keras" / "datasets" / "cifar-10-batches-py").exists():
        pytest.skip("CIFAR-10 is cached by Keras on this machine, so nothing is downloaded")
    with pytest.raises(DataUnavailable, match="cannot reach the download server"):
        load_keras_dataset("cifar10")


def test_mnist_digits(shared_data):
    x, y = load_mnist(shared_data / "mnist")
    assert x.shape == (10000, 28, 28, 1) and set(np.unique(y)) == set(range(10))


def test_a_folder_without_mnist_files_is_reported(tmp_path):
    # No reader has a default location any more: an empty folder must say what it lacks.
    with pytest.raises(DataUnavailable, match="no MNIST idx files"):
        load_mnist(tmp_path)


def test_the_fixed_split_tunes_on_even_positions_and_measures_on_odd_ones():
    from classifier.readers import even_odd_split

    names = ["n03_c.JPEG", "n01_a.JPEG", "n04_d.JPEG", "n02_b.JPEG", "n05_e.JPEG"]
    tune, bench = even_odd_split(names)
    assert tune == ["n01_a.JPEG", "n03_c.JPEG", "n05_e.JPEG"] and bench == ["n02_b.JPEG", "n04_d.JPEG"]
    assert even_odd_split(reversed(names)) == (tune, bench)  # the order given does not matter
