"""Any labelled collection as a dataset: folder trees, archives and MNIST idx files, all real data."""

import numpy as np
import pytest
from PIL import Image

from classifier.custom_dataset import readable_names
from classifier.dataset import DataConfig, prepare_dataset
from bundle.images import Preprocessing
from classifier.readers import DataUnavailable, is_mnist_folder, load_image_folder

GRAY_28 = Preprocessing(height=28, width=28, channels=1)


def test_mnist_idx_folder_is_split_grayscale_and_stratified(shared_data, tmp_path):
    config = DataConfig(source=str(shared_data / "mnist"), preprocessing=GRAY_28, limit_per_class=50, val_fraction=0.1,
                        cache_dir=str(tmp_path))
    dataset = prepare_dataset(config)
    assert is_mnist_folder(shared_data / "mnist")
    assert dataset.class_names == tuple(str(digit) for digit in range(10))
    assert dataset.x_test.shape == (100, 28, 28, 1) and np.bincount(dataset.y_test).tolist() == [10] * 10
    assert len(dataset.y_val) == 40 and dataset.x_train.shape[1:] == (28, 28, 1)
    again = prepare_dataset(config)  # from the cache, and the same split
    np.testing.assert_array_equal(again.x_test, dataset.x_test)


def test_tiny_imagenet_archive_at_64_pixels_gets_readable_class_names(shared_data, tmp_path):
    config = DataConfig(
        source=str(shared_data / "tiny-imagenet-subset.tgz"), source_subdir="tiny-imagenet-200/train",
        source_classes=("n02165456", "n07753592"), preprocessing=Preprocessing(height=64, width=64),
        limit_per_class=10, cache_dir=str(tmp_path),
    )
    dataset = prepare_dataset(config)
    assert dataset.class_names == ("ladybug", "banana")
    assert dataset.x_test.shape == (4, 64, 64, 3) and dataset.x_train.std() > 20


def test_a_folder_tree_with_its_own_test_split(tmp_path, photo_paths):
    for split, start in (("train", 0), ("test", 40)):
        for index, name in enumerate(("cats", "ships")):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for offset in range(4):
                Image.open(photo_paths[start + 10 * index + offset]).save(folder / f"{offset}.png")
    config = DataConfig(source=str(tmp_path / "data"), source_subdir="train", source_test_subdir="test",
                        val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    dataset = prepare_dataset(config)
    assert dataset.class_names == ("cats", "ships")
    assert len(dataset.y_test) == 8 and len(dataset.y_val) == 2 and len(dataset.y_train) == 6
    expected, _, _ = load_image_folder(tmp_path / "data", "test", config.preprocessing)
    np.testing.assert_array_equal(dataset.x_test, expected)


def test_a_changed_folder_is_read_again_not_taken_from_the_cache(tmp_path, photo_paths):
    for index, name in enumerate(("a", "b")):
        (tmp_path / "data" / name).mkdir(parents=True)
        for offset in range(5):
            Image.open(photo_paths[10 * index + offset]).save(tmp_path / "data" / name / f"{offset}.png")
    config = DataConfig(source=str(tmp_path / "data"), test_fraction=0.2, val_fraction=0.0, balance=False, cache_dir=str(tmp_path / "cache"))
    before = prepare_dataset(config)
    Image.open(photo_paths[99]).save(tmp_path / "data" / "a" / "new.png")
    after = prepare_dataset(config)
    assert len(after.y_train) + len(after.y_test) == len(before.y_train) + len(before.y_test) + 1


def test_classes_tsv_names_are_made_unique_and_safe(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "classes.tsv").write_text("n1\tgoldfish, Carassius auratus\nn2\tgoldfish\nn3\tsea lion\n")
    assert readable_names(tmp_path, "train", ("n1", "n2", "n3", "n4")) == ("goldfish", "goldfish_n2", "sea_lion", "n4")


def test_unknown_classes_are_reported(shared_data, tmp_path):
    config = DataConfig(source=str(shared_data / "mnist"), source_classes=("3", "x"), preprocessing=GRAY_28, cache_dir=str(tmp_path))
    with pytest.raises(DataUnavailable, match="x"):
        prepare_dataset(config)
