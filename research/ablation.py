"""The airbench94 recipe, each trick removed in turn: what each one is worth here.

    python -m research.ablation [--data-dir DIR] [--per-class 1000] [--epochs 8]

Every row trains the airbench94 net on the same pictures for the same epochs, with one setting of
classifier.airbench.AirbenchConfig changed, and is scored on all 10,000 CIFAR-10 test pictures.
The setting is reduced so that the whole table fits in the better part of an hour on 2 CPU cores:
CIFAR-10's 10 classes only, `per_class` training pictures of each, `epochs` epochs. The figures
are therefore lower than the full build's; the differences between rows are what it measures.
Writes assets/reports/ablation.json and ablation.md (a rebuild keeps reports/).
"""

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path


from classifier.airbench_config import AirbenchConfig
from bundle.atomic import write_json_atomic, write_text_atomic
from classifier.dataset import DataConfig, prepare_dataset
from bundle.images import to_float
from bundle.arrays import balanced_sample
from classifier.train import TrainConfig, describe_machine, train
from pipeline.data_dir import resolve_data_dir

# (row name, the AirbenchConfig fields it changes)
ROWS = (
    ("full recipe", {}),
    ("no patch whitening (first conv trained from random init)", {"whiten": False}),
    ("no identity (Dirac) init of the convolutions", {"dirac": False}),
    ("no lookahead", {"lookahead": False}),
    ("no label smoothing", {"label_smoothing": 0.0}),
    ("BatchNorm biases at 1x the learning rate", {"bias_scaler": 1.0}),
    ("no 1/9 logit scale", {"logit_scale": 1.0}),
    ("no flips", {"flip": False}),
    ("no translations", {"translate": 0}),
    ("no test-time views (one view)", {"tta_level": 0}),
)


@dataclass(frozen=True)
class AblationConfig:
    data_dir: str | None = None  # the data folder (the command line resolves it: pipeline.data_dir)
    per_class: int = 1000  # training pictures of each CIFAR-10 class
    epochs: int = 8
    seed: int = 0
    out_dir: str = "assets/reports"


def run_ablation(config, verbose=2):
    data = DataConfig(data_dir=config.data_dir, extra_classes=(), seed=config.seed)
    dataset = subset(prepare_dataset(data), config.per_class, config.seed)
    rows = []
    for name, change in ROWS:
        train_config = TrainConfig(preset="airbench94", epochs=config.epochs, seed=config.seed, data=data,
                                   airbench=replace(AirbenchConfig(), **change))
        print(f"[ablation] {name}", flush=True)
        with tempfile.TemporaryDirectory() as run_dir:
            model, history, seconds = train(train_config, dataset, run_dir, verbose)
        probabilities = model.predict(to_float(dataset.x_test), batch_size=500, verbose=0)
        accuracy = float((probabilities.argmax(1) == dataset.y_test).mean())
        rows.append({"row": name, "change": change, "test_accuracy": accuracy, "fit_seconds": seconds})
        print(f"[ablation] {name}: {accuracy:.4f} in {seconds:.0f} s", flush=True)
    report = {"config": asdict(config), "machine": describe_machine(), "train_pictures": int(len(dataset.y_train)),
              "test_pictures": int(len(dataset.y_test)), "rows": rows}
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "ablation.json", report)
    write_text_atomic(out / "ablation.md", markdown(report))
    return report


def subset(dataset, per_class, seed):
    """The dataset with at most `per_class` training pictures of each class (the test split whole)."""
    keep = balanced_sample(dataset.y_train, per_class, seed=seed)
    return replace(dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep],
                   train_augmented=None if dataset.train_augmented is None else dataset.train_augmented[keep])


def markdown(report):
    c = report["config"]
    full = report["rows"][0]["test_accuracy"]
    lines = [
        "# airbench94 ablation",
        "",
        f"Each row: the airbench94 net, {c['epochs']} epochs on {report['train_pictures']:,} CIFAR-10 training pictures "
        f"({c['per_class']} per class, JPEG copy), scored on the {report['test_pictures']:,} CIFAR-10 test pictures; "
        f"one trick removed per row. Seed {c['seed']}, one run per row, on {report['machine']}. "
        "Made by `python -m research.ablation`.",
        "",
        "| recipe | test accuracy | vs full | fit time (s) |",
        "|---|---:|---:|---:|",
    ]
    for row in report["rows"]:
        delta = row["test_accuracy"] - full
        lines.append(f"| {row['row']} | {row['test_accuracy']:.2%} | {delta * 100:+.1f} pt | {row['fit_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--per-class", type=int, default=AblationConfig.per_class)
    parser.add_argument("--epochs", type=int, default=AblationConfig.epochs)
    parser.add_argument("--out", default=AblationConfig.out_dir)
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    if not Path(data_dir, "cifar10-jpeg.tgz").exists():
        print(f"Cannot run the ablation: {data_dir}/cifar10-jpeg.tgz does not exist (give --data-dir).", file=sys.stderr)
        return 2
    started = time.perf_counter()
    report = run_ablation(AblationConfig(data_dir, args.per_class, args.epochs, out_dir=args.out))
    print(json.dumps([(r["row"], round(r["test_accuracy"], 4)) for r in report["rows"]]))
    print(f"[ablation] {time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
