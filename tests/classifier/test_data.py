"""Data loaders on the real shared data and on CIFAR pickles written here."""

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier.data import (
    DataConfig, DataUnavailable, balance_by_rotation, load_cifar_pickle, load_image_folder,
    load_keras_dataset, load_mnist, load_tiny_imagenet_val, prepare_dataset, rotate,
)
from classifier.images import Preprocessing
from classifier.labels import CIFAR10_CLASSES, CLASS_NAMES, EXTRA_CLASS_WNIDS


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


def test_image_folder_on_disk_with_nested_images(tmp_path, photo_paths):
    for index, name in enumerate(("cat", "ship")):
        folder = tmp_path / name / "images"
        folder.mkdir(parents=True)
        Image.open(photo_paths[index]).save(folder / "one.png")
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
    raw = pickle.load(open(folder / "test_batch", "rb"))[b"data"][1]
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
    with pytest.raises(DataUnavailable, match="offline"):
        load_keras_dataset("cifar10")


def test_mnist_digits(shared_data):
    x, y = load_mnist(shared_data / "mnist")
    assert x.shape == (10000, 28, 28, 1) and set(np.unique(y)) == set(range(10))


def test_balancing_brings_every_class_to_the_largest():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    y = np.array([0] * 12 + [1] * 5 + [2] * 3)
    x_balanced, y_balanced = balance_by_rotation(x, y, rng)
    assert np.bincount(y_balanced).tolist() == [12, 12, 12]
    assert np.array_equal(x_balanced[:20], x), "originals are kept as they were"


def test_rotation_keeps_shape_and_changes_pixels():
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16] = 255
    turned = rotate(image, 20.0)
    assert turned.shape == image.shape and not np.array_equal(turned, image)
    assert rotate(image[:, :, :1], -15.0).shape == (32, 32, 1)


def test_prepared_dataset_is_split_balanced_and_cached(tmp_path):
    config = DataConfig(limit_per_class=30, cache_dir=str(tmp_path), val_fraction=0.2)
    dataset = prepare_dataset(config)
    assert dataset.class_names == CLASS_NAMES
    counts = np.bincount(dataset.y_train, minlength=13)
    assert len(set(counts.tolist())) == 1, "balanced"
    assert len(list(tmp_path.glob("raw-*.npz"))) == 1
    again = prepare_dataset(config)
    assert np.array_equal(dataset.x_train, again.x_train), "same seed, same data"
    # Validation images are never in training (compare raw bytes of every image).
    train = {image.tobytes() for image in dataset.x_train}
    assert not any(image.tobytes() in train for image in dataset.x_val)
    assert len(dataset.y_test) == 30 * 13


def test_tiny_imagenet_val_of_our_classes_joins_training_but_not_test(tmp_path):
    base = DataConfig(limit_per_class=10, cache_dir=str(tmp_path), balance=False)
    plain = prepare_dataset(base)
    wider = prepare_dataset(DataConfig(**{**base.__dict__, "tiny_imagenet_val_in_train": True}))
    def counts(dataset):
        return np.bincount(np.concatenate([dataset.y_train, dataset.y_val]), minlength=13)

    added = counts(wider) - counts(plain)
    assert added.sum() == 10 and (added >= 0).all()
    # The point: pictures with Tiny ImageNet's look now also carry CIFAR-10 labels.
    assert added[:10].sum() > 0
    assert np.array_equal(wider.x_test, plain.x_test), "the test split is untouched"
