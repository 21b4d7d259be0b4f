"""Data: image-folder trees (or .tgz archives of them), CIFAR pickles, keras.datasets, and our
13-class training set built from them.

    dataset = prepare_dataset(DataConfig())   # cached as .npy after the first call

Every picture goes through classifier.images, so training data and uploads are made alike.
"""

import gzip
import hashlib
import json
import os
import pickle
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from classifier.images import Preprocessing, jpeg_round_trip, resize, to_uint8
from classifier.labels import CIFAR10_CLASSES, EXTRA_CLASS_WNIDS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


class DataUnavailable(RuntimeError):
    """A data source that cannot be reached (offline download, missing file)."""


@dataclass(frozen=True)
class DataConfig:
    cifar10_archive: str = str(SHARED_DATA / "cifar10-jpeg.tgz")
    tiny_imagenet_archive: str = str(SHARED_DATA / "tiny-imagenet-subset.tgz")
    extra_classes: tuple = tuple(EXTRA_CLASS_WNIDS)
    # Every picture gets CIFAR-10's own JPEG quality (see Preprocessing.jpeg_quality).
    preprocessing: Preprocessing = field(default_factory=lambda: Preprocessing(jpeg_quality=75))
    val_fraction: float = 0.1
    balance: bool = True  # rotate images of small classes until each has as many as the largest
    limit_per_class: int | None = None  # small runs (tests, smoke builds)
    # Image-folder trees (<class>/<image>) added to the training split, e.g. users' corrections
    # saved by similarity.FeedbackStore. Their class folders must be among our class names.
    extra_train_folders: tuple = ()
    # Add Tiny ImageNet val/ images whose synset WordNet maps onto one of our classes (dogs, cars,
    # insects...), except the extra classes' own synsets, whose val images are our test split.
    # Without them every Tiny ImageNet picture is an extra class, and the CNN learns the look of a
    # downscaled photo as the cue for those classes, so real photos all land there.
    tiny_imagenet_val_in_train: bool = False
    # Any other labelled collection instead of our 13 classes (classifier.custom_dataset): an
    # image-folder tree, a .tgz of one, or a folder of MNIST idx files. Input size and channels
    # come from `preprocessing`, classes from the data.
    source: str | None = None
    source_subdir: str = ""  # the class folders' parent inside the tree or archive
    source_test_subdir: str = ""  # a test tree beside it, if the data has one
    source_classes: tuple = ()  # a subset of the classes, in this order (empty: all)
    test_fraction: float = 0.2  # carved off when there is no test tree
    cache_dir: str = ".cache/data"
    seed: int = 0


@dataclass
class Dataset:
    x_train: np.ndarray  # uint8, (n, height, width, channels)
    y_train: np.ndarray  # int64 class indices
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    train_augmented: np.ndarray = None  # True for rotated copies made by balancing


# ---------------------------------------------------------------- image folders and archives


def load_image_folder(source, subdir="", preprocessing=Preprocessing(), classes=None, limit_per_class=None):
    """Read `<source>/<subdir>/<class>/**/<image>` from a folder or a .tgz/.tar of one.

    The class is the first folder below `subdir`; images may sit deeper (Tiny ImageNet keeps them
    in `<wnid>/images/`). Returns (x uint8, y int64, class_names sorted or as given).
    """
    by_class = {}
    for relative, read in _walk_images(source, subdir):
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
    for relative, read in _walk_images(archive, "tiny-imagenet-200/val", suffixes=IMAGE_SUFFIXES + (".txt",)):
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
    shape = (0, preprocessing.height, preprocessing.width, preprocessing.channels)
    return (np.stack(x) if x else np.zeros(shape, np.uint8)), np.array(y, dtype=np.int64)


def tiny_imagenet_wnids(archive):
    """The 200 wnids listed in a Tiny ImageNet archive's classes.tsv, in its order."""
    table = read_classes_tsv(archive, "tiny-imagenet-200")
    if not table:
        raise DataUnavailable(f"{archive} has no tiny-imagenet-200/classes.tsv.")
    return tuple(table)


def read_classes_tsv(source, folder):
    """{class folder name: readable names} from `<folder>/classes.tsv` in a folder or archive, in
    the file's order; {} when there is none."""
    for relative, read in _walk_images(source, folder, suffixes=(".tsv",)):
        if relative == "classes.tsv":
            lines = read().decode("utf-8", errors="replace").splitlines()
            return dict(line.split("\t", 1) for line in lines if "\t" in line)
    return {}


def _walk_images(source, subdir="", suffixes=IMAGE_SUFFIXES):
    """Yield (path relative to subdir, reader) for image files in a folder or tar archive."""
    prefix = subdir.strip("/") + "/" if subdir.strip("/") else ""
    source = Path(source)
    if not source.exists():
        raise DataUnavailable(f"{source} does not exist.")
    if source.is_dir():
        root = source / prefix
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() in suffixes:
                yield path.relative_to(root).as_posix(), path.read_bytes
        return
    with tarfile.open(source) as archive:
        for member in archive:
            name = member.name.lstrip("./")
            if member.isfile() and name.startswith(prefix) and name.lower().endswith(suffixes):
                data = archive.extractfile(member).read()
                yield name[len(prefix):], (lambda data=data: data)


# ---------------------------------------------------------------- CIFAR pickles and keras.datasets


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


def load_keras_dataset(name="cifar10", label_mode="fine"):
    """keras.datasets for users who are online; offline it fails with a plain message."""
    import keras

    loaders = {"cifar10": keras.datasets.cifar10, "cifar100": keras.datasets.cifar100, "mnist": keras.datasets.mnist}
    try:
        if name == "cifar100":
            return loaders[name].load_data(label_mode=label_mode)
        return loaders[name].load_data()
    except Exception as error:  # urllib, SSL, socket errors: all mean "no download"
        raise DataUnavailable(
            f"keras.datasets.{name} must be downloaded and this machine is offline ({type(error).__name__}). "
            f"Use the local copies in {SHARED_DATA} instead."
        ) from error


def load_mnist(directory=SHARED_DATA / "mnist", preprocessing=None):
    """MNIST digits from idx files; resized (and made RGB) to `preprocessing` when given."""
    directory = Path(directory)
    with gzip.open(directory / "t10k-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(directory / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8).astype(np.int64)
    if preprocessing is None:
        return images[..., None], labels
    return np.stack([to_uint8(Image.fromarray(image), preprocessing) for image in images]), labels


# ---------------------------------------------------------------- our 13-class set


def prepare_dataset(config=DataConfig()):
    """CIFAR-10 + the extra Tiny ImageNet superclasses (or `config.source`): split, balanced, cached."""
    raw = _load_cached(config)
    rng = np.random.default_rng(config.seed)
    train_index, val_index = _stratified_split(raw["y_train"], config.val_fraction, rng)
    x_train, y_train = raw["x_train"][train_index], raw["y_train"][train_index]
    class_names = tuple(str(name) for name in raw["class_names"])
    for folder in config.extra_train_folders:
        x_extra, y_extra = _load_extra_folder(folder, class_names, config.preprocessing)
        x_train, y_train = np.concatenate([x_train, x_extra]), np.concatenate([y_train, y_extra])
    originals = len(y_train)
    if config.balance:
        x_train, y_train = balance_by_rotation(x_train, y_train, rng, jpeg_quality=config.preprocessing.jpeg_quality)
    augmented = np.arange(len(y_train)) >= originals
    order = rng.permutation(len(y_train))
    return Dataset(
        x_train=x_train[order], y_train=y_train[order],
        x_val=raw["x_train"][val_index], y_val=raw["y_train"][val_index],
        x_test=raw["x_test"], y_test=raw["y_test"],
        class_names=class_names, train_augmented=augmented[order],
    )


def _load_extra_folder(folder, class_names, preprocessing):
    """An image-folder tree whose class folders are a subset of ours (empty folders are fine)."""
    present = sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and any(p.iterdir())) if Path(folder).is_dir() else []
    unknown = [name for name in present if name not in class_names]
    if unknown:
        raise ValueError(f"{folder} has class folders {unknown} that are not among {list(class_names)}.")
    if not present:
        shape = (0, preprocessing.height, preprocessing.width, preprocessing.channels)
        return np.zeros(shape, np.uint8), np.zeros(0, np.int64)
    x, y, names = load_image_folder(folder, "", preprocessing, present)
    return x, np.array([class_names.index(names[i]) for i in y], dtype=np.int64)


def _load_cached(config):
    # Only what _load_raw reads: the split, balancing and extra folders are applied afresh each time.
    skip = ("cache_dir", "val_fraction", "balance", "seed", "extra_train_folders")
    key = {name: value for name, value in asdict(config).items() if name not in skip}
    for archive in (config.cifar10_archive, config.tiny_imagenet_archive):
        key[archive] = os.path.getsize(archive) if os.path.exists(archive) else None
    if config.source:
        from classifier.custom_dataset import source_signature

        key["source_signature"] = source_signature(config.source)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(config.cache_dir) / f"raw-{digest}.npz"
    if path.exists():
        with np.load(path) as cached:
            return {name: cached[name] for name in cached.files}
    raw = _load_raw(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, **raw)
    os.replace(temporary, path)
    return raw


def _load_raw(config):
    if config.source:
        from classifier.custom_dataset import load_source

        return load_source(config)
    p, limit = config.preprocessing, config.limit_per_class
    x_train, y_train, names = load_image_folder(config.cifar10_archive, "cifar10/train", p, CIFAR10_CLASSES, limit)
    x_test, y_test, _ = load_image_folder(config.cifar10_archive, "cifar10/test", p, CIFAR10_CLASSES, limit)
    xs_train, ys_train, xs_test, ys_test = [x_train], [y_train], [x_test], [y_test]
    for offset, superclass in enumerate(config.extra_classes, start=len(names)):
        wnids = EXTRA_CLASS_WNIDS[superclass]
        # Each synset contributes equally, so the superclass is not dominated by one of its members.
        per_wnid = None if limit is None else max(1, limit // len(wnids))
        x, _, _ = load_image_folder(config.tiny_imagenet_archive, "tiny-imagenet-200/train", p, wnids, per_wnid)
        xs_train.append(x)
        ys_train.append(np.full(len(x), offset))
        x, _ = load_tiny_imagenet_val(config.tiny_imagenet_archive, wnids, p)
        xs_test.append(x if limit is None else x[:limit])
        ys_test.append(np.full(len(xs_test[-1]), offset))
    if config.tiny_imagenet_val_in_train:
        x, y = _tiny_imagenet_val_of_our_classes(config, names + tuple(config.extra_classes))
        xs_train.append(x)
        ys_train.append(y)
    return {
        "x_train": np.concatenate(xs_train), "y_train": np.concatenate(ys_train).astype(np.int64),
        "x_test": np.concatenate(xs_test), "y_test": np.concatenate(ys_test).astype(np.int64),
        "class_names": np.array(names + tuple(config.extra_classes)),
    }


def tiny_imagenet_val_of_our_classes(class_names):
    """{wnid: class index} of the Tiny ImageNet val synsets that tiny_imagenet_val_in_train adds.

    The WordNet map of ImageNet classes onto ours lives with the fallback, which needs it too. Only
    synsets that the OOD evaluation also counts as ours are taken, so that no picture of a
    near-OOD class is ever trained on; the extra classes' own synsets are the test split.
    """
    from fallback.label_map import build_label_map, read_wordnet
    from ood.wordnet import is_ours

    imagenet_wnids = read_wordnet().imagenet_wnids
    test_wnids = {wnid for wnids in EXTRA_CLASS_WNIDS.values() for wnid in wnids}
    return {
        imagenet_wnids[index]: target for index, target in build_label_map(class_names=class_names).items()
        if target is not None and imagenet_wnids[index] not in test_wnids and is_ours(imagenet_wnids[index])
    }


def trained_tiny_imagenet_wnids(config, class_names):
    """Every Tiny ImageNet synset whose pictures this config trains on (for tuning sets to avoid)."""
    wnids = {wnid for superclass in config.extra_classes for wnid in EXTRA_CLASS_WNIDS[superclass]}
    if config.tiny_imagenet_val_in_train:
        wnids |= set(tiny_imagenet_val_of_our_classes(class_names))
    return sorted(wnids)


def _tiny_imagenet_val_of_our_classes(config, class_names):
    ours = tiny_imagenet_val_of_our_classes(class_names)
    wnids = sorted(ours)
    x, y = load_tiny_imagenet_val(config.tiny_imagenet_archive, wnids, config.preprocessing)
    if config.limit_per_class is not None:
        x, y = x[: config.limit_per_class], y[: config.limit_per_class]
    return x, np.array([ours[wnids[i]] for i in y], dtype=np.int64)


def _stratified_split(labels, fraction, rng):
    train, val = [], []
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(index) * fraction))
        val.append(index[:cut])
        train.append(index[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def balance_by_rotation(x, y, rng, max_angle=20.0, jpeg_quality=None):
    """Add rotated copies of small classes' images until every class has as many as the largest.
    With jpeg_quality, the copies get the same JPEG round trip as every other picture: rotating
    smooths the artefacts away, and smooth copies of only the small classes would be a cue."""
    counts = np.bincount(y)
    target = counts.max()
    new_x, new_y = [x], [y]
    for label, count in enumerate(counts):
        if count == 0 or count == target:
            continue
        sources = np.flatnonzero(y == label)
        picks = np.resize(rng.permutation(sources), target - count)
        angles = rng.uniform(5.0, max_angle, len(picks)) * rng.choice([-1.0, 1.0], len(picks))
        new_x.append(np.stack([jpeg_round_trip(rotate(x[i], angle), jpeg_quality) for i, angle in zip(picks, angles)]))
        new_y.append(np.full(len(picks), label, dtype=y.dtype))
    return np.concatenate(new_x), np.concatenate(new_y)


def rotate(image, angle):
    """Rotate a uint8 HWC image and crop away the empty corners (then Lanczos back to size)."""
    height, width, channels = image.shape
    picture = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    turned = picture.rotate(angle, resample=Image.Resampling.BICUBIC)
    radians = np.deg2rad(abs(angle))
    side = min(height, width) / (np.cos(radians) + np.sin(radians))
    left, top = (width - side) / 2, (height - side) / 2
    cropped = resize(turned.crop((round(left), round(top), round(left + side), round(top + side))), height, width)
    out = np.asarray(cropped, dtype=np.uint8)
    return out[:, :, None] if channels == 1 else out
