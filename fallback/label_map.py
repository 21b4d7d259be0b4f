"""The saved label map, as the server reads it: which of our classes each ImageNet-1k class counts
for. classifier.label_map builds and saves it from WordNet (the build side).

    label_map = load_label_map("assets/fallback")     # {imagenet index: our class index, or None}
    matrix = mapping_matrix(label_map)                 # ImageNet probabilities @ matrix = our masses
"""

import json
from pathlib import Path

from bundle.labels import CLASS_NAMES

LABEL_MAP_TEXT = "label_map.txt"
LABEL_MAP_JSON = "label_map.json"


class LabelMapError(ValueError):
    """WordNet files that do not fit our classes, or a saved label map that does not load."""


def load_label_map(path, class_names=CLASS_NAMES):
    """A saved label map (its folder, label_map.json or label_map.txt) -> {ImageNet index: class or None}.

    label_map.txt carries no ImageNet order, so it is read against the label_map.json beside it.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        document = json.loads((folder / LABEL_MAP_JSON).read_text())
    except (OSError, ValueError) as error:
        raise LabelMapError(f"No readable {LABEL_MAP_JSON} in {folder}: {error}") from error
    if tuple(document.get("class_names", ())) != tuple(class_names):
        raise LabelMapError(f"{folder / LABEL_MAP_JSON} was made for classes {document.get('class_names')}, not {list(class_names)}.")
    wnids = document["imagenet_wnids"]
    if path.name == LABEL_MAP_TEXT:
        by_class = parse_label_map_text(path.read_text())
        position = {wnid: index for index, wnid in enumerate(wnids)}
        label_map = dict.fromkeys(range(len(wnids)))
        for name, members in by_class.items():
            if name not in class_names:
                raise LabelMapError(f"{path} names a class {name!r} that is not ours.")
            for wnid in members:
                label_map[position[wnid]] = class_names.index(name)
        return label_map
    return {index: target for index, target in enumerate(document["imagenet_to_class"])}


def parse_label_map_text(text):
    """label_map.txt -> {class name: [wnids]}."""
    by_class = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, *wnids = line.split()
            by_class[name] = wnids
    return by_class


def mapping_matrix(label_map, n_classes=len(CLASS_NAMES), n_imagenet=1000):
    """(1000, n_classes) 0/1 matrix: ImageNet probabilities @ matrix = our-class masses."""
    import numpy as np

    matrix = np.zeros((n_imagenet, n_classes), dtype=np.float32)
    for index, target in label_map.items():
        if target is not None:
            matrix[index, target] = 1.0
    return matrix
