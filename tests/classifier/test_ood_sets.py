"""The OOD set loaders: pictures of classes that are not ours, made like the model's input."""

import numpy as np
import pytest

from bundle.labels import EXTRA_CLASS_WNIDS
from classifier.ood_sets import far_ood_images, imagenet_photo_paths, near_ood_images, near_ood_wnids, photo_wnid

OURS = ("n02099601", "n02113799", "n02123394", "n02129165", "n01855672", "n04285008", "n03796401",
        "n04146614", "n03662601", "n02226429", "n07715103")  # as tests/classifier/test_wordnet.py


@pytest.fixture(scope="module")
def data_dir(data_path):
    for needed in ("tiny-imagenet-subset.tgz", "wordnet", "mnist", "imagenet-samples"):
        data_path(needed)
    return data_path()


def test_near_ood_classes_exclude_ours(data_dir):
    wnids = near_ood_wnids(data_dir)
    extra = {wnid for wnids in EXTRA_CLASS_WNIDS.values() for wnid in wnids}
    assert not extra & set(wnids)
    assert not set(OURS) & set(wnids)
    assert {"n04356056", "n04398044", "n01443537"} <= set(wnids)
    assert 100 <= len(wnids) < 200


def test_near_ood_images_are_model_sized_uint8_from_kept_classes(data_dir):
    x, wnids = near_ood_images(data_dir, limit=120, return_labels=True)
    assert x.shape == (120, 32, 32, 3) and x.dtype == np.uint8
    assert set(wnids) <= set(near_ood_wnids(data_dir)) and len(set(wnids)) == 3


def test_far_ood_images_are_grey_digits_as_rgb(data_dir):
    x = far_ood_images(data_dir / "mnist", limit=20)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8
    assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2])


def test_photo_kinds_split_all_photos(data_dir):
    ours, not_ours, everything = (imagenet_photo_paths(data_dir, kind) for kind in ("ours", "non_ours", "all"))
    assert len(ours) + len(not_ours) == len(everything) == 500
    assert "n02099712" in {photo_wnid(p) for p in ours}  # Labrador retriever
    assert "n04355933" in {photo_wnid(p) for p in not_ours}  # sunglass
    with pytest.raises(ValueError, match="kind must be one of"):
        imagenet_photo_paths(data_dir, "some")
