"""Build stage: the monitoring reference.

    metrics = run(context, ReferenceConfig())

measures the reference (monitoring.reference) from the training images and the validation
predictions, writes out_dir/monitoring_reference.json, and checks on the test set, replayed as
windows of uploads, how often the drift test raises an alarm where there is no drift.
"""

from dataclasses import asdict

import numpy as np

from monitoring.drift import DriftConfig, picture_window_columns, replay_windows
from monitoring.reference import ReferenceConfig, build_reference
from bundle.files import MONITORING_FILE


def run(context, config=ReferenceConfig(), drift_config=DriftConfig()):
    """Reads the validation and test embeddings; returns the stage's metrics (JSON-ready)."""
    bundle, dataset, embeddings, out_dir = context.bundle, context.dataset, context.embeddings, context.out_dir
    class_names = tuple(bundle.class_names)
    expected = bundle.input_shape
    if tuple(dataset.x_val.shape[1:]) != expected:
        raise ValueError(f"Dataset images are {dataset.x_val.shape[1:]}, the bundle's model input is {expected}.")
    # Rotated copies made to balance classes are not pictures anyone uploads: leave them out.
    original = np.ones(len(dataset.y_train), bool) if dataset.train_augmented is None else ~np.asarray(dataset.train_augmented)
    reference = build_reference(
        dataset.x_train[original], dataset.y_train[original], dataset.x_val, embeddings["val"].probabilities,
        class_names, config)
    path = reference.save(out_dir / MONITORING_FILE)
    bundle.monitoring_reference = reference

    test = picture_window_columns(dataset.x_test, embeddings["test"].probabilities, reference)
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
