"""The monitoring stage of the bundle build (pipeline/build.py calls `build`).

    metrics = build(bundle, dataset, embeddings, out_dir)

measures the reference (monitoring.reference) from the training images and the validation
predictions, writes out_dir/monitoring_reference.json, and checks on the test set, replayed as
windows of uploads, how often the drift test raises an alarm where there is no drift.
"""

from dataclasses import asdict
from pathlib import Path

import numpy as np

from monitoring import metrics as measure
from monitoring.drift import DriftConfig, detect_drift
from monitoring.reference import ReferenceConfig, build_reference

MONITORING_FILE = "monitoring_reference.json"  # = classifier.bundle.MONITORING_FILE (not imported: no TF here)


def build(bundle, dataset, embeddings, out_dir, config=ReferenceConfig(), drift_config=DriftConfig()):
    """`embeddings`: {"train"/"val"/"test": classifier.bundle.Embedding} for dataset.x_train/x_val/x_test
    (only "val" and "test" are read). Returns the stage's metrics (JSON-ready)."""
    class_names = tuple(getattr(bundle, "class_names", None) or dataset.class_names)
    preprocessing = getattr(bundle, "preprocessing", None)
    if preprocessing is not None:
        expected = (preprocessing.height, preprocessing.width, preprocessing.channels)
        if tuple(dataset.x_val.shape[1:]) != expected:
            raise ValueError(f"Dataset images are {dataset.x_val.shape[1:]}, the bundle's model input is {expected}.")
    # Rotated copies made to balance classes are not pictures anyone uploads: leave them out.
    original = np.ones(len(dataset.y_train), bool) if dataset.train_augmented is None else ~np.asarray(dataset.train_augmented)
    reference = build_reference(
        dataset.x_train[original], dataset.y_train[original], dataset.x_val, embeddings["val"].probabilities,
        class_names, config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = reference.save(out_dir / MONITORING_FILE)

    test = test_window_columns(dataset.x_test, embeddings["test"].probabilities, reference)
    alarms = replay_windows(test, reference, drift_config, seed=config.seed)
    return {
        "file": path.name,
        "config": asdict(config),
        "drift_config": asdict(drift_config),
        "counts": reference.counts,
        "baseline_median": {name: round(float(np.median(values)), 4) for name, values in reference.baseline.items()},
        "test_windows": alarms["windows"],
        "test_false_alarm_rate": alarms["alarm_rate"],
        "test_min_p_value_median": alarms["min_p_value_median"],
    }


def test_window_columns(images, probabilities, reference):
    """Window columns (as PredictionLog.window gives them) for a batch of images, without a log."""
    predicted = np.argmax(probabilities, axis=1)
    histograms = measure.colour_histograms(images, reference.config.bins)
    return {
        "confidence": measure.confidences(probabilities),
        "entropy": measure.intensity_entropies(images),
        "histogram_distance": measure.hellinger_distances(histograms, reference.class_histograms[predicted]),
        "predicted_class": np.array(reference.class_names, dtype=object)[predicted],
    }


def replay_windows(columns, reference, drift_config=DriftConfig(), seed=0):
    """Shuffle the uploads once, cut them into consecutive windows of window_size, judge each."""
    size = len(columns["confidence"])
    order = np.random.default_rng(seed).permutation(size)
    reports = []
    for start in range(0, size - drift_config.window_size + 1, drift_config.window_size):
        part = order[start:start + drift_config.window_size]
        reports.append(detect_drift({name: np.asarray(values)[part] for name, values in columns.items()}, reference, drift_config))
    min_p = [min(r.p_values.values()) for r in reports]
    return {
        "windows": len(reports),
        "alarm_rate": round(float(np.mean([r.alarm for r in reports])), 4) if reports else None,
        "min_p_value_median": round(float(np.median(min_p)), 4) if reports else None,
        "reports": reports,
    }
