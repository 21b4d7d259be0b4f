"""The ImageNet-1k -> our classes label map (classifier.label_map), built from the real WordNet files."""

import json

import pytest

from bundle.labels import CLASS_NAMES, EXTRA_CLASS_WNIDS
from classifier.label_map import OVERRIDES, build_label_map, save_label_map
from fallback.label_map import LABEL_MAP_TEXT, LabelMapError, load_label_map, mapping_matrix, parse_label_map_text
from classifier.wordnet import WordNetError, read_wordnet


@pytest.fixture(scope="module")
def wordnet_dir(data_path):
    return data_path("wordnet")


@pytest.fixture(scope="module")
def wordnet(wordnet_dir):
    return read_wordnet(wordnet_dir)


@pytest.fixture(scope="module")
def label_map(wordnet_dir):
    return build_label_map(wordnet_dir)


def mapped(label_map, wordnet, wnid):
    target = label_map[wordnet.imagenet_wnids.index(wnid)]
    return None if target is None else CLASS_NAMES[target]


def test_every_imagenet_class_is_mapped_or_none(label_map):
    assert sorted(label_map) == list(range(1000))
    assert all(target is None or 0 <= target < len(CLASS_NAMES) for target in label_map.values())


def test_all_118_dog_breeds_are_dogs(label_map, wordnet):
    # ImageNet-1k's dog breeds are the contiguous block Chihuahua (151) .. Mexican hairless (268).
    assert wordnet.imagenet_names[151].startswith("Chihuahua") and wordnet.imagenet_names[268].startswith("Mexican hairless")
    assert all(CLASS_NAMES[label_map[index]] == "dog" for index in range(151, 269))
    dogs = [index for index, target in label_map.items() if target == CLASS_NAMES.index("dog")]
    assert len(dogs) == 118 + 1  # plus the dingo (an override)


@pytest.mark.parametrize("wnid, expected", [
    ("n02123045", "cat"),  # tabby
    ("n02124075", "cat"),  # Egyptian cat
    ("n02129604", None),  # tiger: big cats are not CIFAR cats
    ("n02690373", "airplane"),  # airliner
    ("n04285008", "automobile"),  # sports car
    ("n03095699", "ship"),  # container ship
    ("n02951358", "ship"),  # canoe: the whole watercraft subtree
    ("n04467665", "truck"),  # trailer truck
    ("n01443537", None),  # goldfish
    ("n01530575", "bird"),  # brambling
    ("n01641577", "frog"),  # bullfrog
    ("n02389026", "horse"),  # sorrel
    ("n02391049", None),  # zebra
    ("n07742313", "fruit_and_vegetables"),  # Granny Smith
    ("n07714990", "fruit_and_vegetables"),  # broccoli
    ("n12998815", "fruit_and_vegetables"),  # agaric: a mushroom
    ("n02206856", "insects"),  # bee
    ("n02279972", "insects"),  # monarch
    ("n01773797", None),  # garden spider: not an insect
    ("n02403003", "large_omnivores_and_herbivores"),  # ox
    ("n02480855", "large_omnivores_and_herbivores"),  # gorilla: a great ape
    ("n02504013", "large_omnivores_and_herbivores"),  # Indian elephant
    ("n01877812", "large_omnivores_and_herbivores"),  # wallaby: a kangaroo
    ("n02398521", None),  # hippopotamus
    ("n02114367", None),  # timber wolf
])
def test_hierarchy_decisions(label_map, wordnet, wnid, expected):
    assert mapped(label_map, wordnet, wnid) == expected


@pytest.mark.parametrize("wnid, expected", [
    ("n04552348", "airplane"),  # warplane: not under airplane in WordNet
    ("n03770679", "automobile"),  # minivan: under both car and truck
    ("n03930630", None),  # pickup: neither, per CIFAR-10
    ("n02701002", "truck"),  # ambulance: a car in WordNet
    ("n02115641", "dog"),  # dingo
    ("n02422699", "deer"),  # impala
    ("n07711569", None),  # mashed potato: under vegetable in WordNet
    ("n02410509", "large_omnivores_and_herbivores"),  # bison
    ("n02437616", "large_omnivores_and_herbivores"),  # llama
    ("n01871265", "large_omnivores_and_herbivores"),  # tusker
])
def test_overrides(label_map, wordnet, wnid, expected):
    assert mapped(label_map, wordnet, wnid) == expected


def test_overrides_name_imagenet_classes_and_our_classes(wordnet):
    for wnid, (target, why) in OVERRIDES.items():
        assert wnid in wordnet.imagenet_wnids, wnid
        assert target is None or target in CLASS_NAMES
        assert why


def test_the_cnns_training_synsets_map_to_their_own_class(label_map, wordnet):
    # The fallback must agree with what the CNN was taught each extra class is.
    for name, wnids in EXTRA_CLASS_WNIDS.items():
        for wnid in wnids:
            assert mapped(label_map, wordnet, wnid) == name, wnid


def test_a_class_under_two_of_ours_must_be_settled_by_an_override(monkeypatch, wordnet_dir):
    monkeypatch.delitem(OVERRIDES, "n03770679")  # minivan: under car and under truck
    with pytest.raises(LabelMapError, match="minivan"):
        build_label_map(wordnet_dir)


def test_save_and_load_round_trip(tmp_path, label_map, wordnet, wordnet_dir):
    save_label_map(tmp_path, label_map, wordnet_dir)
    assert load_label_map(tmp_path) == label_map
    assert load_label_map(tmp_path / LABEL_MAP_TEXT) == label_map  # the readable file says the same
    by_class = parse_label_map_text((tmp_path / LABEL_MAP_TEXT).read_text())
    assert list(by_class) == list(CLASS_NAMES)
    assert "n02123045" in by_class["cat"] and "n01443537" not in sum(by_class.values(), [])
    document = json.loads((tmp_path / "label_map.json").read_text())
    assert document["imagenet_wnids"] == list(wordnet.imagenet_wnids)


def test_a_saved_map_is_only_read_for_the_classes_it_was_made_for(tmp_path, label_map, wordnet_dir):
    save_label_map(tmp_path, label_map, wordnet_dir)
    with pytest.raises(LabelMapError, match="was made for classes"):
        load_label_map(tmp_path, CLASS_NAMES[:10])


def test_the_matrix_sums_imagenet_probabilities_into_our_classes(label_map):
    matrix = mapping_matrix(label_map)
    assert matrix.shape == (1000, len(CLASS_NAMES))
    # Each ImageNet class counts for one of ours or for none: the masses never exceed 1.
    assert set(matrix.sum(axis=1)) == {0.0, 1.0}
    assert int(matrix.sum()) == sum(target is not None for target in label_map.values())


def test_clear_errors_for_missing_files(tmp_path):
    with pytest.raises(WordNetError, match="WordNet"):
        build_label_map(tmp_path)
    with pytest.raises(LabelMapError, match="label_map.json"):
        load_label_map(tmp_path)
