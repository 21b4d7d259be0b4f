"""Build stage: the ImageNet fallback folder, and the answer rule's thresholds tuned for this CNN.

    metrics = run(context, FallbackConfig())

Writes fallback/ (the MobileNetV2 TFLite model and its labels, copied from the data folder's
imagenet-models/; the WordNet label map; NOTICE; fallback_config.json) and answer_rule.json at the
bundle's root (service.answer), with the tuning grid beside it (answer_tuning_grid.json). Without
the model files or the tuning pictures the stage keeps what it can and says so in "skipped".
"""

import hashlib
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bundle.atomic import atomic_path, write_json_atomic, write_text_atomic
from bundle.images import open_image
from bundle.labels import CIFAR10_CLASSES
from classifier.label_map import build_label_map, save_label_map
from classifier.wordnet import read_wordnet
from fallback import CONFIG_FILE, Fallback, load_fallback
from fallback.models import IMAGENET_LABELS, MOBILENET_V2, MODELS_DIR, TFLiteImageNetClassifier, check_label_order, read_imagenet_labels
from classifier.ood_sets import imagenet_photo_paths, near_ood_images, photo_wnid
from pipeline.answer_tuning import (
    NONE, cached_imagenet_probabilities, cnn_outputs, evaluate_rule, expected_classes, format_risk_coverage,
    risk_coverage_table, tune_rule, tune_teaching_threshold, tune_thumbnail_threshold,
)
from service.answer import AnswerRule
from bundle.files import FALLBACK_DIR

NOTICE = """The ImageNet fallback model in this folder ({model}) and its labels ({labels}) are
Google's MobileNet from google-coral/test_data, licensed under the Apache License, Version 2.0
(https://www.apache.org/licenses/LICENSE-2.0). They are copied unmodified.
label_map.txt / label_map.json are derived from the WordNet hierarchy (WordNet license) by
classifier/label_map.py.
"""
GRID_FILE = "answer_tuning_grid.json"


@dataclass(frozen=True)
class FallbackConfig:
    model_file: str = MOBILENET_V2  # in the data folder's imagenet-models/
    labels_file: str = IMAGENET_LABELS
    tune: bool = True  # tune the answer rule for this bundle's CNN; else keep `rule` as given
    # Photos: at most this share of the answers to photos of ours wrong, at least this share of
    # other photos refused (pipeline.answer_tuning.tune_rule).
    max_answer_error: float = 0.01
    min_refused_others: float = 0.995
    # Thumbnails: at most this share of 32-pixel pictures of ours answered wrongly, at least this
    # share of 32-pixel pictures of other things refused (tune_thumbnail_threshold).
    thumbnail_max_wrong: float = 0.02
    thumbnail_min_refused_others: float = 0.75
    rule: AnswerRule = field(default_factory=AnswerRule)
    num_threads: int = 0  # the TFLite interpreter's threads; 0: every core of the serving machine
    crop_fraction: float = 0.875
    cache_dir: str = ".cache/fallback"
    # Measure the tuned rule on the sets that tuned nothing (the Model tab's sentence); the learning
    # step leaves it to its gate, which measures the same pictures.
    measure: bool = True
    seed: int = 0


def run(context, config=FallbackConfig()):
    """Write fallback/ and answer_rule.json; return the label map's sizes and the tuned rule."""
    models, wordnet = context.data_path(MODELS_DIR), context.data_path("wordnet")
    if models is None or wordnet is None:
        AnswerRule().save(context.out_dir, {"tuned": False, "why": "no fallback model or WordNet files in the data folder"})
        return {"skipped": [f"the ImageNet fallback: no {MODELS_DIR}/ and wordnet/ in the data folder; the answer rule keeps its defaults"]}
    bundle, out_dir = context.bundle, Path(context.out_dir)
    class_names = tuple(bundle.class_names)
    target = out_dir / FALLBACK_DIR
    target.mkdir(parents=True, exist_ok=True)
    imagenet_names = read_imagenet_labels(models / config.labels_file)
    check_label_order(imagenet_names, wordnet / "dataset_class_info.json")
    label_map = build_label_map(wordnet, class_names)
    save_label_map(target, label_map, wordnet, class_names)
    _copy(models / config.model_file, target / config.model_file)
    _copy(models / config.labels_file, target / config.labels_file)
    write_text_atomic(target / "NOTICE", NOTICE.format(model=config.model_file, labels=config.labels_file))
    write_json_atomic(target / CONFIG_FILE, {
        "model": config.model_file, "model_sha256": _sha256(target / config.model_file), "labels": config.labels_file,
        "label_map": "label_map.json", "class_names": list(class_names), "num_threads": config.num_threads,
        "crop_fraction": config.crop_fraction, "config": asdict(config),
    })
    bundle.fallback = load_fallback(target)
    bundle.fallback.classifier.input_size  # what was written must load and start

    rule, tuning, skipped = config.rule, None, []
    present = context.data_path("tiny-imagenet-subset.tgz") and context.data_path("imagenet-samples")
    if config.tune and present:
        rule, tuning, grid = _tune(context, label_map, config)
        write_json_atomic(out_dir / GRID_FILE, grid)
    elif config.tune:
        skipped.append("answer rule tuning: no Tiny ImageNet or imagenet-samples in the data folder; the rule keeps its defaults")
    rule.save(out_dir, tuning)
    bundle.answer_rule = rule
    measured = _measure(context, label_map, rule) if config.tune and config.measure and present else None
    counts = {name: 0 for name in class_names}
    for index in label_map.values():
        if index is not None:
            counts[class_names[index]] += 1
    return {
        "model": config.model_file,
        "imagenet_classes_per_class": counts,
        "imagenet_classes_none": sum(index is None for index in label_map.values()),
        "rule": rule.to_dict(),
        "tuning": tuning,
        "measured": measured,
        "skipped": skipped,
    }


def _tune(context, label_map, config):
    bundle, dataset = context.bundle, context.dataset
    models, wordnet = context.data_path(MODELS_DIR), context.data_path("wordnet")
    # Photos: the tune half of imagenet-samples, as people upload them (full size).
    paths = imagenet_photo_paths(context.data_dir, "all", half="tune")
    pictures = [open_image(path, draft_side=1024) for path in paths]
    classifier = TFLiteImageNetClassifier(models / config.model_file, config.num_threads, config.crop_fraction)
    key = {"model": _sha256(models / config.model_file), "photos": [path.name for path in paths], "crop": config.crop_fraction}
    fallback = Fallback(classifier, label_map, read_imagenet_labels(models / config.labels_file), tuple(bundle.class_names))
    masses = fallback.masses_from_probabilities(cached_imagenet_probabilities(classifier, pictures, key, config.cache_dir))
    cnn_probabilities, inlier, ood_scores = cnn_outputs(bundle, pictures, with_scores=True)
    targets = expected_classes([photo_wnid(path) for path in paths], label_map, read_wordnet(wordnet).imagenet_wnids)
    rule, metrics, grid = tune_rule(cnn_probabilities, inlier, masses, targets, config.max_answer_error, config.min_refused_others)
    rule, teaching = tune_teaching_threshold(rule, masses, targets)
    photo_curves = risk_coverage_table(_candidates(cnn_probabilities, ood_scores, masses), targets)
    print(f"[build] risk-coverage on the tune half of the photos:\n{format_risk_coverage(photo_curves)}", flush=True)
    # Thumbnails: 32-pixel pictures, the CNN's validation split and Tiny ImageNet's "tune" classes.
    others = near_ood_images(context.data_dir, bundle.preprocessing, positions="tune")
    home, away = cnn_outputs(bundle, dataset.x_val, with_scores=True), cnn_outputs(bundle, others, with_scores=True)
    rule, thumbnails, thumbnail_grid = tune_thumbnail_threshold(
        rule, (*home[:2], dataset.y_val), away[:2], config.thumbnail_max_wrong, config.thumbnail_min_refused_others)
    thumbnail_curves = risk_coverage_table(
        _candidates(*(np.concatenate([a, b]) if a is not None else None for a, b in zip(home[::2], away[::2]))),
        np.concatenate([dataset.y_val, np.full(len(others), NONE)]))
    print(f"[build] risk-coverage on 32-pixel pictures:\n{format_risk_coverage(thumbnail_curves)}", flush=True)
    # The same photos with the CNN alone (it never refuses) and the fallback alone, for comparison.
    cnn_alone = evaluate_rule(AnswerRule(0.0, 0.0), cnn_probabilities, None, masses, targets)
    fallback_alone = evaluate_rule(AnswerRule(1.0, rule.fallback_mass_threshold), np.zeros_like(cnn_probabilities), None, masses, targets)
    return rule, {
        "tuned": True,
        "photos": {
            "set": f"the tune half of imagenet-samples ({len(paths)} photos: even positions of the sorted file names)",
            "objective": (f"most photos of ours answered right, with at most {config.max_answer_error:.1%} of the answers to them "
                          f"wrong and at least {config.min_refused_others:.1%} of the other photos refused"),
            "tuned_metrics": metrics,
            "teaching": teaching,
            "risk_coverage": photo_curves,
            "cnn_alone": {k: cnn_alone[k] for k in ("accuracy_ours", "refused_none")},
            "fallback_alone": {k: fallback_alone[k] for k in ("accuracy_ours", "refused_none")},
        },
        "thumbnails": {
            "set": (f"32-pixel pictures: the CNN's validation split ({len(dataset.y_val)}) and {len(others)} Tiny ImageNet val "
                    "pictures of the tune classes (even positions, held out of outlier exposure)"),
            "objective": (f"most validation pictures right, with at most {config.thumbnail_max_wrong:.1%} of them wrong and at "
                          f"least {config.thumbnail_min_refused_others:.0%} of the others refused"),
            "tuned_metrics": thumbnails,
            "risk_coverage": thumbnail_curves,
        },
        "ood_detector": inlier is not None,
        "grid": GRID_FILE,
    }, {"photos": grid, "thumbnails": thumbnail_grid}


def _measure(context, label_map, rule):
    """The tuned rule on pictures that tuned and chose nothing: the bench half of the photos (odd
    positions), the CIFAR-10 test split and odd-position Tiny ImageNet classes as 32-pixel
    thumbnails. The Model tab quotes it; bench.photo_risk measures the photos through the service."""
    bundle, dataset = context.bundle, context.dataset
    paths = imagenet_photo_paths(context.data_dir, "all", half="bench")
    pictures = [open_image(path, draft_side=1024) for path in paths]
    masses = bundle.fallback.class_masses(pictures)
    targets = expected_classes([photo_wnid(path) for path in paths], label_map,
                               read_wordnet(context.data_path("wordnet")).imagenet_wnids)
    photos = evaluate_rule(rule, *cnn_outputs(bundle, pictures), masses, targets)
    cifar10 = dataset.y_test < len(CIFAR10_CLASSES)
    home = evaluate_rule(rule, *cnn_outputs(bundle, dataset.x_test[cifar10]), None, dataset.y_test[cifar10], thumbnail=True)
    others = near_ood_images(context.data_dir, bundle.preprocessing, positions="odd")
    away = evaluate_rule(rule, *cnn_outputs(bundle, others), None, np.full(len(others), NONE), thumbnail=True)
    measured = {
        "photos": {"set": f"the bench half of imagenet-samples ({len(paths)} photos, odd positions)",
                   "right_ours": photos["accuracy_ours"], "wrong_ours": photos["wrong_ours"],
                   "refused_ours": 1.0 - photos["accuracy_ours"] - photos["wrong_ours"], "refused_others": photos["refused_none"],
                   "pictures_ours": photos["pictures_ours"], "pictures_others": photos["pictures_none"]},
        "thumbnails": {"set": f"CIFAR-10 test ({int(cifar10.sum())}) and {len(others)} Tiny ImageNet val pictures of "
                              "odd-position classes, as 32-pixel uploads",
                       "right": home["accuracy_ours"], "wrong": home["wrong_ours"], "refused_others": away["refused_none"]},
    }
    print(f"[build] measured on what tuned nothing: {measured}", flush=True)
    return measured


def _candidates(probabilities, ood_scores, masses=None):
    """The candidate scores of the risk-coverage tables: {name: (score, the class it answers)}."""
    cnn_class = probabilities.argmax(1)
    candidates = {"CNN top probability (calibrated)": (probabilities.max(1), cnn_class)}
    if ood_scores is not None:
        accepted = ood_scores >= 0
        candidates["OOD score"] = (ood_scores, cnn_class)
        candidates["CNN top probability where the OOD detector accepts"] = (np.where(accepted, probabilities.max(1), 0.0), cnn_class)
    if masses is not None:
        fallback_class = masses.argmax(1)
        candidates["fallback mapped mass"] = (masses.max(1), fallback_class)
        candidates["fallback mass where the CNN agrees"] = (np.where(cnn_class == fallback_class, masses.max(1), 0.0), fallback_class)
    return candidates


def _copy(source, destination):
    with atomic_path(destination) as temporary:
        shutil.copyfile(source, temporary)


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
