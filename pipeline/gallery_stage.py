"""Build stage: the gallery of training images behind "Give us another chance".

    metrics = run(context, GalleryConfig())   # writes gallery.npz, gallery_config.json

The gallery is a fixed, class-balanced sample of real (not rotated-copy) training images: 300 per
class, 3,900 images. Nearest-neighbour agreement on the test split rises by ~3 points from 50 to
300 per class and by half a point more at 500 (bench/similarity.py prints the curve), while the
file stays ~4 MB (float16 features + a JPEG mosaic of the 32x32 thumbnails) and a query stays
well under a millisecond.
"""

import os
from dataclasses import asdict, dataclass

import numpy as np

from bundle.atomic import write_json_atomic
from bundle.files import GALLERY_FILE
from bundle.arrays import balanced_sample
from similarity import NearestTrainingImages

CONFIG_FILE = "gallery_config.json"


@dataclass(frozen=True)
class GalleryConfig:
    per_class: int = 300
    metric: str = "cosine"
    feature_dtype: str = "float16"
    # Raw-pixel L1 costs ~3,000 operations per gallery image per query, so its agreement is
    # measured on a class-balanced subset of the test split (cosine is measured on all of it too).
    pixel_test_per_class: int = 50
    seed: int = 0


def run(context, config=GalleryConfig()):
    """Fit the gallery on the training split's features, save it in the bundle, return its metrics."""
    bundle, dataset, embeddings, out_dir = context.bundle, context.dataset, context.embeddings, context.out_dir
    eligible = None if dataset.train_augmented is None else ~np.asarray(dataset.train_augmented, dtype=bool)
    rows = balanced_sample(dataset.y_train, config.per_class, eligible, config.seed)
    gallery = NearestTrainingImages(config.metric, config.feature_dtype, class_names=tuple(bundle.class_names))
    gallery.fit(_space(config.metric, embeddings["train"], dataset.x_train)[rows], dataset.y_train[rows], dataset.x_train[rows])
    path = gallery.save(out_dir / GALLERY_FILE)
    # Measured on the saved file, so the figures describe what the app will load.
    gallery = NearestTrainingImages.load(path)
    metrics = {
        "gallery_images": int(len(rows)),
        "gallery_images_per_class": np.bincount(gallery.labels_, minlength=len(bundle.class_names)).tolist(),
        "gallery_file_bytes": os.path.getsize(path),
        **agreement_metrics(gallery, dataset, embeddings["test"], config),
    }
    write_json_atomic(out_dir / CONFIG_FILE, {"config": asdict(config), "metrics": metrics})
    bundle.gallery = gallery
    return metrics


def agreement_metrics(gallery, dataset, test_embedding, config=GalleryConfig()):
    """How often the nearest gallery image's class equals the true class, per distance."""
    pixels = NearestTrainingImages("l1-pixels").fit(gallery.thumbnails_, gallery.labels_)
    subset = balanced_sample(dataset.y_test, config.pixel_test_per_class, seed=config.seed)
    y_test = dataset.y_test
    features = _space(gallery.metric, test_embedding, dataset.x_test)  # the space the gallery was fitted in
    return {
        "nn_agreement_cosine_features": nearest_class_agreement(gallery, features, y_test),
        "test_images": int(len(y_test)),
        "nn_agreement_cosine_features_on_subset": nearest_class_agreement(gallery, features[subset], y_test[subset]),
        "nn_agreement_l1_pixels_on_subset": nearest_class_agreement(pixels, dataset.x_test[subset], y_test[subset]),
        "subset_test_images": int(len(subset)),
    }


def nearest_class_agreement(gallery, queries, true_labels, batch_size=256):
    """Fraction of queries whose nearest gallery image has the query's true class."""
    true_labels = np.asarray(true_labels)
    if len(true_labels) == 0:
        return float("nan")
    hits = 0
    for start in range(0, len(true_labels), batch_size):
        indices, _ = gallery.query(queries[start:start + batch_size], k=1)
        hits += int(np.sum(gallery.labels_[indices[:, 0]] == true_labels[start:start + batch_size]))
    return hits / len(true_labels)


def _space(metric, embedding, pixels):
    return pixels if metric == "l1-pixels" else embedding.features
