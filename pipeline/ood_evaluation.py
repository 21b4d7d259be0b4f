"""The OOD table: every candidate detector, fitted and calibrated alike, against each OOD set.

    detectors = fit_candidates(config, train, val, weights, bias, n_classes)
    table = ood_table(detectors, test, {"near_ood": near, "far_ood": far, ...})

Each split is a dict with "features", "ood_features" and "logits" (and "labels" for train/val); a
detector scores the array it reads (its `reads`) with the class the CNN predicts for it. AUROC and
FPR@95%TPR treat in-distribution as the positive class and use decision_function, the score the
app thresholds.
"""

import numpy as np

from classifier.figures import pyplot, save_figure

from ood.baselines import ActivationShaping, EnergyScore, FeatureNorm, KNearestNeighbours, Mahalanobis, MaxSoftmax
from ood.combined import CombinedScore
from ood.detectors import MIN_CALIBRATION_SAMPLES
from ood.forests import ClassIsolationForests, GlobalIsolationForest
from ood.neighbourhood import NeighbourhoodScore

METHODS = ("class_isolation_forests", "global_isolation_forest", "msp", "energy", "mahalanobis", "mahalanobis_unit",
           "knn", "ash", "feature_norm", "forests_ash_norm", "neighbourhood")


def make_detector(method, config, weights, bias, n_classes):
    """An unfitted detector for one of METHODS, with the settings in `config` (an OODConfig)."""
    forest = dict(n_estimators=config.n_estimators, max_samples=config.max_samples, normalize=config.normalize,
                  n_components=config.n_components, residual=config.residual, n_classes=n_classes,
                  random_state=config.seed)
    makers = {
        "class_isolation_forests": lambda: ClassIsolationForests(**forest),
        "global_isolation_forest": lambda: GlobalIsolationForest(**forest),
        "msp": lambda: MaxSoftmax(weights, bias, n_classes=n_classes),
        "energy": lambda: EnergyScore(weights, bias, n_classes=n_classes),
        "mahalanobis": lambda: Mahalanobis(n_classes=n_classes),
        "mahalanobis_unit": lambda: Mahalanobis(normalize=True, n_classes=n_classes),
        "knn": lambda: KNearestNeighbours(k=config.knn_k, n_classes=n_classes),
        "ash": lambda: ActivationShaping(weights, bias, percentile=config.ash_percentile, n_classes=n_classes),
        "feature_norm": lambda: FeatureNorm(n_classes=n_classes),
        "forests_ash_norm": lambda: CombinedScore([
            ("forests", ClassIsolationForests(**forest)),
            ("ash", ActivationShaping(weights, bias, percentile=config.ash_percentile)),
            ("norm", FeatureNorm()),
        ], n_classes=n_classes),
        "neighbourhood": lambda: NeighbourhoodScore(bank_per_class=config.neighbourhood_bank_per_class, k=config.neighbourhood_k,
                                                    random_state=config.seed, n_classes=n_classes),
    }
    if method not in makers:
        raise ValueError(f"Unknown OOD method {method!r}; choose from {METHODS}.")
    return makers[method]()


def predicted(split):
    return np.asarray(split["logits"]).argmax(axis=1)


def true_positives(split, reads="features"):
    """Features (or the split's `reads` array) and labels of the samples the CNN classifies correctly."""
    keep = predicted(split) == np.asarray(split["labels"])
    return np.asarray(read(split, reads))[keep], np.asarray(split["labels"])[keep]


def read(split, reads):
    """The array a detector reads from a split (bundle.embedding.Embedding's field of that name)."""
    return split[reads]


def fit_candidates(config, train, val, weights, bias, n_classes, methods=METHODS):
    """Fit each method on the training true positives; calibrate on the validation images (all of
    them by their predicted class, as uploads arrive, or only the correctly classified ones, as
    config.calibration_images says)."""
    detectors = {}
    for method in methods:
        detector = make_detector(method, config, weights, bias, n_classes)
        train_x, train_y = true_positives(train, detector.reads)
        if len(train_y) < MIN_CALIBRATION_SAMPLES:  # the same for an untrained model: all images
            train_x, train_y = np.asarray(read(train, detector.reads)), np.asarray(train["labels"])
        val_x, val_y = true_positives(val, detector.reads)
        # All of them when asked, or when the model gets too few right (smoke tests).
        if config.calibration_images == "all" or len(val_y) < MIN_CALIBRATION_SAMPLES:
            val_x, val_y = np.asarray(read(val, detector.reads)), predicted(val)
        detectors[method] = detector.fit(train_x, train_y).calibrate(val_x, val_y, config.tpr)
    return detectors


def auroc(id_scores, ood_scores):
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    return float(roc_auc_score(labels, np.r_[id_scores, ood_scores]))


def fpr_at_tpr(id_scores, ood_scores, tpr=0.95):
    """Fraction of OOD samples accepted at the threshold that keeps `tpr` of the ID samples."""
    threshold = np.quantile(id_scores, 1.0 - tpr, method="lower")
    return float(np.mean(np.asarray(ood_scores) >= threshold))


def decisions(detector, splits):
    return {name: detector.decision_function(read(split, detector.reads), predicted(split)) for name, split in splits.items()}


def ood_table(detectors, test, ood_sets, extra_id_sets=None, id_groups=None):
    """{method: {set: {"auroc", "fpr_at_95_tpr", "accepted"}, "id_refusal_rate": ...}}.

    "accepted" is the fraction of an OOD set the calibrated detector lets through; the refusal
    rates are on all of the ID test split and on its correctly classified part. `extra_id_sets`
    (e.g. real photos of our classes) get a refusal rate only. `id_groups` ({name: boolean mask
    over the test split}) adds, per set, the AUROC against each part of the test split alone and,
    per group, its refusal rate.
    """
    correct = predicted(test) == np.asarray(test["labels"])
    table = {}
    for method, detector in detectors.items():
        scores = decisions(detector, {"test": test, **ood_sets, **(extra_id_sets or {})})
        id_scores = scores.pop("test")
        row = {}
        for name in ood_sets:
            row[name] = {
                "auroc": auroc(id_scores, scores[name]),
                "fpr_at_95_tpr": fpr_at_tpr(id_scores, scores[name], 0.95),
                "accepted": float(np.mean(scores[name] >= 0)),
            }
            if id_groups:
                row[name]["auroc_by_id_group"] = {group: auroc(id_scores[mask], scores[name])
                                                  for group, mask in id_groups.items() if np.any(mask)}
        row["mean_auroc"] = float(np.mean([row[name]["auroc"] for name in ood_sets]))
        row["id_refusal_rate"] = float(np.mean(id_scores < 0))
        row["id_refusal_rate_correct"] = float(np.mean(id_scores[correct] < 0)) if correct.any() else None
        for group, mask in (id_groups or {}).items():
            if np.any(mask):
                row[f"{group}_refusal_rate"] = float(np.mean(id_scores[mask] < 0))
        for name in extra_id_sets or {}:
            row[f"{name}_refusal_rate"] = float(np.mean(scores[name] < 0))
        table[method] = row
    return table


def choose(table, default="class_isolation_forests", margin=0.02):
    """The default unless another method's mean AUROC is higher by at least `margin` and it is
    no worse on any set by more than `margin`; returns (method, reason)."""
    sets = [name for name, value in table[default].items() if isinstance(value, dict)]
    best, best_gain = default, 0.0
    for method, row in table.items():
        gain = row["mean_auroc"] - table[default]["mean_auroc"]
        no_worse = all(row[name]["auroc"] >= table[default][name]["auroc"] - margin for name in sets)
        if gain >= margin and no_worse and gain > best_gain:
            best, best_gain = method, gain
    if best == default:
        return default, f"{default}: no method beats its mean AUROC by {margin} or more without losing on a set"
    return best, (
        f"{best}: mean AUROC {table[best]['mean_auroc']:.3f} vs {table[default]['mean_auroc']:.3f} for {default} "
        f"(margin {margin}), no worse than {margin} below it on any set"
    )


def format_table(table):
    """The table as aligned text, one line per method."""
    sets = [name for name, value in next(iter(table.values())).items() if isinstance(value, dict)]
    header = f"{'method':<26}" + "".join(f"{name + ' AUROC':>18}{'FPR95':>7}" for name in sets) + f"{'ID refused':>12}"
    lines = [header]
    for method, row in table.items():
        cells = "".join(f"{row[name]['auroc']:>18.3f}{row[name]['fpr_at_95_tpr']:>7.3f}" for name in sets)
        lines.append(f"{method:<26}{cells}{row['id_refusal_rate']:>12.3f}")
    return "\n".join(lines)


def plot_histograms(detector, test, ood_sets, path, title=""):
    """Histograms of decision_function: ID test vs each OOD set, the threshold at 0."""
    plt = pyplot()
    scores = decisions(detector, {"ID test": test, **ood_sets})
    low, high = np.percentile(np.concatenate(list(scores.values())), [0.5, 99.5])
    bins = np.linspace(low, high, 60)
    figure, axes = plt.subplots(1, len(ood_sets), figsize=(4.5 * len(ood_sets), 3.4), sharey=True, squeeze=False)
    for axis, name in zip(axes[0], ood_sets):
        for shown in ("ID test", name):
            refused = np.mean(scores[shown] < 0)
            axis.hist(np.clip(scores[shown], low, high), bins, density=True, alpha=0.6,
                      label=f"{shown} (n={len(scores[shown])}, {refused:.0%} refused)")
        axis.axvline(0.0, color="black", linestyle="--", linewidth=1, label="threshold")
        axis.set_xlabel("decision_function (< 0: refused)")
        axis.set_title(f"ID test vs {name}")
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("density")
    figure.suptitle(title or type(detector).__name__)
    figure.tight_layout()
    return save_figure(figure, path, dpi=110)
