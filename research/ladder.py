"""Model ladder: train a list of presets on the same data and compare them in one table.

    python -m research.ladder --epochs 8 --limit-per-class 1000 --out assets/reports

writes ladder.json (config, rows, machine, command) and ladder.md (the table) into --out.
Each rung is a classifier.train run reused from runs/ by its config hash, so a second call with
the same settings only evaluates.

The last rung, mobilenet_v2_tflite, is transfer learning (classifier.transfer): a head trained on
the bundled MobileNetV2's features, every 32-pixel picture enlarged to 224 (~10 ms each on this
CPU). Without the .tflite in the data folder it is skipped, and said so. --keep-rows adds the rungs
asked for to an existing report made on the same data, keeping its other rows:

    python -m research.ladder --epochs 8 --limit-per-class 1000 --presets mobilenet_v2_tflite --keep-rows
"""

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from bundle.atomic import write_text_atomic
from classifier.dataset import DataConfig, prepare_dataset
from bundle.images import to_float
from classifier.train import TrainConfig, describe_machine
from classifier.custom_dataset import tflite_path
from classifier.transfer import TransferConfig, TransferUnavailable
from classifier.transfer import PRESETS as TRANSFER_PRESETS
from pipeline.data_dir import resolve_data_dir

# Smallest to biggest, so a ladder cut short still has the cheap rungs; transfer last.
PRESETS = ("pets_small", "bootcamp", "gradio_slides", "fastnet_small", "fastnet", "airbench94", "mobilenet_v2_tflite")

COLUMNS = (  # (row key, markdown header, format)
    ("preset", "preset", "{}"),
    ("parameters", "parameters", "{:,}"),
    ("epochs_run", "epochs", "{}"),
    ("fit_seconds", "fit (s)", "{:.0f}"),
    ("best_val_accuracy", "val acc (best)", "{:.3f}"),
    ("test_accuracy", "test acc (13 classes)", "{:.3f}"),
    ("cifar10_test_accuracy_10_class", "CIFAR-10 acc (10-class)", "{:.3f}"),
    ("extra_classes_test_accuracy", "extra classes acc", "{:.3f}"),
    ("test_loss", "test loss (CE)", "{:.3f}"),
    ("predict_ms_per_image", "predict (ms/image)", "{:.2f}"),
)


@dataclass(frozen=True)
class LadderConfig:
    presets: tuple = PRESETS
    train: TrainConfig = field(default_factory=TrainConfig)  # each rung replaces only its preset
    runs_dir: str = "runs"
    out_dir: str = "assets/reports"
    predict_batch_size: int = 256
    # Keep the rows of other presets from an existing ladder.json made on the same data and epochs.
    keep_rows: bool = False


def run_ladder(config=LadderConfig(), verbose="auto", command=None, mlflow=False):
    """Train (or reuse) and evaluate every preset; write ladder.json and ladder.md; return the rows.
    With `mlflow`, each preset is also one MLflow run (pipeline.tracking), so `mlflow ui` compares them."""
    from classifier.train import load_or_train

    dataset = prepare_dataset(config.train.data)
    _log(f"data: {len(dataset.y_train)} train, {len(dataset.y_val)} val, {len(dataset.y_test)} test")
    rows, skipped = [], {}
    for preset in config.presets:
        try:
            model, history, run_dir = load_or_train(replace(config.train, preset=preset), dataset, config.runs_dir, verbose)
        except TransferUnavailable as error:
            skipped[preset] = str(error)
            _log(f"{preset} skipped: {error}")
            continue
        row = {"preset": preset, "run": Path(run_dir).name, **evaluate_rung(model, history, dataset, config, run_dir)}
        rows.append(row)
        if mlflow:
            from pipeline.tracking import log_ladder_run

            log_ladder_run(preset, row, config, history)
        _log(" | ".join(f"{key} {_format(row, key, spec)}" for key, _, spec in COLUMNS))
    kept_from = None
    if config.keep_rows:
        rows, kept_from = _with_kept_rows(config, rows)
    print(markdown_table(rows), flush=True)
    write_report(config, rows, dataset, command, skipped, kept_from)
    return rows


def _with_kept_rows(config, rows):
    """`rows` plus the existing report's rows of other presets, in PRESETS order; refuses a report
    made on other data or epochs (its rows would not compare)."""
    path = Path(config.out_dir) / "ladder.json"
    if not path.exists():
        return rows, None
    old = json.loads(path.read_text())
    same = ("data", "epochs")
    ours = json.loads(json.dumps(asdict(config.train), default=str))
    if any(old["config"]["train"][key] != ours[key] for key in same):
        raise ValueError(f"--keep-rows: {path} was made with other data or epochs ({old['command']}); give the same settings.")
    new = {row["preset"] for row in rows}
    merged = [row for row in old["rows"] if row["preset"] not in new] + rows
    order = {preset: index for index, preset in enumerate(PRESETS)}
    return sorted(merged, key=lambda row: order.get(row["preset"], len(order))), old["command"] or "research.ladder.run_ladder"


def evaluate_rung(model, history, dataset, config, run_dir=None):
    from classifier.evaluate import cifar10_accuracy

    x_test = to_float(dataset.x_test)
    predict = _probabilities(model, run_dir, config.predict_batch_size)
    # A first call traces the predict function; only the second, warm pass is timed.
    predict(x_test[: config.predict_batch_size])
    started = time.perf_counter()
    probabilities = predict(x_test)
    predict_seconds = time.perf_counter() - started
    y = dataset.y_test
    cifar = cifar10_accuracy(probabilities, y, list(dataset.class_names))
    return {
        "parameters": int(model.count_params()),
        "epochs_run": len(history.get("loss", [])),
        "fit_seconds": float(history["fit_seconds"]),
        "best_val_accuracy": max(history.get("val_accuracy", [0.0])),
        "test_accuracy": float((probabilities.argmax(axis=1) == y).mean()),
        "cifar10_test_accuracy_10_class": cifar.get("cifar10_test_accuracy_10_class"),
        "extra_classes_test_accuracy": cifar.get("extra_classes_test_accuracy"),
        # Plain cross-entropy: the training loss carries label smoothing, whose floor would hide
        # how sure each model really is.
        "test_loss": float(-np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-12, None)).mean()),
        "predict_ms_per_image": 1000 * predict_seconds / len(y),
    }


def _probabilities(model, run_dir, batch_size):
    """pictures -> probabilities: the model itself, or for a TFLite transfer run its extractor, then the head."""
    if run_dir is None or not (Path(run_dir) / "extractor.json").exists():
        return lambda x: model.predict(x, batch_size=batch_size, verbose=0)
    from bundle.embedding import embed
    from classifier.export import keras_outputs

    extractor = keras_outputs(model, run_dir)
    return lambda x: embed(extractor, x, batch_size).probabilities


def markdown_table(rows):
    lines = [
        "| " + " | ".join(header for _, header, _ in COLUMNS) + " |",
        "|" + "|".join("---" if key == "preset" else "---:" for key, _, _ in COLUMNS) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_format(row, key, spec) for key, _, spec in COLUMNS) + " |")
    return "\n".join(lines)


def write_report(config, rows, dataset, command=None, skipped=None, kept_from=None):
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, data = config.train, config.train.data
    sizes = {"train": len(dataset.y_train), "val": len(dataset.y_val), "test": len(dataset.y_test)}
    report = {
        "command": command, "machine": describe_machine(), "images": sizes,
        "config": asdict(config), "rows": rows, "skipped": skipped or {}, "rows_kept_from": kept_from,
    }
    write_text_atomic(out_dir / "ladder.json", json.dumps(report, indent=2, default=str) + "\n")
    made_by = f"`{command}`" if command else "`research.ladder.run_ladder` from Python"
    limit = "all images" if data.limit_per_class is None else f"at most {data.limit_per_class} images per class"
    text = "\n".join([
        "# Model ladder",
        "",
        markdown_table(rows),
        "",
        f"made by: {made_by}",
        "",
        f"- data: {len(dataset.class_names)} classes, {limit} ({sizes['train']:,} train after balancing, "
        f"{sizes['val']:,} val, {sizes['test']:,} test)",
        f"- pictures: {data.preprocessing.height}x{data.preprocessing.width}, {data.preprocessing.channels} channels, Lanczos, "
        + (f"JPEG round trip at quality {data.preprocessing.jpeg_quality}" if data.preprocessing.jpeg_quality else "no JPEG round trip"),
        f"- training: {train.epochs} epochs; plain-fit presets: early stopping patience {train.early_stopping_patience}, "
        f"batch {train.batch_size}, peak learning rate {train.peak_learning_rate}, "
        f"label smoothing {train.label_smoothing}; airbench presets: airbench's recipe (classifier/airbench.py, "
        f"batch {train.airbench.batch_size}, test-time views level {train.airbench.tta_level}); seed {train.seed}",
        f"- machine: {report['machine']}; fit and predict times are wall clock, on a machine shared with other jobs",
        "- test loss is plain cross-entropy of the predicted probabilities (no label smoothing); "
        "predict is the batched forward pass over the test split",
    ] + _notes(train, rows, skipped, kept_from) + [""])
    write_text_atomic(out_dir / "ladder.md", text)


def _notes(train, rows, skipped, kept_from):
    """The report's lines on transfer rows, rows kept from an earlier report, and skipped rungs."""
    lines = []
    transfer = [row["preset"] for row in rows if row["preset"] in TRANSFER_PRESETS]
    if transfer:
        mirrored = " (and mirrored copies)" if train.transfer.flip_copies else ""
        lines.append(f"- transfer ({', '.join(transfer)}): a head (Dense {train.transfer.head_width}) trained "
                     f"{train.transfer.head_epochs} epochs on the frozen bundled MobileNetV2's 1,280-wide average pool, "
                     f"each picture enlarged to 224 pixels{mirrored}; parameters count the head only, predict includes "
                     "the TFLite extractor")
    if kept_from:
        lines.append(f"- rows of other presets kept from `{kept_from}` (same data and epochs)")
    return lines + [f"- skipped: {preset}: {why}" for preset, why in (skipped or {}).items()]


def _format(row, key, spec):
    return "n/a" if row.get(key) is None else spec.format(row[key])


def _log(message):
    print(f"[ladder] {message}", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = LadderConfig()
    parser.add_argument("--presets", default=",".join(defaults.presets), help="comma-separated, in table order")
    parser.add_argument("--epochs", type=int, default=defaults.train.epochs)
    parser.add_argument("--limit-per-class", type=int, default=None, help="at most this many images per class (train and test)")
    parser.add_argument("--out", default=defaults.out_dir, help="folder for ladder.json and ladder.md")
    parser.add_argument("--runs", default=defaults.runs_dir, help="folder of training runs (reused when the config matches)")
    parser.add_argument("--data-dir", default=None, help="the development data folder (see pipeline.data_dir)")
    parser.add_argument("--keep-rows", action="store_true", help="keep the other presets' rows of an existing report on the same data")
    parser.add_argument("--mlflow", action="store_true", help="log each preset as an MLflow run ($MLFLOW_TRACKING_URI, else ./mlruns.db)")
    args = parser.parse_args()
    if args.mlflow:
        from monitoring.tracking import TrackingUnavailable, import_mlflow

        try:
            import_mlflow()
        except TrackingUnavailable as error:
            sys.exit(f"Cannot run the ladder: {error}")
    data_dir = resolve_data_dir(args.data_dir)
    config = LadderConfig(
        presets=tuple(p for p in args.presets.split(",") if p),
        train=TrainConfig(epochs=args.epochs, data=DataConfig(data_dir=data_dir, limit_per_class=args.limit_per_class),
                          transfer=TransferConfig(tflite_model=tflite_path(data_dir))),
        runs_dir=args.runs, out_dir=args.out, keep_rows=args.keep_rows,
    )
    run_ladder(config, command="python -m research.ladder " + shlex.join(sys.argv[1:]), mlflow=args.mlflow)
