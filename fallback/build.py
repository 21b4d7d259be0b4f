"""Build stage: write <out_dir>/fallback/ (model, labels, label map, tuned policy, notice).

    from fallback.build import build, FallbackConfig
    metrics = build(bundle, "assets")       # bundle: classifier.bundle.Bundle (or its folder)

    python -m fallback.build --bundle assets --out assets
"""

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from classifier.bundle import FALLBACK_DIR
from classifier.data import SHARED_DATA
from classifier.labels import CLASS_NAMES
from fallback import CONFIG_FILE, load_fallback
from fallback.label_map import WORDNET_DIR, build_label_map, read_wordnet, save_label_map
from fallback.models import IMAGENET_LABELS, MOBILENET_V2, TFLiteImageNetClassifier, check_label_order, read_imagenet_labels
from fallback.policy import FallbackPolicy
from fallback.tuning import (
    cached_imagenet_probabilities, cnn_outputs, evaluate_policy, expected_classes, load_tuning_pictures, tune_policy,
    tune_thumbnail_threshold,
)

NOTICE = """The ImageNet fallback model in this folder ({model}) and its labels ({labels}) are
Google's MobileNet from google-coral/test_data, licensed under the Apache License, Version 2.0
(https://www.apache.org/licenses/LICENSE-2.0). They are copied unmodified.
label_map.txt / label_map.json are derived from the WordNet hierarchy (WordNet license) by
fallback/label_map.py.
"""


@dataclass(frozen=True)
class FallbackConfig:
    model_path: str = str(MOBILENET_V2)
    labels_path: str = str(IMAGENET_LABELS)
    wordnet_dir: str = str(WORDNET_DIR)
    tiny_imagenet_archive: str = str(SHARED_DATA / "tiny-imagenet-subset.tgz")
    tune: bool = True  # re-tune the thresholds for this bundle's CNN; else use `policy` as given
    tuning_pictures_per_class: int = 10
    max_answer_error: float = 0.25  # tuning: at most this share of the answers given may be wrong
    policy: FallbackPolicy = field(default_factory=FallbackPolicy)
    num_threads: int = 1
    crop_fraction: float = 0.875
    cache_dir: str = ".cache/fallback"
    seed: int = 0
    # Tiny ImageNet synsets the CNN trained on (the pipeline fills this in): never tuning pictures.
    exclude_wnids: tuple = ()
    validation_per_class: int = 40  # of the CNN's validation split, when the pipeline passes it


def build(bundle, out_dir, config=FallbackConfig(), validation=None):
    """Write out_dir/fallback/ and return its metrics (label map sizes, tuned policy and its scores).

    `validation` (uint8 images, labels) from the CNN's own validation split joins the tuning set,
    so the tuned policy keeps the CNN answering the pictures it is good at.
    """
    if isinstance(bundle, (str, os.PathLike)):
        from classifier.bundle import Bundle

        bundle = Bundle.load(bundle, with_fallback=False)
    class_names = tuple(bundle.class_names) if bundle is not None else CLASS_NAMES
    target = Path(out_dir) / FALLBACK_DIR
    target.mkdir(parents=True, exist_ok=True)

    imagenet_names = read_imagenet_labels(config.labels_path)
    check_label_order(imagenet_names, Path(config.wordnet_dir) / "dataset_class_info.json")
    label_map = build_label_map(config.wordnet_dir, class_names)
    save_label_map(target, label_map, config.wordnet_dir, class_names)
    model_file, labels_file = Path(config.model_path).name, Path(config.labels_path).name
    _copy(config.model_path, target / model_file)
    _copy(config.labels_path, target / labels_file)
    _write_atomic(target / "NOTICE", NOTICE.format(model=model_file, labels=labels_file))

    policy, tuning = config.policy, None
    if config.tune and bundle is not None:
        policy, tuning, grid = _tune(bundle, label_map, config, validation)
        _write_atomic(target / "tuning_grid.json", json.dumps(grid, indent=1) + "\n")
    settings = {
        "model": model_file,
        "model_sha256": _sha256(target / model_file),
        "labels": labels_file,
        "label_map": "label_map.json",
        "class_names": list(class_names),
        "num_threads": config.num_threads,
        "crop_fraction": config.crop_fraction,
        "policy": policy.to_dict(),
        "tuning": tuning,
        "config": asdict(config),
    }
    _write_atomic(target / CONFIG_FILE, json.dumps(settings, indent=2, default=str) + "\n")
    load_fallback(target).classifier.input_size  # what was written must load and start

    counts = {name: 0 for name in class_names}
    for index in label_map.values():
        if index is not None:
            counts[class_names[index]] += 1
    return {
        "model": model_file,
        "imagenet_classes_per_class": counts,
        "imagenet_classes_none": sum(index is None for index in label_map.values()),
        "policy": policy.to_dict(),
        "tuning": tuning,
    }


def _tune(bundle, label_map, config, validation=None):
    pictures, wnids = load_tuning_pictures(
        config.tiny_imagenet_archive, config.tuning_pictures_per_class, config.seed, config.exclude_wnids
    )
    classifier = TFLiteImageNetClassifier(config.model_path, config.num_threads, config.crop_fraction)
    key = {
        "model": _sha256(config.model_path), "archive": os.path.getsize(config.tiny_imagenet_archive),
        "per_class": config.tuning_pictures_per_class, "seed": config.seed, "crop": config.crop_fraction,
    }
    from fallback import Fallback

    fallback = Fallback(classifier, label_map, read_imagenet_labels(config.labels_path), tuple(bundle.class_names))
    masses = fallback.masses_from_probabilities(cached_imagenet_probabilities(classifier, pictures, key, config.cache_dir))
    cnn_probabilities, inlier = cnn_outputs(bundle, pictures)
    targets = expected_classes(wnids, label_map, read_wordnet(config.wordnet_dir).imagenet_wnids)
    in_distribution = None
    if validation is not None:
        images, labels = _per_class(*validation, config.validation_per_class, config.seed)
        home_probabilities, home_inlier = cnn_outputs(bundle, images)
        home_key = {**key, "validation": hashlib.sha256(images.tobytes()).hexdigest()}
        home_masses = fallback.masses_from_probabilities(
            cached_imagenet_probabilities(classifier, [Image.fromarray(i) for i in images], home_key, config.cache_dir)
        )
        in_distribution = (home_probabilities, home_inlier, home_masses, labels)
    policy, metrics, grid = tune_policy(
        cnn_probabilities, inlier, masses, targets, config.max_answer_error, in_distribution=in_distribution
    )
    thumbnails, thumbnail_grid = None, []
    if in_distribution is not None:
        policy, thumbnails, thumbnail_grid = tune_thumbnail_threshold(
            policy, cnn_probabilities, inlier, targets, (home_probabilities, home_inlier, labels))
    # The same pictures with the CNN alone (it never refuses) and the fallback alone, for comparison.
    cnn_alone = evaluate_policy(FallbackPolicy(0.0, 0.0), cnn_probabilities, None, masses, targets)
    fallback_alone = evaluate_policy(FallbackPolicy(1.0, policy.fallback_mass_threshold), np.zeros_like(cnn_probabilities), None, masses, targets)
    return policy, {
        "set": f"Tiny ImageNet val, {config.tuning_pictures_per_class} per class, without the synsets the CNN trained on"
        + (f"; plus {config.validation_per_class} validation images per class" if in_distribution else ""),
        "objective": f"best balanced score with at most {config.max_answer_error:.0%} of answers wrong",
        "ood_detector": inlier is not None,
        "tuned": metrics,
        # Rule 0: the same pictures as thumbnails (no larger than the CNN's input), no fallback.
        "thumbnails": thumbnails,
        "cnn_alone": {k: cnn_alone[k] for k in ("accuracy_ours", "refused_none")},
        "fallback_alone": {k: fallback_alone[k] for k in ("accuracy_ours", "refused_none")},
        "grid": "tuning_grid.json",
    }, {"photos": grid, "thumbnails": thumbnail_grid}


def _per_class(images, labels, per_class, seed):
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)])
    return images[np.sort(pick)], labels[np.sort(pick)]


def _copy(source, destination):
    temporary = Path(f"{destination}.tmp")
    shutil.copyfile(source, temporary)
    os.replace(temporary, destination)


def _write_atomic(path, text):
    temporary = Path(f"{path}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a bundle's fallback/ folder.")
    parser.add_argument("--bundle", default="assets", help="bundle folder whose CNN the thresholds are tuned for")
    parser.add_argument("--out", default="assets")
    parser.add_argument("--no-tune", action="store_true")
    arguments = parser.parse_args()
    from classifier.bundle import BundleUnavailable

    try:
        result = build(arguments.bundle, arguments.out, FallbackConfig(tune=not arguments.no_tune))
    except BundleUnavailable as error:
        raise SystemExit(f"{error}") from None
    print(json.dumps(result, indent=2))
