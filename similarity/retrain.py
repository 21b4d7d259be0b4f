"""Retrain the classifier with users' corrections merged into the training split.

    python -m similarity.retrain --feedback feedback/ [--epochs 12 --limit-per-class N --runs runs]

The run goes to runs/<preset>-feedback-<hash> (classifier.train.load_or_train), where the hash
covers the training config and the feedback files (their names are content hashes), so new
corrections mean a new run and the same ones reuse the finished run. To ship it, rebuild the bundle: python -m pipeline.build --feedback feedback/
"""

from dataclasses import dataclass, replace
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
    from classifier.train import load_or_train

    images = feedback_images(feedback_dir)
    if not images:
        raise ValueError(f"No feedback images under {feedback_dir}: nothing to retrain with.")
    folders = tuple(config.data.extra_train_folders) + (str(feedback_dir),)
    config = replace(config, data=replace(config.data, extra_train_folders=folders))
    dataset = prepare_dataset(config.data)
    # load_or_train keys the run on the config and the feedback files, so new corrections mean
    # a new run and the same ones reuse the finished run.
    model, history, run_dir = load_or_train(config, dataset, runs_dir, verbose)
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
