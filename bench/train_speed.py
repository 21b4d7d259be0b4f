"""Accuracy and wall time of the build's training.

    python -m bench.train_speed              # the shipped bundle's run, from assets/metrics.json
    python -m bench.train_speed --train      # train again with the build's config, timed here

The second form takes as long as the build's training (on this 2-core CPU: the better part of an
hour); it reads the data the bundle recorded from the data folder (--data-dir, else
$HONEST_DATA_DIR, else ../shared/data), writes its run to a temporary folder and evaluates on the
test split.
"""

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pipeline.data_dir import resolve_data_dir

# What metrics.json["classifier"] holds for our 13 classes (classifier.evaluate).
ACCURACY_KEYS = ("cifar10_test_accuracy_10_class", "cifar10_test_accuracy_13_class", "extra_classes_test_accuracy", "test_accuracy_13_class")


def report(preset, epochs, seconds, metrics, where):
    print(f"preset {preset}, {epochs} epochs, fit wall time {seconds:.0f} s ({seconds / 60:.1f} min) on {where}")
    for key in ACCURACY_KEYS:
        if key in metrics:
            print(f"{key}: {metrics[key]:.4f}")


def recorded_train_config(assets, data_dir):
    """The TrainConfig the bundle's config.json recorded, its data read from `data_dir`."""
    from classifier.airbench import AirbenchConfig
    from classifier.train import TrainConfig
    from pipeline.bundle_files import recorded_data_config

    saved = json.loads((Path(assets) / "config.json").read_text())["train"]
    values = {key: value for key, value in saved.items() if key not in ("data", "airbench")}
    # Bundles from before the airbench recipe recorded no airbench settings: its defaults.
    airbench = AirbenchConfig(**saved.get("airbench", {}))
    return TrainConfig(**values, airbench=airbench, data=replace(recorded_data_config(assets), data_dir=data_dir))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--data-dir", default=None, help="with --train: the development data folder (see pipeline.data_dir)")
    args = parser.parse_args(argv)
    if not args.train:
        metrics = json.loads((Path(args.assets) / "metrics.json").read_text())
        training = metrics["training"]
        report(training["preset"], training["epochs_run"], training["fit_seconds"], metrics["classifier"], training["machine"])
        return
    from classifier.dataset import prepare_dataset
    from bundle.embedding import embed
    from classifier.export import keras_outputs
    from classifier.evaluate import cifar10_accuracy
    from classifier.train import train

    config = recorded_train_config(args.assets, resolve_data_dir(args.data_dir))
    dataset = prepare_dataset(config.data)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs:
        model, history, _ = train(config, dataset, runs, verbose=2)
    total = time.perf_counter() - began
    probabilities = embed(keras_outputs(model), dataset.x_test).probabilities
    metrics = cifar10_accuracy(probabilities, dataset.y_test, list(dataset.class_names))
    metrics["test_accuracy_13_class"] = float((probabilities.argmax(1) == dataset.y_test).mean())
    report(config.preset, len(history["loss"]), history["fit_seconds"], metrics, f"{platform.machine()} CPU")
    print(f"total including model build: {total:.0f} s")


if __name__ == "__main__":
    main()
