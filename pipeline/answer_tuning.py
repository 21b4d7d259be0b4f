"""Measuring and tuning the answer rule's thresholds (service.answer) on labelled pictures, as
people upload them: each path of the rule on pictures of its own kind.

- Photos (rule 3 and 4): the tune half of the data folder's imagenet-samples (even positions of
  the sorted file names; the odd half only ever measures, bench.photo_risk). Every photo is of an
  ImageNet-1k class, so the label map gives its expected answer: one of our classes, or "none of
  ours" (refuse). The thresholds that answer the most photos of ours right win among those whose
  answers to our photos are wrong at most max_answer_error of the time and that refuse at least
  min_refused_others of the other photos.
- Thumbnails (rule 2): 32-pixel pictures, the CNN's validation split (ours) and Tiny ImageNet val
  pictures of the "tune" classes (classifier.dataset.near_ood_wnids; never the odd ones, which
  measure). The threshold that answers the most validation pictures right wins among those that
  answer wrongly at most max_wrong of them and refuse at least min_refused_others of the others.
"""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from bundle.atomic import atomic_path
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
        "wrong_ours": _mean(answered[ours] & (answers[ours] != targets[ours])),
        # Share of the answers to pictures of ours that are wrong (the risk on our classes).
        "answer_error_ours": _mean(answers[ours & answered] != targets[ours & answered]) if (ours & answered).any() else 0.0,
        "refused_none": _mean(answers[none] == NONE),
        "balanced_score": (_mean(answers[ours] == targets[ours]) + _mean(answers[none] == NONE)) / 2,
        # Share of the answers given that are wrong (any answer to a picture of none of ours is).
        "answer_error": _mean(answers[answered] != targets[answered]) if answered.any() else 0.0,
        "consulted": consulted / max(1, len(targets)),
        "answered_by": {who: int(np.sum(answered_by == who)) for who in (CNN, FALLBACK, REFUSED)},
        "pictures_ours": int(ours.sum()),
        "pictures_none": int(none.sum()),
    }


def tune_rule(cnn_probabilities, ood_inlier, class_masses, targets, max_answer_error=0.01, min_refused_others=0.995,
              cnn_thresholds=CNN_THRESHOLDS, mass_thresholds=MASS_THRESHOLDS):
    """Grid search for the photo thresholds. Returns (rule, its metrics, grid).

    A pair qualifies when at most max_answer_error of its answers to our photos are wrong and it
    refuses at least min_refused_others of the other photos; among those, the one that answers
    the most of our photos right wins (ties: more others refused, then the earlier pair in grid
    order, lower CNN threshold first). With none qualifying, the pair with the fewest wrong answers."""
    candidates, grid = [], []
    for cnn_threshold in cnn_thresholds:
        for mass_threshold in sorted(mass_thresholds, reverse=True):
            rule = AnswerRule(float(cnn_threshold), float(mass_threshold))
            metrics = evaluate_rule(rule, cnn_probabilities, ood_inlier, class_masses, targets)
            keys = ("accuracy_ours", "wrong_ours", "answer_error_ours", "refused_none", "answer_error", "consulted")
            grid.append({**rule.to_dict(), **{key: metrics[key] for key in keys}})
            candidates.append((rule, metrics))
    qualifying = [c for c in candidates
                  if c[1]["answer_error_ours"] <= max_answer_error and c[1]["refused_none"] >= min_refused_others]
    if qualifying:
        # max() keeps the first of equals: grid order encodes the last tie-break.
        return (*max(qualifying, key=lambda c: (round(c[1]["accuracy_ours"], 12), round(c[1]["refused_none"], 12))), grid)
    return (*min(candidates, key=lambda c: round(c[1]["answer_error"], 12)), grid)


def tune_thumbnail_threshold(rule, ours, others, max_wrong=0.015, min_refused_others=0.75, thresholds=CNN_THRESHOLDS):
    """The CNN threshold for thumbnails (rule 2 of service.answer). Returns (rule, metrics, grid).

    `ours` (cnn_probabilities, ood_inlier, targets) are 32-pixel pictures of our classes, `others`
    (cnn_probabilities, ood_inlier) 32-pixel pictures of none of them. A threshold qualifies when
    it answers at most max_wrong of ours wrongly and refuses at least min_refused_others of the
    others; the one answering the most of ours right wins, ties to the lower threshold. With none
    qualifying, the one with the fewest wrong answers on ours.
    """
    probabilities, inlier, targets = ours
    other_probabilities, other_inlier = others
    candidates, grid = [], []
    for threshold in thresholds:
        candidate = replace(rule, thumbnail_cnn_threshold=float(threshold))
        # No fallback masses: the thumbnail rule never consults it.
        home = evaluate_rule(candidate, probabilities, inlier, None, targets, thumbnail=True)
        away = evaluate_rule(candidate, other_probabilities, other_inlier, None, np.full(len(other_probabilities), NONE), thumbnail=True)
        metrics = {"right": home["accuracy_ours"], "wrong": home["wrong_ours"], "refused_others": away["refused_none"],
                   "pictures_ours": home["pictures_ours"], "pictures_others": away["pictures_none"]}
        grid.append({"thumbnail_cnn_threshold": float(threshold), **metrics})
        candidates.append((candidate, metrics))
    qualifying = [c for c in candidates if c[1]["wrong"] <= max_wrong and c[1]["refused_others"] >= min_refused_others]
    if qualifying:
        return (*max(qualifying, key=lambda c: round(c[1]["right"], 12)), grid)
    return (*min(candidates, key=lambda c: round(c[1]["wrong"], 12)), grid)


def tune_teaching_threshold(rule, class_masses, targets, min_precision=0.99, thresholds=MASS_THRESHOLDS):
    """The lowest fallback mass, no lower than the rule's own, at which the fallback's answers to
    photos (of ours or not) are right at least min_precision of the time: those answers become
    learning material. 1.0 (teach nothing) when no threshold is that sure."""
    masses, targets = np.asarray(class_masses), np.asarray(targets)
    for threshold in sorted(t for t in thresholds if t >= rule.fallback_mass_threshold):
        taught = masses.max(1) >= threshold
        if taught.sum() and np.mean(masses[taught].argmax(1) == targets[taught]) >= min_precision:
            return replace(rule, teach_mass_threshold=float(threshold)), {
                "threshold": float(threshold), "taught": int(taught.sum()), "of": len(targets),
                "right": float(np.mean(masses[taught].argmax(1) == targets[taught])), "min_precision": min_precision}
    return replace(rule, teach_mass_threshold=1.0), {"threshold": 1.0, "taught": 0, "of": len(targets), "min_precision": min_precision}


def _mean(values):
    return float(np.mean(values)) if len(values) else float("nan")


def cnn_outputs(bundle, pictures, with_scores=False):
    """The CNN's probabilities for pictures, and the bundle's OOD verdicts (None with no detector);
    with_scores, also the detector's decision_function (below 0: refused; None with no detector)."""
    embedding = bundle.embed(bundle.preprocess(list(pictures)))
    detector = getattr(bundle, "ood_detector", None)
    if detector is None:
        return (embedding.probabilities, None, None) if with_scores else (embedding.probabilities, None)
    scores = np.asarray(detector.decision_function(getattr(embedding, detector.reads), embedding.probabilities.argmax(axis=1)))
    return (embedding.probabilities, scores >= 0, scores) if with_scores else (embedding.probabilities, scores >= 0)


RISK_GOALS = (0.005, 0.01, 0.02, 0.05)


def risk_coverage(scores, answers, targets):
    """[(threshold, risk, coverage of ours, others refused)] for every distinct score, highest
    first: answer a picture when its score clears the threshold, with `answers`' class; risk =
    wrong answers among all answers (an answered picture of none of ours is wrong), coverage =
    share of the pictures of ours answered right."""
    ours = targets != NONE
    rows = []
    for threshold in np.unique(scores)[::-1]:
        answered = scores >= threshold
        right = answered & (answers == targets)
        wrong = answered & ~(answers == targets)
        risk = wrong.sum() / max(answered.sum(), 1)
        others_refused = float((~answered[~ours]).mean()) if (~ours).any() else float("nan")
        rows.append((float(threshold), float(risk), float(right[ours].mean()), others_refused))
    return rows


def best_at(rows, goal):
    """The row with the most coverage whose risk is within `goal`, or None."""
    within = [row for row in rows if row[1] <= goal]
    return max(within, key=lambda row: row[2]) if within else None


def risk_coverage_table(candidates, targets, goals=RISK_GOALS):
    """{candidate: {risk goal: {threshold, coverage, others_refused} or None}} for candidates
    {name: (scores, answers)}: the most each score answers right within each risk."""
    table = {}
    for name, (scores, answers) in candidates.items():
        rows = risk_coverage(np.asarray(scores), np.asarray(answers), np.asarray(targets))
        table[name] = {f"{goal:.3f}": None if (row := best_at(rows, goal)) is None else
                       {"threshold": row[0], "coverage": row[2], "others_refused": row[3]} for goal in goals}
    return table


def format_risk_coverage(table):
    lines = []
    for name, goals in table.items():
        cells = [f"risk <= {float(goal):.1%}: " + ("never" if row is None else f"{row['coverage']:.1%} of ours right, "
                 f"{row['others_refused']:.1%} of others refused (threshold {row['threshold']:.3f})") for goal, row in goals.items()]
        lines.append(f"  {name}: " + "; ".join(cells))
    return "\n".join(lines)
