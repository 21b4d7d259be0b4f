"""Our 13-class training set (or any other labelled collection), split, balanced and cached.

    dataset = prepare_dataset(DataConfig(data_dir="../shared/data"))    # the development data
    dataset = prepare_dataset(DataConfig(cifar_dir="~/cifar"))          # the official CIFAR-10/100
    dataset = prepare_dataset(DataConfig(source="pets/", preprocessing=Preprocessing(64, 64)))

Two recipes make the same 13 classes, CIFAR-10's ten plus three CIFAR-100 superclasses:
- `cifar_dir`: the official python-format folders `cifar-10-batches-py/` and `cifar-100-python/`;
  the extra classes are CIFAR-100's own coarse classes (2,500 training pictures each).
- `data_dir`: the development folder, where CIFAR-100 cannot be had: CIFAR-10 as 32-pixel JPEG,
  and the extra classes rebuilt from the Tiny ImageNet synsets inside them (bundle.labels).
Balancing adds rotated copies of the small classes' pictures until each has as many as the largest
(the extra classes: about doubled). The raw pictures are cached as .npz after the first read; the
split and the balancing are made afresh from the seed each time.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.atomic import atomic_path
from bundle.images import Preprocessing, jpeg_round_trip, resize, to_uint8
from bundle.labels import CIFAR10_CLASSES, EXTRA_CLASS_WNIDS
from classifier.readers import (
    DataUnavailable, even_odd_split, load_cifar_pickle, load_image_folder, load_tiny_imagenet_val, stratified_split,
    tiny_imagenet_wnids,
)

CIFAR10_JPEG_ARCHIVE = "cifar10-jpeg.tgz"  # in data_dir
TINY_IMAGENET_ARCHIVE = "tiny-imagenet-subset.tgz"  # in data_dir
CIFAR10_PICKLES = "cifar-10-batches-py"  # in cifar_dir
CIFAR100_PICKLES = "cifar-100-python"  # in cifar_dir


@dataclass(frozen=True)
class DataConfig:
    # Where the pictures are. The command line resolves these (pipeline.data_dir); no library code
    # assumes a folder. With cifar_dir the official CIFAR recipe is used, else data_dir's archives.
    data_dir: str | None = None
    cifar_dir: str | None = None
    extra_classes: tuple = tuple(EXTRA_CLASS_WNIDS)
    # Every picture gets CIFAR-10's own JPEG quality (see Preprocessing.jpeg_quality); the official
    # recipe, where every picture comes from the same source, needs none.
    preprocessing: Preprocessing = field(default_factory=lambda: Preprocessing(jpeg_quality=75))
    # Held out of training for calibration and tuning (OOD thresholds, the answer rule, the drift
    # reference): 5% is 225 CIFAR-10 pictures per class, and every picture kept for training counts
    # at CIFAR-10's size (airbench: ~0.3 points per 10% of the data).
    val_fraction: float = 0.05
    balance: bool = True  # rotate images of small classes until each has as many as the largest
    limit_per_class: int | None = None  # small runs (tests, smoke builds)
    # Image-folder trees (<class>/<image>) added to the training split, e.g. users' accepted
    # corrections. Their class folders must be among our class names.
    extra_train_folders: tuple = ()
    # Add Tiny ImageNet val/ images whose synset WordNet maps onto one of our classes (dogs, cars,
    # insects...), except the extra classes' own synsets, whose val images are our test split.
    tiny_imagenet_val_in_train: bool = False
    # Outlier exposure (classifier.airbench): Tiny ImageNet val/ pictures of classes that are none
    # of ours, from even positions of the sorted 200 wnids only (near_ood_wnids "outliers": the odd
    # ones are never trained or tuned on, every OOD figure is measured on them). Development data only.
    outlier_exposure: bool = True
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
    x_outliers: np.ndarray = None  # pictures of none of our classes, for outlier exposure (or None)


def prepare_dataset(config):
    """The split, balanced dataset of `config` (a DataConfig)."""
    raw = _load_cached(config)
    rng = np.random.default_rng(config.seed)
    train_index, val_index = stratified_split(raw["y_train"], config.val_fraction, rng)
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
        x_outliers=raw.get("x_outliers"),
    )


def describe_data(config):
    """One sentence naming the data a config builds from, for the model card."""
    if config.source:
        return f"the labelled pictures in {Path(config.source).name}"
    extra = ", ".join(name.replace("_", " ") for name in config.extra_classes)
    if config.cifar_dir:
        return f"the official CIFAR-10, plus CIFAR-100's coarse classes {extra}"
    return (f"CIFAR-10 as 32-pixel JPEG (quality 75), plus {extra} rebuilt from the Tiny ImageNet synsets "
            "inside those CIFAR-100 superclasses (CIFAR-100 itself could not be had)")


def _load_extra_folder(folder, class_names, preprocessing):
    """An image-folder tree whose class folders are a subset of ours (empty folders are fine)."""
    folder = Path(folder)
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.iterdir())) if folder.is_dir() else []
    unknown = [name for name in present if name not in class_names]
    if unknown:
        raise ValueError(f"{folder} has class folders {unknown} that are not among {list(class_names)}.")
    if not present:
        shape = (0, preprocessing.height, preprocessing.width, preprocessing.channels)
        return np.zeros(shape, np.uint8), np.zeros(0, np.int64)
    x, y, names = load_image_folder(folder, "", preprocessing, present)
    return x, np.array([class_names.index(names[i]) for i in y], dtype=np.int64)


def _load_cached(config):
    # Only what the raw read depends on: the split, balancing and extra folders are applied afresh.
    skip = ("cache_dir", "val_fraction", "balance", "seed", "extra_train_folders")
    key = {name: value for name, value in asdict(config).items() if name not in skip}
    for name in ("data_dir", "cifar_dir", "source"):  # one folder, however it was written, is one cache
        if key[name]:
            key[name] = str(Path(key[name]).resolve())
    key["files"] = [_signature(path) for path in _source_files(config)]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(config.cache_dir) / f"raw-{digest}.npz"
    if path.exists():
        with np.load(path) as cached:
            return {name: cached[name] for name in cached.files}
    raw = _load_raw(config)
    with atomic_path(path) as temporary:
        np.savez(temporary, **raw)
    return raw


def _source_files(config):
    if config.source:
        return [Path(config.source)]
    if config.cifar_dir:
        return [Path(config.cifar_dir) / CIFAR10_PICKLES, Path(config.cifar_dir) / CIFAR100_PICKLES]
    if not config.data_dir:
        raise DataUnavailable("No data was given: name a data folder (data_dir) or the official CIFAR folders (cifar_dir).")
    return [Path(config.data_dir) / CIFAR10_JPEG_ARCHIVE, Path(config.data_dir) / TINY_IMAGENET_ARCHIVE]


def _signature(path):
    """Size (and file count) of a file or folder, so that changed data is never read from cache."""
    path = Path(path)
    if not path.exists():
        raise DataUnavailable(f"{path} does not exist.")
    if path.is_file():
        return [str(path), path.stat().st_size]
    files = [p for p in path.rglob("*") if p.is_file()]
    return [str(path), len(files), sum(p.stat().st_size for p in files)]


def _load_raw(config):
    if config.source:
        from classifier.custom_dataset import load_source

        return load_source(config)
    if config.cifar_dir:
        return _load_official(config)
    return _load_development(config)


def _load_official(config):
    """CIFAR-10 and CIFAR-100's coarse classes from the official python pickles."""
    folder, p, limit = Path(config.cifar_dir), config.preprocessing, config.limit_per_class
    parts = {"train": ([], []), "test": ([], [])}
    for split, (xs, ys) in parts.items():
        x, y, names = load_cifar_pickle(folder / CIFAR10_PICKLES, split, CIFAR10_CLASSES)
        xs.append(x), ys.append(y)
        x, y, _ = load_cifar_pickle(folder / CIFAR100_PICKLES, split, config.extra_classes, label_mode="coarse")
        xs.append(x), ys.append(y + len(CIFAR10_CLASSES))
    out = {"class_names": np.array(CIFAR10_CLASSES + tuple(config.extra_classes))}
    for split, (xs, ys) in parts.items():
        x, y = np.concatenate(xs), np.concatenate(ys).astype(np.int64)
        if limit is not None:
            keep = np.sort(np.concatenate([np.flatnonzero(y == label)[:limit] for label in np.unique(y)]))
            x, y = x[keep], y[keep]
        out[f"x_{split}"], out[f"y_{split}"] = _conform(x, p), y
    return out


def _conform(x, preprocessing):
    """32x32 RGB arrays as `preprocessing` makes pictures (unchanged when it asks for just that)."""
    if (preprocessing.height, preprocessing.width, preprocessing.channels) == x.shape[1:] and preprocessing.jpeg_quality is None:
        return x
    return np.stack([to_uint8(Image.fromarray(image), preprocessing) for image in x])


def _load_development(config):
    data_dir, p, limit = Path(config.data_dir), config.preprocessing, config.limit_per_class
    cifar10 = data_dir / CIFAR10_JPEG_ARCHIVE
    tiny_imagenet = data_dir / TINY_IMAGENET_ARCHIVE
    # CIFAR-10's files are already 32-pixel JPEG at quality 75: at that size a second round trip
    # would only add loss, and the pictures would differ from CIFAR-10's own.
    own = replace(p, jpeg_quality=None) if (p.height, p.width, p.jpeg_quality) == (32, 32, 75) else p
    x_train, y_train, names = load_image_folder(cifar10, "cifar10/train", own, CIFAR10_CLASSES, limit)
    x_test, y_test, _ = load_image_folder(cifar10, "cifar10/test", own, CIFAR10_CLASSES, limit)
    xs_train, ys_train, xs_test, ys_test = [x_train], [y_train], [x_test], [y_test]
    for offset, superclass in enumerate(config.extra_classes, start=len(names)):
        wnids = EXTRA_CLASS_WNIDS[superclass]
        # Each synset contributes equally, so the superclass is not dominated by one of its members.
        per_wnid = None if limit is None else max(1, limit // len(wnids))
        x, _, _ = load_image_folder(tiny_imagenet, "tiny-imagenet-200/train", p, wnids, per_wnid)
        xs_train.append(x)
        ys_train.append(np.full(len(x), offset))
        x, _ = load_tiny_imagenet_val(tiny_imagenet, wnids, p)
        xs_test.append(x if limit is None else x[:limit])
        ys_test.append(np.full(len(xs_test[-1]), offset))
    if config.tiny_imagenet_val_in_train:
        ours = tiny_imagenet_val_of_our_classes(names + tuple(config.extra_classes), data_dir / "wordnet")
        wnids = sorted(ours)
        x, y = load_tiny_imagenet_val(tiny_imagenet, wnids, p)
        keep = slice(None) if limit is None else slice(limit)
        xs_train.append(x[keep])
        ys_train.append(np.array([ours[wnids[i]] for i in y[keep]], dtype=np.int64))
    raw = {
        "x_train": np.concatenate(xs_train), "y_train": np.concatenate(ys_train).astype(np.int64),
        "x_test": np.concatenate(xs_test), "y_test": np.concatenate(ys_test).astype(np.int64),
        "class_names": np.array(names + tuple(config.extra_classes)),
    }
    if config.outlier_exposure:
        x, _ = load_tiny_imagenet_val(tiny_imagenet, near_ood_wnids(data_dir, "outliers"), p)
        raw["x_outliers"] = x if limit is None else x[: limit * 4]
    return raw


def near_ood_wnids(data_dir, positions="all"):
    """The Tiny ImageNet classes that are none of ours (classifier.wordnet.is_ours), in the
    archive's order: "all" of them; "odd": those at odd positions of the sorted 200 wnids, which
    nothing trains or tunes on and every OOD figure is measured on; of the even ones, every fifth
    is "tune" (chooses the OOD detector) and the rest are "outliers" (trained on)."""
    from classifier.wordnet import is_ours

    every = tiny_imagenet_wnids(Path(data_dir) / TINY_IMAGENET_ARCHIVE)
    others = [wnid for wnid in every if not is_ours(wnid, Path(data_dir) / "wordnet")]
    even, odd = even_odd_split(every)
    even = [wnid for wnid in sorted(even) if wnid in others]
    kept = {"all": set(every), "odd": set(odd), "tune": set(even[4::5]),
            "outliers": set(even) - set(even[4::5])}[positions]
    return tuple(wnid for wnid in others if wnid in kept)


def tiny_imagenet_val_of_our_classes(class_names, wordnet_dir):
    """{wnid: class index} of the Tiny ImageNet val synsets that tiny_imagenet_val_in_train adds.

    Only synsets that the OOD evaluation also counts as ours are taken, so that no picture of a
    near-OOD class is ever trained on; the extra classes' own synsets are the test split.
    """
    from classifier.label_map import build_label_map
    from classifier.wordnet import is_ours, read_wordnet

    imagenet_wnids = read_wordnet(wordnet_dir).imagenet_wnids
    test_wnids = {wnid for wnids in EXTRA_CLASS_WNIDS.values() for wnid in wnids}
    return {
        imagenet_wnids[index]: target for index, target in build_label_map(wordnet_dir, class_names).items()
        if target is not None and imagenet_wnids[index] not in test_wnids and is_ours(imagenet_wnids[index], wordnet_dir)
    }


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
