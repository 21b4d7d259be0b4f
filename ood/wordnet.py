"""Which ImageNet synsets count as "ours": the WordNet rule that keeps our classes out of the OOD sets.

A Tiny ImageNet or ImageNet class is in-distribution-like when its wnid is one of our 16 extra
classes, or when it lies under a synset that one of our 13 classes stands for (any dog breed is
under n02084071 "dog"). Everything else is out-of-distribution.

    is_ours("n02099601")   # golden retriever -> True
    is_ours("n04356056")   # sunglasses       -> False
"""

from functools import lru_cache
from pathlib import Path

from classifier.data import SHARED_DATA
from classifier.labels import EXTRA_CLASS_WNIDS

WORDNET_DIR = SHARED_DATA / "wordnet"

# The synsets CIFAR-10's classes stand for. Broader than the class names on purpose: a lion or a
# bus at 32x32 is what a person would call "cat" or "truck", so it is no fair OOD example.
CIFAR10_LIKE_ANCESTORS = {
    "n02686568": "aircraft (airplane)",
    "n03791235": "motor vehicle (automobile, truck)",
    "n02924116": "bus (not under motor vehicle in WordNet)",
    "n04530566": "vessel, watercraft (ship)",
    "n01503061": "bird",
    "n02120997": "feline (cat)",
    "n02084071": "dog",
    "n02430045": "deer",
    "n01639765": "frog, toad",
    "n02374451": "horse",
}

# The CIFAR-100 superclasses we rebuilt, by the concepts of their CIFAR-100 member classes:
# a grasshopper or a cauliflower is an insect or a vegetable, so not OOD for us either.
EXTRA_LIKE_ANCESTORS = {
    "n02159955": "insect (insects)",
    "n07705931": "edible fruit (fruit_and_vegetables)",
    "n07707451": "vegetable (fruit_and_vegetables)",
    "n02402010": "bovine: cattle, bison (large_omnivores_and_herbivores)",
    "n02437136": "camel (large_omnivores_and_herbivores)",
    "n02503517": "elephant (large_omnivores_and_herbivores)",
    "n02481823": "chimpanzee (large_omnivores_and_herbivores)",
    "n01877134": "kangaroo (large_omnivores_and_herbivores)",
}

OURS_ANCESTORS = tuple(CIFAR10_LIKE_ANCESTORS) + tuple(EXTRA_LIKE_ANCESTORS)
EXTRA_WNIDS = frozenset(wnid for wnids in EXTRA_CLASS_WNIDS.values() for wnid in wnids)


@lru_cache(maxsize=4)
def _wordnet(directory):
    # The fallback's label map reads the same WordNet files; one reader serves both.
    from fallback.label_map import read_wordnet

    return read_wordnet(directory)


def synset_names(directory=WORDNET_DIR):
    """{wnid: "name, synonym, ..."} from node_names.txt."""
    return _wordnet(Path(directory)).names


def ancestors(wnid, directory=WORDNET_DIR):
    """Every synset above `wnid` (WordNet is a DAG: a synset may have several parents)."""
    return _wordnet(Path(directory)).ancestors(wnid)


def is_ours(wnid, ancestor_wnids=OURS_ANCESTORS, directory=WORDNET_DIR):
    """True for our 16 extra wnids and for anything at or under one of `ancestor_wnids`."""
    if wnid in EXTRA_WNIDS or wnid in ancestor_wnids:
        return True
    return not ancestors(wnid, directory).isdisjoint(ancestor_wnids)
