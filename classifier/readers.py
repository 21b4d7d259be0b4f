"""Readers of labelled pictures in the formats people have them: image-folder trees (or .tgz
archives of them), Tiny ImageNet's val/ folder, CIFAR python pickles, MNIST idx files and
keras.datasets. Each returns uint8 arrays made by bundle.images, so that every picture,
from a dataset or from a user, goes the same way.

    x, y, class_names = load_image_folder("pets/", preprocessing=Preprocessing(64, 64))
    x, y, class_names = load_cifar_pickle("cifar-100-python", "train", classes=("insects",), label_mode="coarse")

No reader has a default location: the caller says where the data is.
"""

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.images import Preprocessing, to_uint8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class DataUnavailable(RuntimeError):
    """A data source that cannot be reached (offline download, missing file)."""


# ---------------------------------------------------------------- image folders and archives


def load_image_folder(source, subdir="", preprocessing=Preprocessing(), classes=None, limit_per_class=None):
    """Read `<source>/<subdir>/<class>/**/<image>` from a folder or a .tgz/.tar of one.

    The class is the first folder below `subdir`; images may sit deeper (Tiny ImageNet keeps them
    in `<wnid>/images/`). Returns (x uint8, y int64, class_names sorted or as given).
    """
    by_class = {}
    for relative, read in walk_files(source, subdir):
        parts = relative.split("/")
        if len(parts) < 2 or (classes is not None and parts[0] not in classes):
            continue
        images = by_class.setdefault(parts[0], [])
        if limit_per_class is None or len(images) < limit_per_class:
            images.append((relative, read()))
    if not by_class:
        raise DataUnavailable(f"No images found under {source}/{subdir}.")
    class_names = tuple(classes) if classes is not None else tuple(sorted(by_class))
    missing = [name for name in class_names if name not in by_class]
    if missing:
        raise DataUnavailable(f"No images for classes {missing} under {source}/{subdir}.")
    x, y = [], []
    for index, name in enumerate(class_names):
        for _, data in sorted(by_class[name]):
            x.append(to_uint8(data, preprocessing))
            y.append(index)
    return np.stack(x), np.array(y, dtype=np.int64), class_names


def load_tiny_imagenet_val(archive, wnids, preprocessing=Preprocessing()):
    """Tiny ImageNet's val/ images of the given wnids, labelled by their index in `wnids`."""
    annotations, images = {}, {}
    for relative, read in walk_files(archive, "tiny-imagenet-200/val", suffixes=IMAGE_SUFFIXES + (".txt",)):
        if relative == "val_annotations.txt":
            for line in read().decode().splitlines():
                name, wnid = line.split("\t")[:2]
                annotations[name] = wnid
        elif relative.startswith("images/"):
            images[relative.split("/")[-1]] = read()
    wanted = {wnid: index for index, wnid in enumerate(wnids)}
    x, y = [], []
    for name in sorted(images, key=lambda n: int(n.split("_")[1].split(".")[0])):
        if annotations.get(name) in wanted:
            x.append(to_uint8(images[name], preprocessing))
            y.append(wanted[annotations[name]])
    return _stack(x, preprocessing), np.array(y, dtype=np.int64)


def tiny_imagenet_wnids(archive):
    """The 200 wnids listed in a Tiny ImageNet archive's classes.tsv, in its order."""
    table = read_classes_tsv(archive, "tiny-imagenet-200")
    if not table:
        raise DataUnavailable(f"{archive} has no tiny-imagenet-200/classes.tsv.")
    return tuple(table)


def read_classes_tsv(source, folder):
    """{class folder name: readable names} from `<folder>/classes.tsv` in a folder or archive, in
    the file's order; {} when there is none."""
    for relative, read in walk_files(source, folder, suffixes=(".tsv",)):
        if relative == "classes.tsv":
            lines = read().decode("utf-8", errors="replace").splitlines()
            return dict(line.split("\t", 1) for line in lines if "\t" in line)
    return {}


def walk_files(source, subdir="", suffixes=IMAGE_SUFFIXES):
    """Yield (path relative to subdir, reader) for the files with `suffixes` in a folder or tar archive."""
    prefix = subdir.strip("/") + "/" if subdir.strip("/") else ""
    source = Path(source)
    if not source.exists():
        raise DataUnavailable(f"{source} does not exist.")
    if source.is_dir():
        root = source / prefix
        for path in sorted(root.rglob("*")):
            # Dot files are temporary or hidden (a crash can leave a half-written ".x.tmp.png").
            if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
                yield path.relative_to(root).as_posix(), path.read_bytes
        return
    with tarfile.open(source) as archive:
        for member in archive:
            name = member.name.lstrip("./")
            if member.isfile() and name.startswith(prefix) and name.lower().endswith(suffixes):
                data = archive.extractfile(member).read()
                yield name[len(prefix):], (lambda data=data: data)


# ---------------------------------------------------------------- CIFAR pickles, MNIST, keras.datasets


def load_cifar_pickle(directory, split="train", classes=None, label_mode="fine"):
    """Read `cifar-10-batches-py` or `cifar-100-python` (the python pickle format).

    `classes` selects classes by name (fine or coarse names, per `label_mode`, for CIFAR-100);
    labels are re-numbered in the order given. Returns (x uint8 NHWC, y int64, class_names).
    """
    directory = Path(directory)
    if (directory / "batches.meta").exists():  # CIFAR-10
        names = _unpickle(directory / "batches.meta")["label_names"]
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = "labels"
    elif (directory / "meta").exists():  # CIFAR-100
        meta = _unpickle(directory / "meta")
        names = meta["coarse_label_names" if label_mode == "coarse" else "fine_label_names"]
        files = [split]
        label_key = "coarse_labels" if label_mode == "coarse" else "fine_labels"
    else:
        raise DataUnavailable(f"{directory} is not a CIFAR python-pickle folder.")
    batches = [_unpickle(directory / name) for name in files]
    data = np.concatenate([batch["data"] for batch in batches])
    labels = np.concatenate([np.asarray(batch[label_key]) for batch in batches])
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8)
    names = tuple(n.decode() if isinstance(n, bytes) else n for n in names)
    if classes is None:
        return x, labels.astype(np.int64), names
    return select_classes(x, labels.astype(np.int64), names, classes)


def select_classes(x, y, names, classes, error=ValueError):
    """Keep the pictures of `classes` (names), labelled by their position in it; an unknown class
    raises `error`."""
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise error(f"Unknown classes {unknown}; this data has {list(names)}.")
    old_to_new = {names.index(c): new for new, c in enumerate(classes)}
    keep = np.isin(y, list(old_to_new))
    return x[keep], np.array([old_to_new[v] for v in y[keep]], dtype=np.int64), tuple(classes)


def _unpickle(path):
    with open(path, "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def is_mnist_folder(path):
    return Path(path).is_dir() and all((Path(path) / name).exists() for name in MNIST_FILES)


def load_mnist(source, preprocessing=None):
    """MNIST digits from a folder of idx files or an `mnist.npz` (as keras.datasets saves it; its
    test split); resized (and made RGB) to `preprocessing` when given."""
    source = Path(source)
    if source.suffix == ".npz":
        with np.load(source) as stored:
            images, labels = stored["x_test"], stored["y_test"].astype(np.int64)
    else:
        if not is_mnist_folder(source):
            raise DataUnavailable(f"{source} holds no MNIST idx files ({', '.join(MNIST_FILES)}).")
        with gzip.open(source / MNIST_FILES[0]) as handle:
            images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(source / MNIST_FILES[1]) as handle:
            labels = np.frombuffer(handle.read(), np.uint8, offset=8).astype(np.int64)
    if preprocessing is None:
        return images[..., None], labels
    return np.stack([to_uint8(Image.fromarray(image), preprocessing) for image in images]), labels


def load_keras_dataset(name="cifar10", label_mode="fine"):
    """keras.datasets for users who are online; offline it fails at once with a plain message."""
    import keras

    loaders = {"cifar10": keras.datasets.cifar10, "cifar100": keras.datasets.cifar100, "mnist": keras.datasets.mnist}
    try:
        if name == "cifar100":
            return loaders[name].load_data(label_mode=label_mode)
        return loaders[name].load_data()
    except Exception as error:  # urllib, SSL, socket errors: all mean "no download"
        raise DataUnavailable(
            f"keras.datasets.{name} must be downloaded and this machine cannot reach the download server "
            f"({type(error).__name__}). Give the data as local files instead."
        ) from error


def even_odd_split(names):
    """(tune, bench): the names at even positions (0, 2, 4, ...) of the sorted list, and those at
    odd positions. The one fixed split of a labelled set: of imagenet-samples' photos (by file
    name) what tunes thresholds or teaches the app comes from the first half, and what measures it
    from the second; of Tiny ImageNet's wnids, only the first half may be trained on as outliers."""
    ordered = sorted(names)
    return ordered[0::2], ordered[1::2]


def stratified_split(labels, fraction, rng):
    """(train indices, held-out indices), sorted: `fraction` of each class held out, and at least
    one picture of every class of three or more (a few pictures per class still give every split)."""
    train, held_out = [], []
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(index) * fraction))
        if fraction > 0 and len(index) >= 3:
            cut = max(cut, 1)
        held_out.append(index[:cut])
        train.append(index[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held_out))


def _stack(images, preprocessing):
    shape = (0, preprocessing.height, preprocessing.width, preprocessing.channels)
    return np.stack(images) if images else np.zeros(shape, np.uint8)
