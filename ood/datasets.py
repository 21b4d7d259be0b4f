"""Out-of-distribution image sets, as uint8 arrays made exactly like the model's input.

    near = near_ood_images(bundle.preprocessing)      # Tiny ImageNet val/, classes not ours
    far = far_ood_images(bundle.preprocessing, 5000)  # MNIST test digits as RGB
    photos = imagenet_photos(bundle.preprocessing)    # full-size ImageNet photos, classes not ours

"Not ours" follows ood.wordnet.is_ours: neither CIFAR-10-like nor one of our extra classes.
"""

from pathlib import Path

import numpy as np

from classifier.data import SHARED_DATA, load_mnist, load_tiny_imagenet_val, read_classes_tsv, tiny_imagenet_wnids
from classifier.images import Preprocessing, to_uint8
from ood.wordnet import OURS_ANCESTORS, is_ours

TINY_IMAGENET_ARCHIVE = SHARED_DATA / "tiny-imagenet-subset.tgz"
MNIST_DIR = SHARED_DATA / "mnist"
PHOTOS_DIR = SHARED_DATA / "imagenet-samples"
PHOTO_KINDS = ("non_ours", "ours", "all")


def near_ood_wnids(archive=TINY_IMAGENET_ARCHIVE, ancestor_wnids=OURS_ANCESTORS):
    """The Tiny ImageNet classes that are not ours, in the archive's order."""
    return tuple(wnid for wnid in tiny_imagenet_wnids(archive) if not is_ours(wnid, ancestor_wnids))


def near_ood_images(preprocessing=Preprocessing(), limit=None, archive=TINY_IMAGENET_ARCHIVE,
                    ancestor_wnids=OURS_ANCESTORS, return_labels=False):
    """Tiny ImageNet val/ images (50 per class) of the classes that are not ours.

    `limit` keeps whole classes spread evenly over the list (about limit / 50 of them), so a
    subset covers as many kinds of object as the full set and only those images are decoded.
    With return_labels, also returns each image's wnid.
    """
    x, y, wnids = _val_images(near_ood_wnids(archive, ancestor_wnids), preprocessing, limit, archive)
    if return_labels:
        return x, np.array([wnids[i] for i in y])
    return x


def tiny_imagenet_val_except(class_names, preprocessing=Preprocessing(), limit=None, archive=TINY_IMAGENET_ARCHIVE):
    """Tiny ImageNet val/ images of every class that is not among `class_names`, which may be
    wnids or the readable names classifier.custom_dataset gives them: the OOD set of a bundle
    built on another dataset. `limit` keeps whole classes spread evenly, as near_ood_images does."""
    from classifier.custom_dataset import names_from_classes_tsv

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


def far_ood_images(preprocessing=Preprocessing(), limit=None, directory=MNIST_DIR):
    """MNIST test digits, resized with Lanczos and made RGB (or kept grey) per `preprocessing`."""
    from PIL import Image

    digits, _ = load_mnist(directory)
    if limit is not None:
        digits = digits[: int(limit)]
    return np.stack([to_uint8(Image.fromarray(digit[:, :, 0]), preprocessing) for digit in digits])


def photo_wnid(path):
    """`n01440764_tench.JPEG` -> `n01440764`."""
    return Path(path).name.split("_", 1)[0]


def imagenet_photo_paths(kind="non_ours", directory=PHOTOS_DIR, ancestor_wnids=OURS_ANCESTORS):
    """Full-size ImageNet photos, one per class: kind "non_ours" (OOD), "ours" or "all"."""
    if kind not in PHOTO_KINDS:
        raise ValueError(f"kind must be one of {PHOTO_KINDS}, not {kind!r}.")
    paths = sorted(Path(directory).glob("*.JPEG"))
    if kind == "all":
        return paths
    wanted = kind == "ours"
    return [path for path in paths if is_ours(photo_wnid(path), ancestor_wnids) == wanted]


def imagenet_photos(preprocessing=Preprocessing(), kind="non_ours", limit=None, directory=PHOTOS_DIR,
                    ancestor_wnids=OURS_ANCESTORS):
    """The photos of `imagenet_photo_paths`, downscaled with Lanczos by classifier.images."""
    paths = imagenet_photo_paths(kind, directory, ancestor_wnids)[:limit]
    if not paths:
        shape = (0, preprocessing.height, preprocessing.width, preprocessing.channels)
        return np.zeros(shape, np.uint8)
    return np.stack([to_uint8(path, preprocessing) for path in paths])
