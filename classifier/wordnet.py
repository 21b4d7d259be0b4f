"""WordNet for ImageNet: the synset hierarchy, and which synsets count as "ours".

    wordnet = read_wordnet(data_dir / "wordnet")       # parents, names, the 1000 ImageNet-1k wnids
    is_ours("n02099601", data_dir / "wordnet")         # golden retriever -> True
    is_ours("n04356056", data_dir / "wordnet")         # sunglasses       -> False

A Tiny ImageNet or ImageNet class is in-distribution-like when its wnid is one of our 16 extra
classes, or when it lies under a synset that one of our 13 classes stands for (any dog breed is
under n02084071 "dog"). Everything else is out-of-distribution. The OOD sets, the tuning sets and
the ImageNet label map (classifier.label_map) all read the hierarchy through this one module.
"""

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bundle.labels import EXTRA_CLASS_WNIDS

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


class WordNetError(ValueError):
    """WordNet files that are missing or inconsistent."""


@dataclass(frozen=True)
class WordNet:
    parents: dict  # wnid -> set of parent wnids
    names: dict  # wnid -> "name, synonym, ..."
    imagenet_wnids: tuple  # the 1000 ImageNet-1k classes, in model output order
    imagenet_names: tuple

    def ancestors(self, wnid):
        """Every synset above `wnid` (WordNet is a DAG: a synset may have several parents)."""
        seen, stack = set(), [wnid]
        while stack:
            for parent in self.parents.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen


def read_wordnet(directory):
    """class_hierarchy.txt, node_names.txt and dataset_class_info.json in `directory` -> WordNet."""
    return _read_wordnet(Path(directory).resolve())


@lru_cache(maxsize=4)
def _read_wordnet(directory):
    try:
        parents = defaultdict(set)
        for line in (directory / "class_hierarchy.txt").read_text().splitlines():
            if line.strip():
                parent, child = line.split()
                parents[child].add(parent)
        names = {}
        for line in (directory / "node_names.txt").read_text().splitlines():
            if "\t" in line:
                wnid, name = line.split("\t", 1)
                names[wnid] = name
        classes = json.loads((directory / "dataset_class_info.json").read_text())
    except (OSError, ValueError) as error:
        raise WordNetError(f"Cannot read the WordNet files in {directory}: {error}") from error
    if [row[0] for row in classes] != list(range(1000)):
        raise WordNetError(f"{directory}/dataset_class_info.json does not list ImageNet's 1000 classes in order.")
    return WordNet(dict(parents), names, tuple(row[1] for row in classes), tuple(row[2] for row in classes))


def is_ours(wnid, wordnet_dir, ancestor_wnids=OURS_ANCESTORS):
    """True for our 16 extra wnids and for anything at or under one of `ancestor_wnids`."""
    if wnid in EXTRA_WNIDS or wnid in ancestor_wnids:
        return True
    return not read_wordnet(wordnet_dir).ancestors(wnid).isdisjoint(ancestor_wnids)
