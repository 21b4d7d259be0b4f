"""Our 13-class dataset (classifier.dataset): split, balanced and cached, from the real shared data."""

from dataclasses import replace

import numpy as np
import pytest

from classifier.dataset import DataConfig, balance_by_rotation, prepare_dataset, rotate
from bundle.labels import CLASS_NAMES
from classifier.readers import DataUnavailable


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


def test_without_a_data_folder_nothing_is_assumed(tmp_path):
    # Library code has no default data folder: the caller must name one.
    with pytest.raises(DataUnavailable, match="No data was given"):
        prepare_dataset(DataConfig(limit_per_class=5, cache_dir=str(tmp_path)))
    with pytest.raises(DataUnavailable, match="does not exist"):
        prepare_dataset(DataConfig(data_dir=str(tmp_path / "nowhere"), limit_per_class=5, cache_dir=str(tmp_path)))


def test_prepared_dataset_is_split_balanced_and_cached(shared_data, tmp_path):
    config = DataConfig(data_dir=str(shared_data), limit_per_class=30, cache_dir=str(tmp_path), val_fraction=0.2)
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


def test_tiny_imagenet_val_of_our_classes_joins_training_but_not_test(shared_data, tmp_path):
    base = DataConfig(data_dir=str(shared_data), limit_per_class=10, cache_dir=str(tmp_path), balance=False)
    plain = prepare_dataset(base)
    wider = prepare_dataset(replace(base, tiny_imagenet_val_in_train=True))

    def counts(dataset):
        return np.bincount(np.concatenate([dataset.y_train, dataset.y_val]), minlength=13)

    added = counts(wider) - counts(plain)
    assert added.sum() == 10 and (added >= 0).all()
    # The point: pictures with Tiny ImageNet's look now also carry CIFAR-10 labels.
    assert added[:10].sum() > 0
    assert np.array_equal(wider.x_test, plain.x_test), "the test split is untouched"
