"""Build stage: fit every OOD candidate, measure them on the OOD sets there are, ship one; fit the
noise gate.

    metrics = run(context, OODConfig())        # called by pipeline.build

Writes ood_detector.joblib, noise_gate.json, ood_config.json and figures/ood_histograms.png;
returns the table and the choice for metrics.json["ood"].

The detector is chosen on sets that tune and measured on sets that nothing fitted or chose on:
the choice table scores the validation split against the "_tune" sets (Tiny ImageNet classes
at even positions held out of outlier exposure, the tune half of the photos, half of MNIST);
the reported table scores the test split against the sets below.
The OOD sets, each used when its data is there (a line in "skipped" says which were not):
- near_ood: Tiny ImageNet val/ of the classes that are not ours, at odd positions of the sorted
  200 wnids (data folder; classifier.dataset.near_ood_wnids);
- near_ood_cifar100: with the official CIFAR data, CIFAR-100 test pictures of the 17 other
  superclasses (OpenOOD v1.5's CIFAR-10 protocol);
- far_ood: MNIST test digits (data folder's mnist/, or mnist.npz beside the CIFAR folders), the
  odd rows (the even rows tune);
- photos_ood: full-size ImageNet photos of classes not ours, the bench half; the photos of our
  classes get a refusal rate (photos_ours).
A bundle built on another dataset is measured on every Tiny ImageNet val class that is not its own,
and on MNIST unless it is MNIST.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bundle.atomic import write_json_atomic
from bundle.labels import CIFAR100_COARSE_CLASSES, CIFAR10_CLASSES
from classifier.readers import is_mnist_folder, load_cifar_pickle
from classifier.wordnet import OURS_ANCESTORS
from classifier.ood_sets import far_ood_images, imagenet_photos, near_ood_images, tiny_imagenet_val_except
from pipeline.ood_evaluation import METHODS, choose, fit_candidates, format_table, ood_table, plot_histograms, predicted
from ood.noise import NoiseGate
from bundle.files import NOISE_GATE_FILE, OOD_FILE

TUNE = "_tune"  # the OOD sets the detector is chosen on; the others only measure
# The acceptance targets of the OOD stage, checked and reported in the metrics.
TARGETS = {"near_ood_auroc": 0.85, "far_ood_auroc": 0.95, "id_refusal_rate": 0.05}
# The published post-hoc scores in the table (ood.baselines); the chosen detector is held against
# the best of them. The forests and the neighbourhood score are our own candidates, not baselines.
BASELINES = ("msp", "energy", "mahalanobis", "mahalanobis_unit", "knn", "ash", "feature_norm")


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
    # NeighbourhoodScore: training pictures kept per class (the same for every class), neighbours.
    neighbourhood_bank_per_class: int = 200
    neighbourhood_k: int = 20
    seed: int = 0
    methods: tuple = METHODS
    # The design's detector: the per-class isolation forests, with ASH-S energy and the features'
    # length beside them (ood.CombinedScore). Another method is shipped only if it beats the
    # default's mean AUROC by choose_margin: differences below that are noise between sets.
    default_method: str = "forests_ash_norm"
    choose_margin: float = 0.02
    near_ood_limit: int | None = None
    far_ood_limit: int | None = 5000
    use_photos: bool = True
    ancestor_wnids: tuple = OURS_ANCESTORS


def run(context, config=OODConfig()):
    if config.default_method not in config.methods:
        raise ValueError(f"default_method {config.default_method!r} must be one of methods {config.methods}.")
    from ood.baselines import logit_weights

    started = time.perf_counter()
    dataset, bundle, embeddings = context.dataset, context.bundle, context.embeddings
    original = ~np.asarray(dataset.train_augmented) if dataset.train_augmented is not None else slice(None)
    train = _split(embeddings["train"], dataset.y_train, original)
    val = _split(embeddings["val"], dataset.y_val)
    test = _split(embeddings["test"], dataset.y_test)

    weights, bias = logit_weights(context.keras_model())
    detectors = fit_candidates(config, train, val, weights, bias, len(dataset.class_names), config.methods)
    images, id_images, skipped = _ood_images(context, config)
    embedded = {name: _embedded(bundle, x) for name, x in {**images, **id_images}.items() if len(x)}
    ood_sets = {name: embedded[name] for name in images if name in embedded and not name.endswith(TUNE)}
    extra_id_sets = {name: embedded[name] for name in id_images if name in embedded and not name.endswith(TUNE)}
    tune_sets = {name: embedded[name] for name in images if name in embedded and name.endswith(TUNE)}
    tune_id_sets = {name: embedded[name] for name in id_images if name in embedded and name.endswith(TUNE)}
    sizes = {name: len(x) for name, x in {**images, **id_images}.items()}
    sizes.update({"id_test": len(test["labels"]), "train_true_positives": int(np.sum(predicted(train) == train["labels"])),
                  "val_true_positives": int(np.sum(predicted(val) == val["labels"]))})
    out = {"sizes": sizes, "skipped": skipped}
    gate = _noise_gate(context, original, {"id_test": dataset.x_test, **images, **id_images})
    if not ood_sets:
        # Nothing to measure against: ship the default, calibrated, and say so.
        chosen, reason, table = config.default_method, "no OOD set could be loaded: the default, unmeasured", {}
    else:
        ours = _is_ours(dataset)
        # Chosen on what tunes (the validation split against the _tune sets), where there are any.
        choice_table = ood_table(detectors, val, tune_sets, tune_id_sets) if tune_sets else None
        table = ood_table(detectors, test, ood_sets, extra_id_sets, id_groups=_id_groups(dataset) if ours else None)
        if choice_table:
            print("chosen on:\n" + format_table(choice_table), flush=True)
            out["choice_table"] = choice_table
        print(format_table(table), flush=True)
        chosen, reason = choose(choice_table or table, config.default_method, config.choose_margin)
        plot_histograms(detectors[chosen], test, ood_sets, context.out_dir / "figures" / "ood_histograms.png",
                        title=f"{chosen}: decision_function, thresholds keep {config.tpr:.0%} of {config.calibration_images} val images")
        out["targets"] = _targets(table, chosen) if ours else {}
    detector = detectors[chosen]
    detector.save(context.out_dir / OOD_FILE)
    bundle.ood_detector = detector
    write_json_atomic(context.out_dir / "ood_config.json", asdict(config))
    out.update({
        "table": table, "chosen": chosen, "reason": reason, "detector_class": type(detector).__name__, "tpr": config.tpr,
        "thresholds": [float(t) for t in detector.thresholds_], "noise_gate": gate,
        "seconds": time.perf_counter() - started,
    })
    if table:
        row = table[chosen]
        out.update({"id_refusal_rate": row["id_refusal_rate"], "id_refusal_rate_correct": row["id_refusal_rate_correct"],
                    "best_baseline": best_baseline(table, chosen)})
    return out


def refit(context, config=OODConfig()):
    """Fit config.default_method alone on the training and validation features and ship it, with no
    table (the learning step: the kind was chosen by the build, and pipeline.gate measures the
    result); the noise gate, which reads pixels, stays as it is."""
    from ood.baselines import logit_weights

    started = time.perf_counter()
    dataset, embeddings = context.dataset, context.embeddings
    original = ~np.asarray(dataset.train_augmented) if dataset.train_augmented is not None else slice(None)
    train, val = _split(embeddings["train"], dataset.y_train, original), _split(embeddings["val"], dataset.y_val)
    weights, bias = logit_weights(context.keras_model())
    detector = fit_candidates(config, train, val, weights, bias, len(dataset.class_names), (config.default_method,))[config.default_method]
    detector.save(context.out_dir / OOD_FILE)
    context.bundle.ood_detector = detector
    write_json_atomic(context.out_dir / "ood_config.json", asdict(config))
    return {"chosen": config.default_method, "reason": "refitted by the learning step: the kind the build chose",
            "detector_class": type(detector).__name__, "tpr": config.tpr,
            "thresholds": [float(t) for t in detector.thresholds_], "seconds": time.perf_counter() - started}


def _is_ours(dataset):
    return tuple(dataset.class_names[: len(CIFAR10_CLASSES)]) == CIFAR10_CLASSES


def _split(embedding, labels, keep=slice(None)):
    return {"features": embedding.features[keep], "ood_features": embedding.ood_features[keep], "logits": embedding.logits[keep],
            "labels": np.asarray(labels)[keep]}


def _ood_images(context, config):
    """({OOD set: uint8 pictures}, {in-distribution photo set: pictures}, [what was skipped and why])."""
    p, data, skipped = context.bundle.preprocessing, context.data_config, []
    images, id_images = {}, {}
    tiny = context.data_path("tiny-imagenet-subset.tgz")
    ours = _is_ours(context.dataset)
    if tiny is None:
        skipped.append("Tiny ImageNet near-OOD set: no tiny-imagenet-subset.tgz in the data folder")
    elif ours:
        images["near_ood"] = near_ood_images(context.data_dir, p, config.near_ood_limit)
        images["near_ood" + TUNE] = near_ood_images(context.data_dir, p, config.near_ood_limit, positions="tune")
    else:
        images["tiny_imagenet_val"] = tiny_imagenet_val_except(context.data_dir, context.dataset.class_names, p, config.near_ood_limit)
    if ours and data.cifar_dir:
        images["near_ood_cifar100"] = _cifar100_others(Path(data.cifar_dir), data.extra_classes, p, config.near_ood_limit)
    mnist = _mnist_source(context)
    if mnist is None:
        skipped.append("MNIST far-OOD set: no mnist/ in the data folder and no mnist.npz beside the CIFAR folders")
    elif not (data.source and is_mnist_folder(data.source)):  # digits are no OOD set for a digit bundle
        digits = far_ood_images(mnist, p, None if config.far_ood_limit is None else 2 * config.far_ood_limit)
        images["far_ood"], images["far_ood" + TUNE] = digits[1::2], digits[0::2]
    photos = context.data_path("imagenet-samples")
    if ours and config.use_photos and photos is not None and context.data_path("wordnet") is not None:
        for half, suffix in (("bench", ""), ("tune", TUNE)):
            images["photos_ood" + suffix] = imagenet_photos(context.data_dir, p, "non_ours", ancestor_wnids=config.ancestor_wnids, half=half)
            id_images["photos_ours" + suffix] = imagenet_photos(context.data_dir, p, "ours", ancestor_wnids=config.ancestor_wnids, half=half)
    elif ours and config.use_photos:
        skipped.append("real-photo OOD set: no imagenet-samples/ and wordnet/ in the data folder")
    return images, id_images, skipped


def _mnist_source(context):
    if context.data_path("mnist") is not None:
        return context.data_path("mnist")
    cifar_dir = context.data_config.cifar_dir
    if cifar_dir and (Path(cifar_dir) / "mnist.npz").exists():
        return Path(cifar_dir) / "mnist.npz"
    return None


def _cifar100_others(cifar_dir, ours, preprocessing, limit):
    """CIFAR-100 test pictures of the superclasses that are not ours, spread evenly if limited."""
    from classifier.dataset import CIFAR100_PICKLES, _conform

    others = tuple(name for name in CIFAR100_COARSE_CLASSES if name not in ours)
    x, _, _ = load_cifar_pickle(cifar_dir / CIFAR100_PICKLES, "test", others, label_mode="coarse")
    if limit is not None and len(x) > limit:
        x = x[np.linspace(0, len(x) - 1, int(limit)).round().astype(int)]
    return _conform(x, preprocessing)


def _id_groups(dataset):
    """Our test split is CIFAR-10 pictures plus the extra classes' pictures; the near-OOD set is
    Tiny ImageNet. AUROC against each part shows how much of the figure is content and how much
    the look of the source (downscaled 64-pixel pictures are sharper)."""
    labels = np.asarray(dataset.y_test)
    cifar10 = labels < len(CIFAR10_CLASSES)
    return {"cifar10_test": cifar10, "extra_classes_test": ~cifar10}


def _noise_gate(context, original, image_sets):
    """Fit the noise gate on the original training pictures and save it; returns its metrics:
    the thresholds and the share of each picture set it refuses (real pictures: about none)."""
    pictures = np.asarray(context.dataset.x_train)
    if not len(pictures):
        return {"skipped": "no training pictures were given (features only)"}
    try:
        gate = NoiseGate(context.bundle.preprocessing).fit(pictures[original])
    except ValueError as error:  # a dataset with noise-like pictures of its own: no gate
        return {"skipped": str(error)}
    gate.save(context.out_dir / NOISE_GATE_FILE)
    context.bundle.noise_gate = gate
    refused = {name: float(np.mean(gate.predict(x) < 0)) for name, x in image_sets.items() if len(x)}
    return {**gate.to_dict(), "refused": refused}


def _embedded(bundle, x):
    out = bundle.embed(x)
    return {"features": out.features, "ood_features": out.ood_features, "logits": out.logits}


def _targets(table, chosen):
    row = table[chosen]
    targets = {
        "near_ood_auroc >= 0.85": row.get("near_ood", {}).get("auroc", 0.0) >= TARGETS["near_ood_auroc"],
        "far_ood_auroc >= 0.95": row.get("far_ood", {}).get("auroc", 0.0) >= TARGETS["far_ood_auroc"],
        "id_refusal_rate <= 0.05": row["id_refusal_rate"] <= TARGETS["id_refusal_rate"],
        "id_refusal_rate_correct <= 0.05": (row["id_refusal_rate_correct"] or 0.0) <= TARGETS["id_refusal_rate"],
    }
    best = best_baseline(table, chosen)
    if best is not None:
        targets["mean_auroc >= best baseline's"] = row["mean_auroc"] >= table[best]["mean_auroc"]
    return targets


def best_baseline(table, chosen):
    """The published post-hoc score (BASELINES) with the best mean AUROC in the table, the chosen
    detector left out: a detector is never its own baseline. None when the table has none."""
    baselines = [name for name in BASELINES if name in table and name != chosen]
    return max(baselines, key=lambda name: table[name]["mean_auroc"]) if baselines else None
