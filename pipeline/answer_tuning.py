"""Measuring and tuning the answer rule's thresholds (service.answer) on labelled pictures.

The tuning set is Tiny ImageNet val (64x64), leaving out the synsets the CNN trains on (their
val images are the CNN's test set). Every Tiny ImageNet class is an ImageNet-1k class, so the label
map gives each picture its expected answer: one of our classes, or "none of ours" (refuse). The
acceptance photos (imagenet-samples) are never used here.
"""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from bundle.atomic import atomic_path
from bundle.images import Preprocessing
from bundle.labels import EXTRA_CLASS_WNIDS
from bundle.arrays import balanced_sample
from classifier.readers import load_tiny_imagenet_val, tiny_imagenet_wnids
from service.answer import CNN, FALLBACK, REFUSED, AnswerRule

NONE = -1  # expected answer for a picture of none of our classes
# 1.0 means "always consult the fallback" (the CNN answers only when it is exactly certain).
CNN_THRESHOLDS = tuple(np.round(np.arange(0.30, 0.951, 0.05), 2)) + (0.97, 0.99, 1.0)
MASS_THRESHOLDS = tuple(np.round(np.arange(0.10, 0.901, 0.05), 2))


def expected_classes(wnids, label_map, imagenet_wnids):
    """ImageNet wnids -> our class index per picture, or NONE."""
    position = {wnid: index for index, wnid in enumerate(imagenet_wnids)}
    targets = [label_map[position[wnid]] for wnid in wnids]
    return np.array([NONE if target is None else target for target in targets], dtype=np.int64)


def load_tuning_pictures(archive, per_class=10, seed=0, exclude_wnids=()):
    """Tiny ImageNet val minus the CNN's training synsets -> (uint8 (n, 64, 64, 3), wnids)."""
    training = {wnid for wnids in EXTRA_CLASS_WNIDS.values() for wnid in wnids} | set(exclude_wnids)
    wnids = sorted(set(tiny_imagenet_wnids(archive)) - training)
    x, y = load_tiny_imagenet_val(archive, wnids, Preprocessing(height=64, width=64))
    keep = balanced_sample(y, per_class, seed=seed)
    return x[keep], [wnids[label] for label in y[keep]]


def cached_imagenet_probabilities(classifier, pictures, key, cache_dir=".cache/fallback"):
    """classifier.predict(pictures), cached on disk under a key naming the model and the pictures."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"imagenet-probabilities-{digest}.npy"
    if path.exists():
        return np.load(path)
    probabilities = classifier.predict(list(pictures))
    with atomic_path(path) as temporary:
        np.save(temporary, probabilities)
    return probabilities


def evaluate_rule(rule, cnn_probabilities, ood_inlier, class_masses, targets, thumbnail=False):
    """Run rule.decide on every picture; class_masses are the fallback's, precomputed.

    Returns accuracy on pictures of our classes (a refusal counts as wrong), the refusal rate on
    pictures of none of ours, how often the fallback was consulted, and who answered.
    """
    targets = np.asarray(targets)
    answers = np.full(len(targets), NONE)
    answered_by = []
    consulted = 0
    for index in range(len(targets)):
        def consult(index=index):
            nonlocal consulted
            consulted += 1
            return class_masses[index]

        inlier = None if ood_inlier is None else ood_inlier[index]
        decision = rule.decide(cnn_probabilities[index], inlier, consult, thumbnail=thumbnail)
        answers[index] = NONE if decision.class_index is None else decision.class_index
        answered_by.append(decision.answered_by)
    answered_by = np.array(answered_by)
    ours, none, answered = targets != NONE, targets == NONE, answers != NONE
    return {
        "accuracy_ours": _mean(answers[ours] == targets[ours]),
        "refused_none": _mean(answers[none] == NONE),
        "balanced_score": (_mean(answers[ours] == targets[ours]) + _mean(answers[none] == NONE)) / 2,
        # Share of the answers given that are wrong (any answer to a picture of none of ours is).
        "answer_error": _mean(answers[answered] != targets[answered]) if answered.any() else 0.0,
        "consulted": consulted / max(1, len(targets)),
        "answered_by": {who: int(np.sum(answered_by == who)) for who in (CNN, FALLBACK, REFUSED)},
        "pictures_ours": int(ours.sum()),
        "pictures_none": int(none.sum()),
    }


def tune_rule(cnn_probabilities, ood_inlier, class_masses, targets, max_answer_error=0.25,
                cnn_thresholds=CNN_THRESHOLDS, mass_thresholds=MASS_THRESHOLDS, in_distribution=None):
    """Grid search for the thresholds. Returns (rule, its metrics, grid).

    Refusing is better than being wrong, so only threshold pairs whose answers are wrong at most
    max_answer_error of the time qualify; among them the best balanced score (mean of accuracy on
    our classes and refusal rate on the rest) wins. Ties go to the lower CNN threshold (fewer
    consultations), then to the higher mass threshold. With no pair qualifying, the pair with the
    fewest wrong answers wins.

    `in_distribution` (cnn_probabilities, ood_inlier, class_masses, targets) of held-out pictures
    from the CNN's own training distribution adds their accuracy as a third term of the score:
    without it, tuning on photos unlike the training set can switch the CNN off altogether."""
    candidates, grid = [], []
    for cnn_threshold in cnn_thresholds:
        for mass_threshold in sorted(mass_thresholds, reverse=True):
            rule = AnswerRule(float(cnn_threshold), float(mass_threshold))
            metrics = evaluate_rule(rule, cnn_probabilities, ood_inlier, class_masses, targets)
            if in_distribution is not None:
                home = evaluate_rule(rule, *in_distribution)
                metrics["accuracy_in_distribution"] = home["accuracy_ours"]
                metrics["balanced_score"] = (metrics["accuracy_ours"] + metrics["refused_none"] + home["accuracy_ours"]) / 3
            keys = ("accuracy_ours", "refused_none", "balanced_score", "answer_error", "consulted", "accuracy_in_distribution")
            grid.append({**rule.to_dict(), **{key: metrics[key] for key in keys if key in metrics}})
            candidates.append((rule, metrics))
    qualifying = [c for c in candidates if c[1]["answer_error"] <= max_answer_error]
    if qualifying:
        # max() keeps the first of equals: grid order encodes the tie-breaks.
        return (*max(qualifying, key=lambda c: round(c[1]["balanced_score"], 12)), grid)
    return (*min(candidates, key=lambda c: round(c[1]["answer_error"], 12)), grid)


def tune_thumbnail_threshold(rule, cnn_probabilities, ood_inlier, targets, in_distribution, thresholds=CNN_THRESHOLDS):
    """The CNN threshold for thumbnails (rule 2 of service.answer). Returns (rule, metrics, grid).

    The pictures are those of tune_rule, seen as the CNN sees them (its input size): the tuning
    pictures, and `in_distribution` (cnn_probabilities, ood_inlier, targets) of the CNN's own
    validation split. The best score (mean of accuracy on our classes, refusal rate on the rest,
    and accuracy in distribution) wins, ties to the lower threshold. No cap on wrong answers here:
    at our CNN's accuracy on ImageNet thumbnails no threshold keeps them under tune_rule's cap,
    and refusing every thumbnail would refuse the CIFAR-10 pictures the CNN knows best.
    """
    home_probabilities, home_inlier, home_targets = in_distribution
    best, grid = None, []
    for threshold in thresholds:
        candidate = replace(rule, thumbnail_cnn_threshold=float(threshold))
        # No fallback masses: the thumbnail rule never consults it.
        metrics = evaluate_rule(candidate, cnn_probabilities, ood_inlier, None, targets, thumbnail=True)
        home = evaluate_rule(candidate, home_probabilities, home_inlier, None, home_targets, thumbnail=True)
        metrics["accuracy_in_distribution"] = home["accuracy_ours"]
        metrics["wrong_in_distribution"] = 1.0 - home["accuracy_ours"] - home["answered_by"][REFUSED] / max(1, len(home_targets))
        metrics["balanced_score"] = (metrics["accuracy_ours"] + metrics["refused_none"] + home["accuracy_ours"]) / 3
        keys = ("accuracy_ours", "refused_none", "accuracy_in_distribution", "wrong_in_distribution", "balanced_score")
        grid.append({"thumbnail_cnn_threshold": float(threshold), **{key: metrics[key] for key in keys}})
        if best is None or round(metrics["balanced_score"], 12) > round(best[1]["balanced_score"], 12):
            best = (candidate, metrics)
    return (*best, grid)


def _mean(values):
    return float(np.mean(values)) if len(values) else float("nan")


def cnn_outputs(bundle, pictures):
    """The CNN's probabilities for pictures, and the bundle's OOD verdicts (None with no detector)."""
    embedding = bundle.embed(bundle.preprocess(list(pictures)))
    detector = getattr(bundle, "ood_detector", None)
    if detector is None:
        return embedding.probabilities, None
    features = getattr(embedding, detector.reads)
    verdicts = np.asarray(detector.predict(features, embedding.probabilities.argmax(axis=1)))
    return embedding.probabilities, verdicts == 1
