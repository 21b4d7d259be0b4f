"""Out-of-distribution picture sets, as uint8 arrays made exactly like the model's input.

    near = near_ood_images(data_dir, bundle.preprocessing)      # Tiny ImageNet val/, classes not ours
    far = far_ood_images(data_dir / "mnist", bundle.preprocessing, 5000)   # MNIST test digits as RGB
    photos = imagenet_photos(data_dir, bundle.preprocessing)    # full-size ImageNet photos, classes not ours

`data_dir` is a data folder as the development one is laid out (tiny-imagenet-subset.tgz,
imagenet-samples/, wordnet/). "Not ours" follows classifier.wordnet.is_ours: neither
CIFAR-10-like nor one of our extra classes.
"""

from pathlib import Path

import numpy as np

from classifier.custom_dataset import names_from_classes_tsv
from classifier.dataset import near_ood_wnids  # noqa: F401  (the OOD sets' classes, beside their pictures)
from bundle.images import Preprocessing, to_uint8
from classifier.readers import even_odd_split, load_mnist, load_tiny_imagenet_val, read_classes_tsv
from classifier.wordnet import OURS_ANCESTORS, is_ours

TINY_IMAGENET_ARCHIVE = "tiny-imagenet-subset.tgz"
PHOTOS_DIR = "imagenet-samples"
PHOTO_KINDS = ("non_ours", "ours", "all")


def near_ood_images(data_dir, preprocessing=Preprocessing(), limit=None, positions="odd", return_labels=False):
    """Tiny ImageNet val/ images (50 per class) of the classes that are not ours; by default only
    those at odd positions of the sorted 200 wnids, which nothing trains or tunes on (the even ones
    may be training outliers: classifier.dataset.near_ood_wnids).

    `limit` keeps whole classes spread evenly over the list (about limit / 50 of them), so a
    subset covers as many kinds of object as the full set and only those images are decoded.
    With return_labels, also returns each image's wnid.
    """
    archive = Path(data_dir) / TINY_IMAGENET_ARCHIVE
    x, y, wnids = _val_images(near_ood_wnids(data_dir, positions), preprocessing, limit, archive)
    if return_labels:
        return x, np.array([wnids[i] for i in y])
    return x


def tiny_imagenet_val_except(data_dir, class_names, preprocessing=Preprocessing(), limit=None):
    """Tiny ImageNet val/ images of every class that is not among `class_names`, which may be
    wnids or the readable names classifier.custom_dataset gives them: the OOD set of a bundle
    built on another dataset. `limit` keeps whole classes spread evenly, as near_ood_images does."""
    archive = Path(data_dir) / TINY_IMAGENET_ARCHIVE
    table = read_classes_tsv(archive, "tiny-imagenet-200")
    names = names_from_classes_tsv(table, tuple(table))
    wnids = tuple(wnid for wnid, name in zip(table, names) if wnid not in class_names and name not in class_names)
    return _val_images(wnids, preprocessing, limit, archive)[0]


def _val_images(wnids, preprocessing, limit, archive):
    """Val images of `wnids` -> (x, y index into the wnids kept, wnids kept). `limit` keeps whole
    classes spread evenly over the list (about limit / 50 of them)."""
    if limit is not None:
        classes = max(1, min(len(wnids), -(-int(limit) // 50)))
        wnids = tuple(wnids[i] for i in np.linspace(0, len(wnids) - 1, classes).round().astype(int))
    x, y = load_tiny_imagenet_val(archive, wnids, preprocessing)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y, wnids


def far_ood_images(mnist, preprocessing=Preprocessing(), limit=None):
    """MNIST test digits (an idx folder or mnist.npz), resized with Lanczos and made RGB (or kept
    grey) per `preprocessing`."""
    from PIL import Image

    digits, _ = load_mnist(mnist)
    if limit is not None:
        digits = digits[: int(limit)]
    return np.stack([to_uint8(Image.fromarray(digit[:, :, 0]), preprocessing) for digit in digits])


def photo_wnid(path):
    """`n01440764_tench.JPEG` -> `n01440764`."""
    return Path(path).name.split("_", 1)[0]


def imagenet_photo_paths(data_dir, kind="non_ours", ancestor_wnids=OURS_ANCESTORS, half=None):
    """Full-size ImageNet photos, one per class: kind "non_ours" (OOD), "ours" or "all"; of the
    "tune" half (even positions of the sorted file names), the "bench" half (odd), or both (None).
    The split is classifier.readers.even_odd_split's, made on every photo before `kind` filters."""
    if kind not in PHOTO_KINDS:
        raise ValueError(f"kind must be one of {PHOTO_KINDS}, not {kind!r}.")
    paths = sorted((Path(data_dir) / PHOTOS_DIR).glob("*.JPEG"))
    if half is not None:
        kept = set(even_odd_split([path.name for path in paths])[("tune", "bench").index(half)])
        paths = [path for path in paths if path.name in kept]
    if kind == "all":
        return paths
    wanted = kind == "ours"
    wordnet = Path(data_dir) / "wordnet"
    return [path for path in paths if is_ours(photo_wnid(path), wordnet, ancestor_wnids) == wanted]


def imagenet_photos(data_dir, preprocessing=Preprocessing(), kind="non_ours", limit=None, ancestor_wnids=OURS_ANCESTORS, half=None):
    """The photos of `imagenet_photo_paths`, downscaled with Lanczos by bundle.images."""
    paths = imagenet_photo_paths(data_dir, kind, ancestor_wnids, half)[:limit]
    if not paths:
        shape = (0, preprocessing.height, preprocessing.width, preprocessing.channels)
        return np.zeros(shape, np.uint8)
    return np.stack([to_uint8(path, preprocessing) for path in paths])
