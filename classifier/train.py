"""Training: one config dict at the top, Keras `fit` with callbacks, everything saved in one folder.

    python -m classifier.train --preset fastnet --epochs 10 --out runs/fastnet

writes model.keras, config.json (this config and the data config), history.json and a checkpoint.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from classifier.data import IMAGE_SUFFIXES, DataConfig, prepare_dataset


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "fastnet"
    epochs: int = 12
    batch_size: int = 256
    peak_learning_rate: float = 0.1
    warmup_fraction: float = 0.15  # linear warm-up, then cosine decay to zero
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.2
    early_stopping_patience: int = 4
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)


def train(config, dataset, out_dir, verbose="auto"):
    """Train `config.preset` on `dataset`; save model, config and history in `out_dir`.

    Returns (model, history dict, seconds spent in fit).
    """
    import keras

    from classifier.models import build_model

    keras.utils.set_random_seed(config.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
        optimizer=keras.optimizers.SGD(
            schedule, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
        ),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=config.early_stopping_patience, restore_best_weights=True
        ),
        keras.callbacks.ModelCheckpoint(out_dir / "checkpoint.keras", monitor="val_accuracy", save_best_only=True),
        keras.callbacks.CSVLogger(out_dir / "history.csv"),
        keras.callbacks.TerminateOnNaN(),
    ]
    _write_json(out_dir / "config.json", asdict(config))
    started = time.perf_counter()
    fit = model.fit(
        x_train, y_train, validation_data=(x_val, y_val), epochs=config.epochs,
        batch_size=config.batch_size, callbacks=callbacks, verbose=verbose,
    )
    seconds = time.perf_counter() - started
    history = {name: [float(v) for v in values] for name, values in fit.history.items()}
    history["fit_seconds"] = seconds
    _write_json(out_dir / "history.json", history)
    model.save(out_dir / "model.keras")
    return model, history, seconds


def load_or_train(config, dataset, runs_dir="runs", verbose="auto"):
    """Reuse a finished run with exactly this config (same data, same seed), else train one."""
    import hashlib

    import keras

    identity = asdict(config)
    if config.data.extra_train_folders:
        # New corrections in a feedback folder must mean a new run, not the old one reused.
        identity["extra_train_files"] = sorted(
            str(path) for folder in config.data.extra_train_folders for path in Path(folder).rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES
        )
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    kind = "-feedback" if config.data.extra_train_folders else ""
    out_dir = Path(runs_dir) / f"{config.preset}{kind}-{key}"
    if (out_dir / "model.keras").exists() and (out_dir / "history.json").exists():
        history = json.loads((out_dir / "history.json").read_text())
        return keras.saving.load_model(out_dir / "model.keras"), history, out_dir
    model, history, _ = train(config, dataset, out_dir, verbose)
    return model, history, out_dir


def _as_inputs(x, y, num_classes):
    one_hot = np.eye(num_classes, dtype=np.float32)[y]
    return x.astype(np.float32) / np.float32(255), one_hot


def _write_json(path, value):
    Path(path).write_text(json.dumps(value, indent=2, default=str))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainConfig()
    parser.add_argument("--preset", default=defaults.preset)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.peak_learning_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--limit-per-class", type=int, default=None, help="small runs")
    parser.add_argument("--tiny-imagenet-val", action="store_true", help="also train on Tiny ImageNet val images of our classes")
    parser.add_argument("--runs", default="runs", help="folder of training runs")
    args = parser.parse_args()
    config = TrainConfig(
        preset=args.preset, epochs=args.epochs, batch_size=args.batch_size,
        peak_learning_rate=args.learning_rate, seed=args.seed,
        data=DataConfig(limit_per_class=args.limit_per_class, seed=args.seed, tiny_imagenet_val_in_train=args.tiny_imagenet_val),
    )
    _, history, out_dir = load_or_train(config, prepare_dataset(config.data), args.runs)
    print(f"{out_dir}: val_accuracy {max(history['val_accuracy']):.4f}, fit {history['fit_seconds']:.0f} s")
