"""The WordNet rule that keeps our classes out of the OOD sets (classifier.wordnet)."""

import pytest

from classifier.wordnet import WordNetError, is_ours, read_wordnet

OURS = {
    "n02099601": "golden retriever", "n02113799": "standard poodle", "n02123394": "Persian cat",
    "n02129165": "lion", "n01855672": "goose", "n04285008": "sports car", "n03796401": "moving van",
    "n04146614": "school bus", "n03662601": "lifeboat", "n02226429": "grasshopper", "n07715103": "cauliflower",
}
NOT_OURS = {
    "n04356056": "sunglasses", "n04398044": "teapot", "n02795169": "barrel", "n01443537": "goldfish",
    "n02132136": "brown bear", "n09246464": "cliff", "n07873807": "pizza",
}


@pytest.fixture(scope="module")
def wordnet_dir(data_path):
    return data_path("wordnet")


def test_names_of_the_wnids_used_here(wordnet_dir):
    names = read_wordnet(wordnet_dir).names
    for wnid, name in {**OURS, **NOT_OURS}.items():
        assert name.lower() in names[wnid].lower()


def test_cifar_like_and_extra_classes_are_ours_objects_are_not(wordnet_dir):
    assert [wnid for wnid in OURS if not is_ours(wnid, wordnet_dir)] == []
    assert [wnid for wnid in NOT_OURS if is_ours(wnid, wordnet_dir)] == []


def test_the_hierarchy_is_a_dag_read_in_imagenet_order(wordnet_dir):
    wordnet = read_wordnet(wordnet_dir)
    assert len(wordnet.imagenet_wnids) == len(wordnet.imagenet_names) == 1000
    assert wordnet.imagenet_wnids[1] == "n01443537" and wordnet.imagenet_names[1].startswith("goldfish")
    assert "n02084071" in wordnet.ancestors("n02099601")  # golden retriever: a dog
    assert "n02084071" not in wordnet.ancestors("n02129165")  # lion: no dog


def test_clear_error_for_missing_files(tmp_path):
    with pytest.raises(WordNetError, match="Cannot read the WordNet files"):
        read_wordnet(tmp_path)
