"""The whole pipeline in one command: data -> training -> evaluation figures -> OOD detector ->
gallery index -> monitoring reference -> ImageNet fallback -> bundle.

    python -m pipeline.build                 # the shipped bundle, into assets/
    python -m pipeline.build --smoke --out /tmp/bundle   # minutes-long run on a little data

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

STAGES = ("ood", "similarity", "monitoring", "fallback")


@dataclass(frozen=True)
class BuildConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "assets"
    runs_dir: str = "runs"
    stages: tuple = STAGES
    # Each stage's own config (ood.build.OODConfig, similarity.build.GalleryConfig,
    # monitoring.reference.ReferenceConfig, fallback.build.FallbackConfig); None means its defaults.
    stage_configs: tuple = ()  # (stage name, config) pairs
    example_photos: tuple = (
        "n02123597_Siamese_cat.JPEG", "n02690373_airliner.JPEG", "n03095699_container_ship.JPEG",
        "n02110958_pug.JPEG", "n02504458_African_elephant.JPEG", "n07753592_banana.JPEG",
        "n04461696_tow_truck.JPEG", "n04548280_wall_clock.JPEG", "n09472597_volcano.JPEG",
    )


def build(config=BuildConfig(), verbose="auto"):
    import keras

    from classifier.bundle import MODEL_FILE, OOD_FILE, Bundle, write_manifest
    from classifier.data import trained_tiny_imagenet_wnids
    from classifier.data import SHARED_DATA
    from classifier.evaluate import evaluate
    from classifier.train import load_or_train

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
        module = __import__(f"{stage}.build", fromlist=["build"])
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
            metrics[stage] = module.build(bundle, dataset, embeddings, work_dir, **options)
        if stage == "ood":
            from ood import load_detector

            bundle.ood_detector = load_detector(work_dir / OOD_FILE)
        _log(f"{stage}: done")
    _copy_examples(config.example_photos, SHARED_DATA / "imagenet-samples", work_dir / "examples")

    metrics["build_seconds"] = time.perf_counter() - started
    (work_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
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
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in ("cifar10_test_accuracy_10_class", "test_accuracy_13_class") if k in metrics)


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
    parser.add_argument("--out", default="assets", help="bundle folder to write")
    parser.add_argument("--runs", default="runs", help="folder of training runs (reused when the config matches)")
    parser.add_argument("--preset", default=TrainConfig().preset)
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--feedback", action="append", default=[], help="image-folder tree of user corrections to train on")
    parser.add_argument("--tiny-imagenet-val", action="store_true", help="also train on Tiny ImageNet val images of our classes")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch: checks the pipeline end to end")
    args = parser.parse_args()
    stages = tuple(s for s in args.stages.split(",") if s)
    if args.smoke:
        config = smoke_config(args.out, args.runs, stages)
    else:
        train = TrainConfig(preset=args.preset, epochs=args.epochs, data=DataConfig(
            extra_train_folders=tuple(args.feedback), tiny_imagenet_val_in_train=args.tiny_imagenet_val))
        config = BuildConfig(train=train, out_dir=args.out, runs_dir=args.runs, stages=stages)
    build(config)
