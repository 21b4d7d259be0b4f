"""Accuracy and wall time of the build's training.

    python -m bench.train_speed              # the shipped bundle's run, from assets/
    python -m bench.train_speed --train      # train again with the build's config, timed here

The second form takes as long as the build's training (on this 2-core CPU: the better part of an
hour); it writes its run to a temporary folder and evaluates on the test split.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from classifier.data import prepare_dataset
from classifier.train import TrainConfig


def report(preset, epochs, seconds, metrics, where):
    print(f"preset {preset}, {epochs} epochs, fit wall time {seconds:.0f} s ({seconds / 60:.1f} min) on {where}")
    for key in ("cifar10_test_accuracy_10_class", "cifar10_test_accuracy_13_class", "extra_classes_test_accuracy", "test_accuracy_13_class"):
        if key in metrics:
            print(f"{key}: {metrics[key]:.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--train", action="store_true")
    args = parser.parse_args()
    if not args.train:
        metrics = json.loads((Path(args.assets) / "metrics.json").read_text())
        training = metrics["training"]
        report(training["preset"], training["epochs_run"], training["fit_seconds"], metrics["classifier"], training["machine"])
        return
    from classifier.bundle import embed, feature_model
    from classifier.evaluate import cifar10_accuracy
    from classifier.train import train

    config = TrainConfig(**{k: v for k, v in json.loads((Path(args.assets) / "config.json").read_text())["train"].items() if k != "data"})
    dataset = prepare_dataset(config.data)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs:
        model, history, _ = train(config, dataset, runs, verbose=2)
    total = time.perf_counter() - began
    probabilities = embed(feature_model(model), dataset.x_test).probabilities
    metrics = cifar10_accuracy(probabilities, dataset.y_test, list(dataset.class_names))
    metrics["test_accuracy_13_class"] = float((probabilities.argmax(1) == dataset.y_test).mean())
    report(config.preset, len(history["loss"]), history["fit_seconds"], metrics, f"{platform.machine()} CPU")
    print(f"total including model build: {total:.0f} s")


if __name__ == "__main__":
    main()
