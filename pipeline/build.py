"""The whole pipeline in one command: data -> training -> evaluation -> OOD detector and noise gate
-> gallery -> monitoring reference -> ImageNet fallback and the answer rule's tuning -> error
analysis -> bundle.

    python -m pipeline.build                       # the shipped bundle, into assets/ (development data)
    python -m pipeline.build --cifar-dir DIR       # from the official CIFAR-10/100 python folders
    python -m pipeline.build --download            # fetch those with keras.datasets first (online)
    python -m pipeline.build --smoke --out /tmp/b  # a few minutes on a little data: checks the pipeline
    python -m pipeline.build --data DIR --image-size 28 --channels 1 --out bundles/mnist   # any dataset

With --data the preset is `auto` unless given: transfer learning from the bundled MobileNetV2
(classifier.transfer, offline) when the classes have fewer than ~500 pictures each and the data
folder holds its .tflite, else fastnet_small from scratch; the build says which and why.

The data folder is --data-dir, else $HONEST_DATA_DIR, else ../shared/data (pipeline.data_dir).
A finished training run with the same config is reused from runs/ (its folder name carries the
config's hash), so re-running the build after a change to a later stage does not retrain. The
bundle is written to a temporary folder and swapped in at the end, so a failed build never leaves
a half-written assets/. Each stage says when it starts; training shows Keras' own progress.
"""

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bundle.atomic import write_json_atomic
from classifier.devices import DevicesUnavailable
from classifier.custom_dataset import choose_preset, tflite_path
from classifier.dataset import CIFAR10_JPEG_ARCHIVE, DataConfig, describe_data, prepare_dataset
from bundle.images import Preprocessing
from classifier.readers import DataUnavailable
from classifier.train import TrainConfig
from classifier.transfer import PRESETS as TRANSFER_PRESETS
from classifier.transfer import TransferConfig, check_available, copy_extractor, features_description
from pipeline import errors_stage, examples_stage, fallback_stage, gallery_stage, monitoring_stage, ood_stage
from pipeline.feedback import export_corrections
from pipeline.context import BuildContext
from monitoring.tracking import TrackingUnavailable, import_mlflow
from pipeline.data_dir import DEVELOPMENT_DATA, ENVIRONMENT_VARIABLE, resolve_data_dir

STAGES = ("ood", "gallery", "monitoring", "fallback", "errors")
STAGES_FOR_ANY_DATASET = ("ood", "gallery", "monitoring", "errors")


@dataclass(frozen=True)
class BuildConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "assets"
    runs_dir: str = "runs"
    stages: tuple = STAGES
    # The data folder for the evaluation sets (OOD sets, tuning pictures, photos); None: none.
    data_dir: str | None = None
    # Each stage's own config (ood_stage.OODConfig, gallery_stage.GalleryConfig,
    # monitoring.ReferenceConfig, fallback_stage.FallbackConfig, errors_stage.ErrorAnalysisConfig);
    # a stage left out gets its defaults.
    stage_configs: tuple = ()  # (stage name, config) pairs
    preset_reason: str | None = None  # why --preset auto chose the preset, for the log and metrics.json
    # Devices to train on, data parallel (classifier.devices): 0 = every accelerator present.
    # Not part of a training run's identity: N devices train the weights one device trains.
    devices: int = 0


def build(config=BuildConfig(), verbose="auto"):
    from classifier.calibration import fit_temperature
    from classifier.devices import data_parallel
    from classifier.train import load_or_train
    from pipeline.bundle_files import export_model, write_manifest
    from service.bundle import Bundle

    data = config.train.data
    if data.source is not None and "fallback" in config.stages:
        raise ValueError("The ImageNet fallback maps onto our 13 classes; leave the fallback stage out for another dataset.")
    started = time.perf_counter()
    out_dir = Path(config.out_dir)
    work_dir = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(work_dir, ignore_errors=True)
    (work_dir / "figures").mkdir(parents=True)

    if config.preset_reason:
        _log(f"preset: {config.train.preset}: {config.preset_reason}")
    progress = Progress(["data", "training", "embedding the splits", "evaluation",
                         *(stage for stage in STAGES if stage in config.stages), "bundle"])
    progress.stage("data")
    dataset = prepare_dataset(data)
    check_trainable(dataset)
    _log(f"data: {len(dataset.y_train)} train, {len(dataset.y_val)} val, {len(dataset.y_test)} test ({describe_data(data)})")
    progress.stage("training", f"{config.train.preset}, {config.train.epochs} epochs")
    with data_parallel(config.devices) as devices:
        if len(devices) > 1:
            _log(f"training data parallel on {len(devices)} devices: {', '.join(devices)}")
        model, history, run_dir = load_or_train(config.train, dataset, config.runs_dir, verbose)
    _log(f"model: {run_dir}")

    # The bundle serves, it does not train: saved without the optimizer's state, in float32, and
    # exported to LiteRT; every later stage is fitted on what the exported model computes.
    model = export_model(model, work_dir)
    copy_extractor(run_dir, work_dir)  # a TFLite transfer run's frozen feature extractor
    manifest = {"training_run": run_dir.name, "data": describe_data(data),
                "features": features_description(run_dir, config.train.preset)}
    write_manifest(work_dir, dataset.class_names, data.preprocessing, manifest)
    write_json_atomic(work_dir / "config.json", asdict(config))
    write_json_atomic(work_dir / "history.json", history)

    progress.stage("embedding the splits")
    # The exported model's confidence, calibrated on the validation split (classifier.calibration).
    val_logits = Bundle.load(work_dir, with_fallback=False).embed(dataset.x_val).logits
    temperature, calibration = fit_temperature(val_logits, dataset.y_val)
    write_manifest(work_dir, dataset.class_names, data.preprocessing, {**manifest, "temperature": temperature})
    bundle = Bundle.load(work_dir, with_fallback=False)
    embeddings = {name: bundle.embed(getattr(dataset, f"x_{name}")) for name in ("train", "val", "test")}
    from classifier.evaluate import evaluate

    progress.stage("evaluation")
    metrics = {
        "data": describe_data(data),
        "classifier": evaluate(embeddings["test"], dataset, history, work_dir),
        "calibration": calibration,
        "training": {
            "preset": config.train.preset, "epochs_run": len(history.get("loss", [])),
            "fit_seconds": history.get("fit_seconds"), "machine": history.get("machine", "not recorded by the run"),
            "best_val_accuracy": max(history.get("val_accuracy", [0.0])),
        },
        "skipped": [],
    }
    if config.preset_reason:
        metrics["preset_choice"] = {"preset": config.train.preset, "why": config.preset_reason}
    fit = metrics["training"]["fit_seconds"]
    fitted = f"; fit {fit / 60:.1f} min for {metrics['training']['epochs_run']} epochs on {metrics['training']['machine']}" if fit else ""
    _log(f"evaluation: {_headline(metrics['classifier'])}{fitted}")
    context = BuildContext(bundle, dataset, embeddings, work_dir, data, config.data_dir, model)
    stage_configs = dict(config.stage_configs)
    modules = {"ood": ood_stage, "gallery": gallery_stage, "monitoring": monitoring_stage,
               "fallback": fallback_stage, "errors": errors_stage}
    for stage in STAGES:  # in this order: the answer rule is tuned with the detector just fitted
        if stage not in config.stages:
            continue
        progress.stage(stage)
        module = modules[stage]
        metrics[stage] = module.run(context, stage_configs[stage]) if stage in stage_configs else module.run(context)
        metrics["skipped"] += [f"{stage}: {why}" for why in metrics[stage].get("skipped", []) if isinstance(why, str)]
    if "fallback" not in config.stages:
        # No fallback to consult: the rule's CNN thresholds keep their defaults.
        bundle.answer_rule.save(work_dir, {"tuned": False, "why": "built without the fallback stage"})
    progress.stage("bundle")
    examples_stage.run(dataset, context, work_dir / "examples")

    metrics["build_seconds"] = time.perf_counter() - started
    write_json_atomic(work_dir / "metrics.json", metrics)
    if (out_dir / "reports").exists() and not (work_dir / "reports").exists():
        # Reports made by other commands (the model ladder, the ablation) outlive a rebuild.
        shutil.copytree(out_dir / "reports", work_dir / "reports")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work_dir.rename(out_dir)
    _log(f"bundle written to {out_dir} in {metrics['build_seconds']:.0f} s")
    return metrics


# Transfer presets enlarge every picture to 224 pixels; 96 keeps detail without making the
# dataset and the gallery's thumbnails heavy.
TRANSFER_IMAGE_SIZE = 96
MIN_PICTURES_PER_CLASS = 5  # one for the test split, one for validation, three to learn from


def check_trainable(dataset):
    """Refuse, before any training, a dataset that cannot give a model and its calibration."""
    import numpy as np

    names = dataset.class_names
    if len(names) < 2:
        raise DataUnavailable(f"The data has {len(names)} class; a classifier needs at least two.")
    counts = np.bincount(dataset.y_train[~dataset.train_augmented] if dataset.train_augmented is not None else dataset.y_train,
                         minlength=len(names))
    counts += np.bincount(dataset.y_val, minlength=len(names)) + np.bincount(dataset.y_test, minlength=len(names))
    few = [f"{name} ({count})" for name, count in zip(names, counts) if count < MIN_PICTURES_PER_CLASS]
    if few:
        raise DataUnavailable(f"Too few pictures in {', '.join(few)}: each class needs at least {MIN_PICTURES_PER_CLASS} "
                              "(one to test on, one to calibrate with, the rest to learn from).")


def smoke_config(out_dir, runs_dir, data_dir, stages=STAGES, cifar_dir=None):
    """A build on a little data, for tests and for trying the pipeline: minutes, not an hour."""
    data = DataConfig(data_dir=data_dir, cifar_dir=cifar_dir, limit_per_class=40,
                      preprocessing=Preprocessing(jpeg_quality=None if cifar_dir else 75))
    train = TrainConfig(preset="fastnet_small", epochs=1, batch_size=64, data=data)
    stage_configs = (
        ("ood", ood_stage.OODConfig(n_estimators=50, near_ood_limit=300, far_ood_limit=300)),
        ("gallery", gallery_stage.GalleryConfig(per_class=20, pixel_test_per_class=5)),
        ("fallback", fallback_stage.FallbackConfig(tune=False)),
    )
    return BuildConfig(train=train, out_dir=str(out_dir), runs_dir=str(runs_dir), stages=stages,
                       data_dir=data_dir, stage_configs=stage_configs)


def any_dataset_config(source, out_dir, runs_dir="runs", image_size=None, channels=3, subdir="", test_subdir="",
                       classes=(), limit_per_class=None, preset="fastnet_small", epochs=12, stages=STAGES_FOR_ANY_DATASET,
                       data_dir=None):
    """A build on any labelled collection (see classifier.custom_dataset); `data_dir` gives the OOD
    sets and the bundled MobileNetV2. preset "auto" (the command line's default): see choose_preset."""
    reason = None
    if preset == "auto":
        preset, reason = choose_preset(source, subdir, tuple(classes), limit_per_class, data_dir)
    transfer = preset in TRANSFER_PRESETS
    image_size = image_size or (TRANSFER_IMAGE_SIZE if transfer else 32)
    data = DataConfig(
        source=str(source), source_subdir=subdir, source_test_subdir=test_subdir, source_classes=tuple(classes),
        preprocessing=Preprocessing(height=image_size, width=image_size, channels=channels), limit_per_class=limit_per_class,
    )
    stage_configs = ()
    if transfer:
        # Every OOD picture goes through the 224-pixel extractor (~10 ms each): fewer of them.
        stage_configs = (("ood", ood_stage.OODConfig(near_ood_limit=1000, far_ood_limit=1000)),)
    train = TrainConfig(preset=preset, epochs=epochs, data=data, transfer=TransferConfig(tflite_model=tflite_path(data_dir)))
    return BuildConfig(train=train, out_dir=str(out_dir), runs_dir=str(runs_dir), stages=tuple(stages), data_dir=data_dir,
                       stage_configs=stage_configs, preset_reason=reason)


def _headline(metrics):
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in ("cifar10_test_accuracy_10_class", "test_accuracy") if k in metrics)


def _log(message):
    print(f"[build] {message}", flush=True)


class Progress:
    """Which stage the build is in, with a bar over all of them (training shows Keras' own bar
    inside its stage; the other stages are single calls, so a bar counts stages, not steps)."""

    def __init__(self, stages, width=20):
        self.stages, self.width, self.started = list(stages), width, time.perf_counter()

    def stage(self, name, detail=""):
        done = self.stages.index(name)
        filled = round(self.width * done / len(self.stages))
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.started
        _log(f"[{bar}] {done + 1}/{len(self.stages)} stage: {name}{f' ({detail})' if detail else ''}, {elapsed:.0f} s so far")


def no_data_message(data_dir):
    return (f"No training data: {Path(data_dir) / CIFAR10_JPEG_ARCHIVE} does not exist. Give the data one of three ways: "
            f"--download (fetch the official CIFAR-10/100 and MNIST with keras.datasets; needs the network), "
            f"--cifar-dir DIR (a folder holding the official cifar-10-batches-py/ and cifar-100-python/), or "
            f"--data-dir DIR (the development data folder, default {DEVELOPMENT_DATA}, also ${ENVIRONMENT_VARIABLE}).")


def config_from_arguments(args):
    """The BuildConfig the command line asks for; raises DataUnavailable with a plain message."""
    data_dir = resolve_data_dir(args.data_dir)
    default_stages = STAGES_FOR_ANY_DATASET if args.data else STAGES
    stages = tuple(s for s in (args.stages or ",".join(default_stages)).split(",") if s)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise DataUnavailable(f"Unknown stages {unknown}; choose from {','.join(STAGES)}.")
    evaluation_dir = data_dir if Path(data_dir).is_dir() else None
    if args.data:
        if not Path(args.data).exists():
            raise DataUnavailable(f"--data {args.data} does not exist.")
        return any_dataset_config(
            args.data, args.out, args.runs, args.image_size, args.channels, args.subdir, args.test_subdir,
            tuple(c for c in args.classes.split(",") if c), args.limit_per_class,
            args.preset or "auto", args.epochs or 12, stages, evaluation_dir)
    cifar_dir = args.cifar_dir
    if args.download:
        from classifier.download import download_official

        cifar_dir = str(download_official(Path(args.download_to)))
    if cifar_dir:
        from classifier.dataset import CIFAR100_PICKLES, CIFAR10_PICKLES

        missing = [name for name in (CIFAR10_PICKLES, CIFAR100_PICKLES) if not (Path(cifar_dir) / name).is_dir()]
        if missing:
            raise DataUnavailable(f"--cifar-dir {cifar_dir} has no {' or '.join(missing)} folder (the official python-format CIFAR).")
    elif not (Path(data_dir) / CIFAR10_JPEG_ARCHIVE).exists():
        raise DataUnavailable(no_data_message(data_dir))
    if args.smoke:
        return smoke_config(args.out, args.runs, evaluation_dir, stages, cifar_dir)
    # The official data needs no JPEG round trip: every picture comes from the same source.
    preprocessing = Preprocessing(jpeg_quality=None) if cifar_dir else DataConfig().preprocessing
    folders = tuple(export_corrections(store, accepted_only=not args.feedback_all) for store in args.feedback)
    data = DataConfig(data_dir=None if cifar_dir else data_dir, cifar_dir=cifar_dir, preprocessing=preprocessing,
                      extra_train_folders=folders, tiny_imagenet_val_in_train=args.tiny_imagenet_val)
    defaults = TrainConfig()
    preset = defaults.preset if args.preset in (None, "auto") else args.preset  # 13 classes: thousands a class
    train = TrainConfig(preset=preset, epochs=args.epochs or defaults.epochs, data=data,
                        transfer=TransferConfig(tflite_model=tflite_path(evaluation_dir)))
    return BuildConfig(train=train, out_dir=args.out, runs_dir=args.runs, stages=stages, data_dir=evaluation_dir)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help=f"the development data folder (default ${ENVIRONMENT_VARIABLE} or {DEVELOPMENT_DATA})")
    parser.add_argument("--cifar-dir", default=None, help="build from the official cifar-10-batches-py/ and cifar-100-python/ in this folder")
    parser.add_argument("--download", action="store_true", help="fetch the official CIFAR-10/100 and MNIST with keras.datasets, then build")
    parser.add_argument("--download-to", default="data/official", help="with --download: where to keep them")
    parser.add_argument("--out", default=None, help="bundle folder to write (default: assets, for our 13 classes)")
    parser.add_argument("--runs", default="runs", help="folder of training runs (reused when the config matches)")
    parser.add_argument("--preset", default=None, help=f"default: {TrainConfig().preset} (with --data: auto, see above); transfer: {', '.join(TRANSFER_PRESETS)}")
    parser.add_argument("--epochs", type=int, default=None, help=f"default: {TrainConfig().epochs} (transfer presets: the head trains {TransferConfig().head_epochs} epochs, in seconds)")
    parser.add_argument("--feedback", action="append", default=[], help="an app's corrections store (state/corrections.sqlite, or the replicas' postgresql:// URL): train on its accepted corrections")
    parser.add_argument("--feedback-all", action="store_true", help="with --feedback: every correction not rejected, reviewed or not (private deployments)")
    parser.add_argument("--tiny-imagenet-val", action="store_true", help="also train on Tiny ImageNet val images of our classes")
    parser.add_argument("--stages", default=None, help="comma-separated subset of " + ",".join(STAGES))
    parser.add_argument("--data", help="build on another dataset: an image-folder tree, a .tgz of one, or an MNIST idx folder")
    parser.add_argument("--subdir", default="", help="with --data: the class folders' parent inside it")
    parser.add_argument("--test-subdir", default="", help="with --data: a test tree beside it (else 20%% is carved off)")
    parser.add_argument("--image-size", type=int, default=None, help=f"with --data: square model input, in pixels (default 32; transfer presets {TRANSFER_IMAGE_SIZE})")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="with --data: 1 = grayscale, 3 = RGB")
    parser.add_argument("--classes", default="", help="with --data: comma-separated subset of its classes")
    parser.add_argument("--limit-per-class", type=int, default=None, help="with --data: at most this many images per class")
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch: checks the pipeline end to end")
    parser.add_argument("--devices", type=int, default=0, help="train data parallel on this many devices (default 0: every "
                        "accelerator present; more than one needs KERAS_BACKEND=jax, see classifier.devices)")
    parser.add_argument("--mlflow", action="store_true", help="log the build as one MLflow run ($MLFLOW_TRACKING_URI, else "
                        "./mlruns.db; pip install -r requirements-mlflow.txt)")
    args = parser.parse_args(argv)
    if args.data and not args.out:
        parser.error("--data needs --out: the shipped bundle in assets/ is built on our 13 classes")
    if args.download and args.cifar_dir:
        parser.error("give --download or --cifar-dir, not both")
    args.out = args.out or "assets"
    try:
        if args.mlflow:
            import_mlflow()  # missing: say so before hours of training, not after
        config = replace(config_from_arguments(args), devices=args.devices)
        check_available(config.train.preset, config.train.transfer)  # offline or no .tflite: say so before any work
        metrics = build(config)
        if args.mlflow:
            from pipeline.tracking import log_build_run

            history = json.loads((Path(config.out_dir) / "history.json").read_text())
            _log(f"MLflow run {log_build_run(config, metrics, history, config.out_dir)}")
    except (DataUnavailable, DevicesUnavailable, TrackingUnavailable) as error:
        print(f"Cannot build: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
