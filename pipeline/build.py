"""The whole pipeline in one command: data -> training -> evaluation figures -> OOD detector ->
gallery index -> monitoring reference -> ImageNet fallback -> error analysis -> bundle.

    python -m pipeline.build                 # the shipped bundle, into assets/
    python -m pipeline.build --smoke --out /tmp/bundle   # minutes-long run on a little data
    python -m pipeline.build --data ../shared/data/mnist --image-size 28 --channels 1 --out bundles/mnist
                                             # any image-folder tree, archive or MNIST idx folder

A bundle built on another dataset carries its own classes, input size and channels, and the app
serves it unchanged (`python app.py --assets bundles/mnist`). It has no ImageNet fallback: that maps
ImageNet's classes onto our 13.

A finished training run with the same config is reused from runs/ (its folder name carries the
config's hash), so re-running the build after a change to a later stage does not retrain.
The bundle is written to a temporary folder and swapped in at the end, so a failed build never
leaves a half-written assets/.
"""

import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from classifier.data import DataConfig, prepare_dataset
from classifier.train import TrainConfig

STAGES = ("ood", "similarity", "monitoring", "fallback", "errors")
STAGES_FOR_ANY_DATASET = ("ood", "similarity", "monitoring", "errors")
STAGE_MODULES = {
    "ood": "ood.build", "similarity": "similarity.build", "monitoring": "monitoring.build",
    "fallback": "fallback.build", "errors": "classifier.errors",
}


@dataclass(frozen=True)
class BuildConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "assets"
    runs_dir: str = "runs"
    stages: tuple = STAGES
    # Each stage's own config (ood.build.OODConfig, similarity.build.GalleryConfig,
    # monitoring.reference.ReferenceConfig, fallback.build.FallbackConfig,
    # classifier.errors.ErrorAnalysisConfig); a stage left out gets its defaults.
    stage_configs: tuple = ()  # (stage name, config) pairs
    example_photos: tuple = (
        "n02123597_Siamese_cat.JPEG", "n02690373_airliner.JPEG", "n03095699_container_ship.JPEG",
        "n02110958_pug.JPEG", "n02504458_African_elephant.JPEG", "n07753592_banana.JPEG",
        "n04461696_tow_truck.JPEG", "n04548280_wall_clock.JPEG", "n09472597_volcano.JPEG",
    )


def build(config=BuildConfig(), verbose="auto"):
    import keras

    from classifier.bundle import MODEL_FILE, OOD_FILE, Bundle, write_manifest
    from classifier.data import SHARED_DATA, trained_tiny_imagenet_wnids
    from classifier.evaluate import evaluate
    from classifier.train import load_or_train

    custom = config.train.data.source is not None
    if custom and "fallback" in config.stages:
        raise ValueError("The ImageNet fallback maps onto our 13 classes; leave the fallback stage out for another dataset.")
    started = time.perf_counter()
    out_dir = Path(config.out_dir)
    work_dir = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(work_dir, ignore_errors=True)
    (work_dir / "figures").mkdir(parents=True)

    dataset = prepare_dataset(config.train.data)
    _log(f"data: {len(dataset.y_train)} train, {len(dataset.y_val)} val, {len(dataset.y_test)} test")
    model, history, run_dir = load_or_train(config.train, dataset, config.runs_dir, verbose)
    _log(f"model: {run_dir}")

    # The bundle serves, it does not train: saved without the optimizer's state (half the size).
    keras.saving.load_model(run_dir / MODEL_FILE, compile=False).save(work_dir / MODEL_FILE)
    write_manifest(work_dir, dataset.class_names, config.train.data.preprocessing, {"training_run": run_dir.name})
    (work_dir / "config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
    (work_dir / "history.json").write_text(json.dumps(history, indent=2))
    bundle = Bundle.load(work_dir, with_fallback=False)

    embeddings = {
        "train": bundle.embed(dataset.x_train), "val": bundle.embed(dataset.x_val), "test": bundle.embed(dataset.x_test),
    }
    metrics = {
        "classifier": evaluate(embeddings["test"], dataset, history, work_dir),
        "training": {
            "preset": config.train.preset, "epochs_run": len(history.get("loss", [])),
            "fit_seconds": history.get("fit_seconds"), "machine": _machine(),
            "best_val_accuracy": max(history.get("val_accuracy", [0.0])),
        },
    }
    _log(f"evaluation: {_headline(metrics['classifier'])}")
    stage_configs = dict(config.stage_configs)
    for stage in config.stages:
        module = __import__(STAGE_MODULES[stage], fromlist=["build"])
        if stage == "fallback":
            # The fallback's policy is tuned with the CNN and detector just built, on pictures the
            # CNN never trained on, plus its own validation split.
            fallback_config = replace(
                stage_configs.get("fallback", module.FallbackConfig()),
                exclude_wnids=tuple(trained_tiny_imagenet_wnids(config.train.data, dataset.class_names)),
            )
            metrics[stage] = module.build(bundle, work_dir, fallback_config, (dataset.x_val, dataset.y_val))
        else:
            options = {"config": stage_configs[stage]} if stage in stage_configs else {}
            if stage == "ood" and custom and not options:
                options = {"config": module.OODConfig(evaluation="any", any_sets=_ood_sets_for(config.train.data))}
            metrics[stage] = module.build(bundle, dataset, embeddings, work_dir, **options)
        if stage == "ood":
            from ood import load_detector

            bundle.ood_detector = load_detector(work_dir / OOD_FILE)
        _log(f"{stage}: done")
    if custom:
        _write_test_examples(dataset, work_dir / "examples")
    else:
        _copy_examples(config.example_photos, SHARED_DATA / "imagenet-samples", work_dir / "examples")

    metrics["build_seconds"] = time.perf_counter() - started
    (work_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    if (out_dir / "reports").exists() and not (work_dir / "reports").exists():
        # Reports made by other commands (the model ladder) outlive a rebuild.
        shutil.copytree(out_dir / "reports", work_dir / "reports")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work_dir.rename(out_dir)
    _log(f"bundle written to {out_dir} in {metrics['build_seconds']:.0f} s")
    return metrics


def smoke_config(out_dir, runs_dir, stages=STAGES):
    """A build on a little data, for tests and for trying the pipeline: minutes, not an hour."""
    from fallback.build import FallbackConfig
    from ood.build import OODConfig
    from similarity.build import GalleryConfig

    train = TrainConfig(preset="fastnet_small", epochs=1, batch_size=64, data=DataConfig(limit_per_class=40))
    stage_configs = (
        ("ood", OODConfig(n_estimators=50, near_ood_limit=300, far_ood_limit=300)),
        ("similarity", GalleryConfig(per_class=20, pixel_test_per_class=5)),
        ("fallback", FallbackConfig(tune=False)),
    )
    return BuildConfig(train=train, out_dir=str(out_dir), runs_dir=str(runs_dir), stages=stages, stage_configs=stage_configs)


def any_dataset_config(source, out_dir, runs_dir="runs", image_size=32, channels=3, subdir="", test_subdir="",
                       classes=(), limit_per_class=None, preset="fastnet_small", epochs=12, stages=STAGES_FOR_ANY_DATASET):
    """A build on any labelled collection (see classifier.custom_dataset)."""
    from classifier.images import Preprocessing

    data = DataConfig(
        source=str(source), source_subdir=subdir, source_test_subdir=test_subdir, source_classes=tuple(classes),
        preprocessing=Preprocessing(height=image_size, width=image_size, channels=channels), limit_per_class=limit_per_class,
    )
    return BuildConfig(train=TrainConfig(preset=preset, epochs=epochs, data=data), out_dir=str(out_dir),
                       runs_dir=str(runs_dir), stages=tuple(stages))


def _ood_sets_for(data):
    from classifier.custom_dataset import is_mnist_folder

    # MNIST digits are no OOD set for a bundle that was trained on them.
    return ("tiny_imagenet_val",) if is_mnist_folder(data.source) else ("tiny_imagenet_val", "mnist")


def _write_test_examples(dataset, target, count=9):
    """The app's examples for a bundle on another dataset: the first test picture of each class."""
    from PIL import Image

    target.mkdir(parents=True, exist_ok=True)
    for label, name in list(enumerate(dataset.class_names))[:count]:
        rows = (dataset.y_test == label).nonzero()[0]
        if len(rows):
            image = dataset.x_test[rows[0]]
            picture = Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image)
            picture.save(target / f"{name}.jpg", quality=95)


def _copy_examples(names, source, target):
    """A few real photos for the app's examples, shrunk so the repo stays small."""
    from PIL import Image

    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (source / name).exists():
            with Image.open(source / name) as image:
                image = image.convert("RGB")
                image.thumbnail((320, 320), Image.Resampling.LANCZOS)
                image.save(target / (Path(name).stem.split("_", 1)[1] + ".jpg"), quality=90)


def _machine():
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU"


def _headline(metrics):
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in ("cifar10_test_accuracy_10_class", "test_accuracy") if k in metrics)


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _log(message):
    print(f"[build] {message}", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="bundle folder to write (default: assets, for our 13 classes)")
    parser.add_argument("--runs", default="runs", help="folder of training runs (reused when the config matches)")
    parser.add_argument("--preset", default=None, help=f"default: {TrainConfig().preset} (with --data: fastnet_small)")
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--feedback", action="append", default=[], help="image-folder tree of user corrections to train on")
    parser.add_argument("--tiny-imagenet-val", action="store_true", help="also train on Tiny ImageNet val images of our classes")
    parser.add_argument("--stages", default=None, help="comma-separated subset of " + ",".join(STAGES))
    parser.add_argument("--data", help="build on another dataset: an image-folder tree, a .tgz of one, or an MNIST idx folder")
    parser.add_argument("--subdir", default="", help="with --data: the class folders' parent inside it")
    parser.add_argument("--test-subdir", default="", help="with --data: a test tree beside it (else 20%% is carved off)")
    parser.add_argument("--image-size", type=int, default=32, help="with --data: square model input, in pixels")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="with --data: 1 = grayscale, 3 = RGB")
    parser.add_argument("--classes", default="", help="with --data: comma-separated subset of its classes")
    parser.add_argument("--limit-per-class", type=int, default=None, help="with --data: at most this many images per class")
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch: checks the pipeline end to end")
    args = parser.parse_args()
    if args.data and not args.out:
        parser.error("--data needs --out: the shipped bundle in assets/ is built on our 13 classes")
    default_stages = STAGES_FOR_ANY_DATASET if args.data else STAGES
    stages = tuple(s for s in (args.stages or ",".join(default_stages)).split(",") if s)
    args.out = args.out or "assets"
    if args.data:
        config = any_dataset_config(
            args.data, args.out, args.runs, args.image_size, args.channels, args.subdir, args.test_subdir,
            tuple(c for c in args.classes.split(",") if c), args.limit_per_class,
            args.preset or "fastnet_small", args.epochs, stages,
        )
    elif args.smoke:
        config = smoke_config(args.out, args.runs, stages)
    else:
        train = TrainConfig(preset=args.preset or TrainConfig().preset, epochs=args.epochs, data=DataConfig(
            extra_train_folders=tuple(args.feedback), tiny_imagenet_val_in_train=args.tiny_imagenet_val))
        config = BuildConfig(train=train, out_dir=args.out, runs_dir=args.runs, stages=stages)
    build(config)
