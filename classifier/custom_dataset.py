"""Any labelled picture collection as a dataset, instead of our 13 classes: an image-folder tree
(`<class>/<image>`, images may sit deeper), a .tgz/.tar of one, or a folder of MNIST idx files.

    DataConfig(source="data/mnist", preprocessing=Preprocessing(28, 28, 1))
    DataConfig(source="data/tiny-imagenet-subset.tgz", source_subdir="tiny-imagenet-200/train",
               preprocessing=Preprocessing(64, 64, 3))

How many pictures a class has decides --preset auto (choose_preset): transfer learning below ~500.

The class list comes from the data: the class folders, sorted (MNIST: the digits "0".."9"). A
`classes.tsv` (folder name, tab, readable name; Tiny ImageNet ships one) in the class folders' parent
or grandparent gives them readable names. The test split is `source_test_subdir` when the tree has
one, else a stratified, seeded share (`test_fraction`) carved off before anything is trained.
"""

import re
from pathlib import Path

import numpy as np

from classifier.readers import (
    DataUnavailable, is_mnist_folder, load_image_folder, load_mnist, read_classes_tsv, select_classes, stratified_split,
    walk_files,
)
from classifier.transfer import TFLITE_FILE_NAME


def load_source(config):
    """The raw arrays of `config.source` (a classifier.dataset.DataConfig), before val split and balancing."""
    source, preprocessing, limit = Path(config.source), config.preprocessing, config.limit_per_class
    classes = tuple(config.source_classes) or None
    x_test = y_test = None
    if is_mnist_folder(source):
        x, y = load_mnist(source, preprocessing)
        names = tuple(str(digit) for digit in range(10))
        if classes is not None:
            x, y, names = select_classes(x, y, names, classes, error=DataUnavailable)
        if limit is not None:
            keep = np.sort(np.concatenate([np.flatnonzero(y == label)[:limit] for label in range(len(names))]))
            x, y = x[keep], y[keep]
    else:
        x, y, names = load_image_folder(source, config.source_subdir, preprocessing, classes, limit)
        if config.source_test_subdir:
            x_test, y_test, _ = load_image_folder(source, config.source_test_subdir, preprocessing, names, limit)
        names = readable_names(source, config.source_subdir, names)
    if x_test is None:
        # Its own seed, so that the validation split drawn later never changes the test split.
        train, test = stratified_split(y, config.test_fraction, np.random.default_rng(config.seed + 1))
        x, y, x_test, y_test = x[train], y[train], x[test], y[test]
    return {"x_train": x, "y_train": y, "x_test": x_test, "y_test": y_test, "class_names": np.array(names)}


def pictures_per_class(source, subdir="", classes=()):
    """{class: number of pictures} in `source`, counted without decoding any picture."""
    source = Path(source)
    if is_mnist_folder(source):
        _, y = load_mnist(source)
        counts = {str(digit): int(n) for digit, n in enumerate(np.bincount(y, minlength=10))}
    else:
        counts = {}
        for relative, _ in walk_files(source, subdir):
            if "/" in relative:
                counts[relative.split("/")[0]] = counts.get(relative.split("/")[0], 0) + 1
    return {name: count for name, count in counts.items() if not classes or name in classes}


# Below this many pictures per class, --preset auto learns on top of a pretrained network: from
# scratch, our CNNs stay near chance on 20 pictures per class (bench.few_pictures).
TRANSFER_BELOW_PER_CLASS = 500


def choose_preset(source, subdir="", classes=(), limit_per_class=None, data_dir=None):
    """--preset auto: (preset, why in one sentence). Transfer below TRANSFER_BELOW_PER_CLASS
    pictures per class (the median class) when the bundled MobileNetV2 is in the data folder."""
    counts = pictures_per_class(source, subdir, classes)
    typical = int(np.median(list(counts.values()))) if counts else 0
    if limit_per_class is not None:
        typical = min(typical, limit_per_class)
    if typical >= TRANSFER_BELOW_PER_CLASS:
        return "fastnet_small", f"{typical} pictures per class (median), enough to train from scratch"
    few = f"{typical} pictures per class (median), fewer than {TRANSFER_BELOW_PER_CLASS}"
    tflite = tflite_path(data_dir)
    if tflite is None:
        where = Path(data_dir) / "imagenet-models" if data_dir else "a data folder's imagenet-models/ (--data-dir)"
        return "fastnet_small", (f"{few}, but transfer learning needs the bundled {TFLITE_FILE_NAME} in {where}, "
                                 "which is not there: training fastnet_small from scratch")
    return "mobilenet_v2_tflite", f"{few}: transfer learning on the bundled MobileNetV2's features ({tflite})"


def tflite_path(data_dir):
    """The bundled MobileNetV2 TFLite in a data folder, or None."""
    path = Path(data_dir or "", "imagenet-models", TFLITE_FILE_NAME)
    return str(path) if data_dir and path.is_file() else None


def readable_names(source, subdir, folders):
    """Class folder names, or the readable names a classes.tsv gives them (made unique, no spaces)."""
    return names_from_classes_tsv(_classes_tsv(source, subdir), folders)


def names_from_classes_tsv(table, folders):
    """Each folder's first readable name in `table` (read_classes_tsv), unique, with no spaces."""
    names = []
    for folder in folders:
        name = re.sub(r"[^\w-]+", "_", table.get(folder, folder).split(",")[0].strip()).strip("_") or folder
        names.append(name if name not in names else f"{name}_{folder}")
    return tuple(names)


def _classes_tsv(source, subdir):
    # In the class folders' parent, or in its parent (Tiny ImageNet: beside train/).
    parts = [part for part in subdir.strip("/").split("/") if part]
    for depth in (len(parts), len(parts) - 1):
        if depth < 0:
            continue
        try:
            table = read_classes_tsv(source, "/".join(parts[:depth]))
        except DataUnavailable:
            continue
        if table:
            return table
    return {}
