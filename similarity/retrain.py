"""Retrain the classifier with users' corrections merged into the training split.

    python -m similarity.retrain --feedback feedback/ [--epochs 12 --limit-per-class N --runs runs]

The run goes to runs/<preset>-feedback-<hash>, where the hash covers the training config and the
feedback files (their names are content hashes), so new corrections mean a new run and the same
ones reuse the finished run. To ship it, rebuild the bundle: python -m pipeline.build --feedback feedback/
"""

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from classifier.data import IMAGE_SUFFIXES, prepare_dataset
from classifier.train import TrainConfig


@dataclass
class Retrained:
    model: object
    history: dict
    run_dir: Path
    dataset: object  # classifier.data.Dataset, feedback included
    feedback_images: int


def retrain(feedback_dir, config=TrainConfig(), runs_dir="runs", verbose="auto"):
    """Train `config` with `feedback_dir` (an image-folder tree) added to its training data."""
    from classifier.train import train

    images = feedback_images(feedback_dir)
    if not images:
        raise ValueError(f"No feedback images under {feedback_dir}: nothing to retrain with.")
    folders = tuple(config.data.extra_train_folders) + (str(feedback_dir),)
    config = replace(config, data=replace(config.data, extra_train_folders=folders))
    key = json.dumps({"config": asdict(config), "feedback": images}, sort_keys=True, default=str)
    run_dir = Path(runs_dir) / f"{config.preset}-feedback-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    dataset = prepare_dataset(config.data)
    if (run_dir / "model.keras").exists() and (run_dir / "history.json").exists():
        import keras

        model = keras.saving.load_model(run_dir / "model.keras")
        history = json.loads((run_dir / "history.json").read_text())
    else:
        model, history, _ = train(config, dataset, run_dir, verbose)
    return Retrained(model, history, run_dir, dataset, len(images))


def feedback_images(folder):
    """Relative paths of the images in an image-folder tree (<class>/<image>), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.glob("*/*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )


if __name__ == "__main__":
    import argparse
    import sys

    from classifier.data import DataConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainConfig()
    parser.add_argument("--feedback", default="feedback", help="image-folder tree written by FeedbackStore")
    parser.add_argument("--preset", default=defaults.preset)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--limit-per-class", type=int, default=None, help="small runs")
    parser.add_argument("--runs", default="runs", help="folder of training runs")
    args = parser.parse_args()
    config = TrainConfig(preset=args.preset, epochs=args.epochs, data=DataConfig(limit_per_class=args.limit_per_class))
    try:
        result = retrain(args.feedback, config, args.runs)
    except ValueError as error:
        sys.exit(str(error))
    best = max(result.history.get("val_accuracy", [float("nan")]))
    print(
        f"model: {result.run_dir / 'model.keras'} ({result.feedback_images} feedback images in "
        f"{len(result.dataset.y_train)} training images; best val_accuracy {best:.4f})"
    )
