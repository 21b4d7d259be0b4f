"""The WordNet rule that keeps our classes out of the OOD sets, and the OOD set loaders."""

import numpy as np

from classifier.labels import EXTRA_CLASS_WNIDS
from ood.datasets import far_ood_images, imagenet_photo_paths, near_ood_images, near_ood_wnids, photo_wnid
from ood.wordnet import is_ours, synset_names

OURS = {
    "n02099601": "golden retriever", "n02113799": "standard poodle", "n02123394": "Persian cat",
    "n02129165": "lion", "n01855672": "goose", "n04285008": "sports car", "n03796401": "moving van",
    "n04146614": "school bus", "n03662601": "lifeboat", "n02226429": "grasshopper", "n07715103": "cauliflower",
}
NOT_OURS = {
    "n04356056": "sunglasses", "n04398044": "teapot", "n02795169": "barrel", "n01443537": "goldfish",
    "n02132136": "brown bear", "n09246464": "cliff", "n07873807": "pizza",
}


def test_names_of_the_wnids_used_here():
    names = synset_names()
    for wnid, name in {**OURS, **NOT_OURS}.items():
        assert name.lower() in names[wnid].lower()


def test_cifar_like_and_extra_classes_are_ours_objects_are_not():
    assert [wnid for wnid in OURS if not is_ours(wnid)] == []
    assert [wnid for wnid in NOT_OURS if is_ours(wnid)] == []


def test_near_ood_classes_exclude_ours():
    wnids = near_ood_wnids()
    extra = {wnid for wnids in EXTRA_CLASS_WNIDS.values() for wnid in wnids}
    assert not extra & set(wnids)
    assert not set(OURS) & set(wnids)
    assert {"n04356056", "n04398044", "n01443537"} <= set(wnids)
    assert 100 <= len(wnids) < 200


def test_near_ood_images_are_model_sized_uint8_from_kept_classes():
    x, wnids = near_ood_images(limit=120, return_labels=True)
    assert x.shape == (120, 32, 32, 3) and x.dtype == np.uint8
    assert set(wnids) <= set(near_ood_wnids()) and len(set(wnids)) == 3


def test_far_ood_images_are_grey_digits_as_rgb():
    x = far_ood_images(limit=20)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8
    assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2])


def test_photo_kinds_split_all_photos():
    ours, not_ours, everything = (imagenet_photo_paths(kind) for kind in ("ours", "non_ours", "all"))
    assert len(ours) + len(not_ours) == len(everything) == 500
    assert "n02099712" in {photo_wnid(p) for p in ours}  # Labrador retriever
    assert "n04355933" in {photo_wnid(p) for p in not_ours}  # sunglass
