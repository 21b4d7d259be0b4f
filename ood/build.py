"""The pipeline's OOD stage: fit every candidate, measure them on three OOD sets, ship one.

    metrics = build(bundle, dataset, embeddings, out_dir)   # called by pipeline.build

Writes out_dir/ood_detector.joblib, out_dir/noise_gate.json (ood.noise: refuses pure noise before
the CNN is asked), out_dir/ood_config.json and out_dir/figures/ood_histograms.png; returns the
table and the choice for metrics.json["ood"].
"""

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ood.evaluate import METHODS, choose, fit_candidates, format_table, ood_table, plot_histograms, predicted
from ood.wordnet import OURS_ANCESTORS

# The acceptance targets of the OOD stage, checked and reported in the metrics.
TARGETS = {"near_ood_auroc": 0.85, "far_ood_auroc": 0.95, "id_refusal_rate": 0.05}


@dataclass(frozen=True)
class OODConfig:
    tpr: float = 0.95  # of the calibration images kept by the thresholds
    # "all": every validation image, grouped by its predicted class, as uploads come (right or
    # wrong); "correct": only the correctly classified ones, grouped by their class.
    calibration_images: str = "all"
    # ClassIsolationForests (and the global forest baseline)
    n_estimators: int = 200
    max_samples: int = 256
    normalize: bool = True
    n_components: int = 32
    residual: bool = True
    knn_k: int = 50
    ash_percentile: float = 80  # ASH-S prunes each sample's features below this percentile
    seed: int = 0
    methods: tuple = METHODS
    default_method: str = "class_isolation_forests"
    # Another method is shipped only if it beats the default's mean AUROC by this much.
    choose_margin: float = 0.02
    # OOD sets: Tiny ImageNet val/ of classes not ours (None = all), MNIST test digits, and the
    # ImageNet sample photos of classes not ours; the photos of our classes get a refusal rate.
    near_ood_limit: int | None = None
    far_ood_limit: int | None = 5000
    use_photos: bool = True
    ancestor_wnids: tuple = OURS_ANCESTORS
    # "ours": the sets above, defined against our 13 classes by WordNet. "any": a bundle built on
    # another dataset (classifier.custom_dataset) is measured on `any_sets`: "tiny_imagenet_val",
    # every Tiny ImageNet val class whose name is not one of the bundle's, and "mnist" digits.
    evaluation: str = "ours"
    any_sets: tuple = ("tiny_imagenet_val", "mnist")


def build(bundle, dataset, embeddings, out_dir, config=OODConfig()):
    from classifier.bundle import OOD_FILE
    from ood.baselines import logit_weights

    if config.default_method not in config.methods:
        raise ValueError(f"default_method {config.default_method!r} must be one of methods {config.methods}.")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    n_classes = len(dataset.class_names)
    original = ~np.asarray(dataset.train_augmented) if dataset.train_augmented is not None else slice(None)
    train = _split(embeddings["train"], dataset.y_train, original)
    val = _split(embeddings["val"], dataset.y_val)
    test = _split(embeddings["test"], dataset.y_test)

    weights, bias = logit_weights(bundle.model)
    detectors = fit_candidates(config, train, val, weights, bias, n_classes, config.methods)
    if config.evaluation not in ("ours", "any"):
        raise ValueError(f"evaluation must be 'ours' or 'any', not {config.evaluation!r}.")
    ood_sets, extra_id_sets, sizes, images = (_ood_sets if config.evaluation == "ours" else _any_ood_sets)(bundle, config)
    sizes.update({"id_test": len(test["labels"]), "train_true_positives": int(np.sum(predicted(train) == train["labels"])),
                  "val_true_positives": int(np.sum(predicted(val) == val["labels"]))})
    table = ood_table(detectors, test, ood_sets, extra_id_sets, id_groups=_id_groups(dataset, config))
    print(format_table(table), flush=True)

    chosen, reason = choose(table, config.default_method, config.choose_margin)
    detector = detectors[chosen]
    detector.save(out_dir / OOD_FILE)
    plot_histograms(detector, test, ood_sets, out_dir / "figures" / "ood_histograms.png",
                    title=f"{chosen}: decision_function, thresholds keep {config.tpr:.0%} of {config.calibration_images} val images")
    noise_gate = _noise_gate(bundle, dataset, original, {"id_test": dataset.x_test, **images}, out_dir)
    _write_json(out_dir / "ood_config.json", asdict(config))

    row = table[chosen]
    baselines = [m for m in table if m not in ("class_isolation_forests", "global_isolation_forest")]
    best_baseline = max(baselines, key=lambda m: table[m]["mean_auroc"]) if baselines else None
    return {
        "table": table,
        "chosen": chosen,
        "reason": reason,
        "detector_class": type(detector).__name__,
        "tpr": config.tpr,
        "thresholds": [float(t) for t in detector.thresholds_],
        "id_refusal_rate": row["id_refusal_rate"],
        "id_refusal_rate_correct": row["id_refusal_rate_correct"],
        "best_baseline": best_baseline,
        "targets": _targets(row, table, chosen, best_baseline) if config.evaluation == "ours" else {},
        "sizes": sizes,
        "noise_gate": noise_gate,
        "seconds": time.perf_counter() - started,
    }


def _split(embedding, labels, keep=slice(None)):
    return {"features": embedding.features[keep], "logits": embedding.logits[keep], "labels": np.asarray(labels)[keep]}


def _ood_sets(bundle, config):
    from ood.datasets import far_ood_images, imagenet_photos, near_ood_images

    images = {
        "near_ood": near_ood_images(bundle.preprocessing, config.near_ood_limit, ancestor_wnids=config.ancestor_wnids),
        "far_ood": far_ood_images(bundle.preprocessing, config.far_ood_limit),
    }
    extra = {}
    if config.use_photos:
        images["photos_ood"] = imagenet_photos(bundle.preprocessing, "non_ours", ancestor_wnids=config.ancestor_wnids)
        extra["photos_ours"] = imagenet_photos(bundle.preprocessing, "ours", ancestor_wnids=config.ancestor_wnids)
    sizes = {name: len(x) for name, x in {**images, **extra}.items()}
    return ({name: _embedded(bundle, x) for name, x in images.items() if len(x)},
            {name: _embedded(bundle, x) for name, x in extra.items() if len(x)}, sizes, {**images, **extra})


def _any_ood_sets(bundle, config):
    from ood.datasets import far_ood_images, tiny_imagenet_val_except

    images = {}
    if "tiny_imagenet_val" in config.any_sets:
        images["tiny_imagenet_val"] = tiny_imagenet_val_except(bundle.class_names, bundle.preprocessing, config.near_ood_limit)
    if "mnist" in config.any_sets:
        images["mnist"] = far_ood_images(bundle.preprocessing, config.far_ood_limit)
    sizes = {name: len(x) for name, x in images.items()}
    return {name: _embedded(bundle, x) for name, x in images.items() if len(x)}, {}, sizes, images


def _id_groups(dataset, config):
    """Our test split is CIFAR-10 pictures plus the extra classes' Tiny ImageNet pictures; the
    near-OOD set is Tiny ImageNet too. AUROC against each part shows how much of the figure is
    content and how much the look of the source (downscaled 64-pixel pictures are sharper)."""
    if config.evaluation != "ours":
        return None
    from classifier.labels import CIFAR10_CLASSES

    labels = np.asarray(dataset.y_test)
    cifar10 = labels < len(CIFAR10_CLASSES)
    return {"cifar10_test": cifar10, "extra_classes_test": ~cifar10}


def _noise_gate(bundle, dataset, original, image_sets, out_dir):
    """Fit the noise gate on the original training pictures and save it; returns its metrics:
    the thresholds and the share of each picture set it refuses (real pictures: about none)."""
    from classifier.bundle import NOISE_GATE_FILE
    from ood.noise import NoiseGate

    pictures = np.asarray(dataset.x_train)
    if not len(pictures):
        return {"skipped": "no training pictures were given (features only)"}
    try:
        gate = NoiseGate(bundle.preprocessing).fit(pictures[original])
    except ValueError as error:  # a dataset with noise-like pictures of its own: no gate
        return {"skipped": str(error)}
    _write_json(out_dir / NOISE_GATE_FILE, gate.to_dict())
    refused = {name: float(np.mean(gate.predict(x) < 0)) for name, x in image_sets.items() if len(x)}
    return {**gate.to_dict(), "refused": refused}


def _embedded(bundle, x):
    out = bundle.embed(x)
    return {"features": out.features, "logits": out.logits}


def _targets(row, table, chosen, best_baseline):
    targets = {
        "near_ood_auroc >= 0.85": row.get("near_ood", {}).get("auroc", 0.0) >= TARGETS["near_ood_auroc"],
        "far_ood_auroc >= 0.95": row.get("far_ood", {}).get("auroc", 0.0) >= TARGETS["far_ood_auroc"],
        "id_refusal_rate <= 0.05": row["id_refusal_rate"] <= TARGETS["id_refusal_rate"],
        "id_refusal_rate_correct <= 0.05": (row["id_refusal_rate_correct"] or 0.0) <= TARGETS["id_refusal_rate"],
    }
    if best_baseline is not None:
        targets["mean_auroc >= best baseline's"] = row["mean_auroc"] >= table[best_baseline]["mean_auroc"]
    return targets


def _write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=2, default=str))
    os.replace(temporary, path)
