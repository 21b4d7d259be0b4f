"""Training: a frozen TrainConfig, Keras `fit`, everything saved in one run folder.

    model, history, run_dir = load_or_train(TrainConfig(data=DataConfig(data_dir=...)), dataset)

writes runs/<preset>-<config hash>/ with model.keras, config.json (this config, the data config
among it), history.json and history.csv; a finished run with the same config is reused.

Two kinds of preset (classifier.models):
- airbench94 (the default) and airbench95 train with airbench's recipe (classifier.airbench:
  whitening, lookahead, alternating flips, test-time views inside the saved model). airbench94,
  12 epochs on our 13 classes: CIFAR-10 10-class test accuracy and fit time in README (bench:
  `python -m bench.train_speed`).
- The seeds' presets and fastnet train with plain Keras fit: the fields below up to
  early_stopping_patience. fastnet, 12 epochs on this 2-core CPU: 85.5% CIFAR-10, 26 min.
- Transfer presets (classifier.transfer: mobilenet_v2_tflite offline, mobilenet_v2 and resnet50
  online) train a small head on a frozen ImageNet network, with `transfer`'s settings (its own
  epochs); the TFLite preset's run folder also holds the .tflite and extractor.json.
"""

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from classifier.airbench_config import WIDTHS as AIRBENCH_PRESETS
from classifier.airbench_config import AirbenchConfig
from bundle.atomic import write_json_atomic
from classifier.dataset import DataConfig
from bundle.images import to_float
from classifier.readers import IMAGE_SUFFIXES
from classifier.transfer import PRESETS as TRANSFER_PRESETS
from classifier.transfer import TransferConfig


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "airbench94"
    # airbench's own count is 9.9 on 50,000 CIFAR-10 pictures; 12 here, on 47,500 of them plus
    # the extra classes, keeps the fit under 35 min on 2 CPU cores.
    epochs: int = 12
    # Plain-fit presets only (airbench's hyperparameters are in `airbench`):
    batch_size: int = 256
    peak_learning_rate: float = 0.1  # Keras SGD, on the batch-averaged loss
    warmup_fraction: float = 0.15  # linear warm-up, then cosine decay to zero
    momentum: float = 0.9
    weight_decay: float = 5e-4  # Keras' decoupled decay: each step shrinks weights by this x the rate
    label_smoothing: float = 0.2
    early_stopping_patience: int = 4
    airbench: AirbenchConfig = field(default_factory=AirbenchConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)


def train(config, dataset, out_dir, verbose="auto"):
    """Train `config.preset` on `dataset`; save model, config and history in `out_dir`.

    Returns (model, history dict, seconds spent in fit).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "config.json", asdict(config))
    started = time.perf_counter()
    if config.preset in AIRBENCH_PRESETS:
        from classifier.airbench import fit

        model, history = fit(config.airbench, dataset, config.epochs, out_dir, config.preset, config.seed, verbose)
    elif config.preset in TRANSFER_PRESETS:
        from classifier.transfer import fit

        model, history = fit(config, dataset, out_dir, verbose)
    else:
        model, history = _fit(config, dataset, out_dir, verbose)
    seconds = time.perf_counter() - started
    history["fit_seconds"] = seconds
    history["machine"] = describe_machine()
    write_json_atomic(out_dir / "history.json", history)
    model.save(out_dir / "model.keras")
    return model, history, seconds


def _fit(config, dataset, out_dir, verbose):
    import keras

    from classifier.models import build_model

    keras.utils.set_random_seed(config.seed)
    num_classes = len(dataset.class_names)
    x_train, y_train = _as_inputs(dataset.x_train, dataset.y_train, num_classes)
    x_val, y_val = _as_inputs(dataset.x_val, dataset.y_val, num_classes)
    model = build_model(config.preset, x_train.shape[1:], num_classes)
    steps = config.epochs * int(np.ceil(len(x_train) / config.batch_size))
    warmup = int(steps * config.warmup_fraction)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.peak_learning_rate / 10,
        decay_steps=max(1, steps - warmup),
        warmup_target=config.peak_learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=config.early_stopping_patience, restore_best_weights=True),
        keras.callbacks.CSVLogger(out_dir / "history.csv"),
        keras.callbacks.TerminateOnNaN(),
    ]
    fit = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=config.epochs,
                    batch_size=config.batch_size, callbacks=callbacks, verbose=verbose)
    return model, {name: [float(v) for v in values] for name, values in fit.history.items()}


def describe_machine():
    """What trained a run: processor, cores and the accelerators Keras sees, with its backend."""
    import os
    import platform

    import keras

    accelerators = [d for d in keras.distribution.list_devices() if not d.lower().startswith("cpu")]
    devices = f"{len(accelerators)} accelerator(s): {', '.join(accelerators)}" if accelerators else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {devices}; "
            f"keras {keras.__version__} ({keras.backend.backend()})")


def run_identity(config):
    """What names a run: the whole config, plus the files of any extra training folders (new
    corrections in a feedback folder must mean a new run, not the old one reused)."""
    identity = asdict(config)
    if config.preset not in TRANSFER_PRESETS:
        # Runs made before transfer presets existed keep their names (and stay reusable).
        del identity["transfer"]
    if config.data.extra_train_folders:
        identity["extra_train_files"] = sorted(
            str(path) for folder in config.data.extra_train_folders for path in Path(folder).rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES
        )
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_or_train(config, dataset, runs_dir="runs", verbose="auto"):
    """Reuse a finished run with exactly this config (same data, same seed), else train one."""
    import keras

    kind = "-feedback" if config.data.extra_train_folders else ""
    out_dir = Path(runs_dir) / f"{config.preset}{kind}-{run_identity(config)}"
    if (out_dir / "model.keras").exists() and (out_dir / "history.json").exists():
        history = json.loads((out_dir / "history.json").read_text())
        return keras.saving.load_model(out_dir / "model.keras", compile=False), history, out_dir
    model, history, _ = train(config, dataset, out_dir, verbose)
    return model, history, out_dir


def _as_inputs(x, y, num_classes):
    one_hot = np.eye(num_classes, dtype=np.float32)[y]
    return to_float(x), one_hot
