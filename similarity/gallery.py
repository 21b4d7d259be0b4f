"""What the app shows when the user disagrees: training images from the top predicted classes.

    neighbours = gallery_for(bundle.gallery, probabilities[0], features[0])
    # -> 4 Neighbour(index, label, class_name, probability, distance, thumbnail), most likely first

Default ("per_class"): the nearest image of each of the top-4 predicted classes. The user who
disagrees with the answer needs alternatives to choose from; the 4 nearest images overall tend to
come from one class (usually the one just rejected), so they would offer one choice four times.
"nearest" gives the 4 nearest among the top-4 classes, for those who want the closest look-alikes.
"""

from dataclasses import dataclass

import numpy as np

MODES = ("per_class", "nearest")


@dataclass(frozen=True)
class Neighbour:
    index: int  # row in the gallery
    label: int  # class index
    class_name: str
    probability: float  # the model's probability for this class on the upload
    distance: float
    thumbnail: np.ndarray  # uint8 (h, w, c), or None when the gallery stores no pictures


def gallery_for(gallery, probabilities, features, k=4, mode="per_class", tie_breaker=None):
    """Up to k Neighbours for one upload, from the k classes with the highest `probabilities`
    (any score per class: the CNN's probabilities, or the fallback's masses), ties broken by
    `tie_breaker` (another score per class) and then by class order.

    `features` is the upload in the gallery's space: CNN features for "cosine", 32x32 uint8
    pixels for "l1-pixels". Classes without gallery images are skipped.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; choose from {MODES}.")
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    second = np.zeros_like(probabilities) if tie_breaker is None else np.asarray(tie_breaker, dtype=np.float64).reshape(-1)
    present = set(gallery.classes_.tolist())
    # lexsort sorts by the last key first; a stable sort keeps class order among full ties.
    ranked = [int(c) for c in np.lexsort((-second, -probabilities)) if int(c) in present][:k]
    if mode == "per_class":
        indices, distances = gallery.nearest_per_class(features, ranked)
    else:
        indices, distances = gallery.query(features, classes=ranked, k=k)
    neighbours = []
    for index, distance in zip(indices.tolist(), distances.tolist()):
        label = int(gallery.labels_[index])
        neighbours.append(Neighbour(
            index=index, label=label, class_name=gallery.class_name(label),
            probability=float(probabilities[label]) if label < len(probabilities) else 0.0,
            distance=float(distance),
            thumbnail=None if gallery.thumbnails_ is None else gallery.thumbnails_[index],
        ))
    return neighbours
