"""Few pictures per class: training from scratch against transfer learning.

    python -m bench.few_pictures                     # 10 Tiny ImageNet classes, 20 training pictures each
    python -m bench.few_pictures --per-class 50 --classes 5

Picks --classes of the Tiny ImageNet subset's training classes and --per-class of their training
pictures (seeded), writes them as an image-folder tree with those classes' val pictures (50 each)
as its test tree, and trains on it exactly as `python -m pipeline.build --data` does (the same
split, balancing and classifier.train): `fastnet_small` from scratch, and each transfer preset
that runs offline here. Prints test accuracy and fit time of each; writes the figures to
assets/reports/few_pictures.json. The data folder is --data-dir, else $HONEST_DATA_DIR, else
../shared/data. The issue's goal: the offline transfer preset >= 65%.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from classifier.readers import IMAGE_SUFFIXES, walk_files
from pipeline.data_dir import resolve_data_dir

ARCHIVE = "tiny-imagenet-subset.tgz"
ROOT = "tiny-imagenet-200"


def write_tree(archive, folder, classes=10, per_class=20, seed=0, test_per_class=None):
    """`folder`/train/<wnid>/*.JPEG (per_class, seeded) and `folder`/test/<wnid>/*.JPEG (the val
    pictures, all or test_per_class of them), copied byte for byte. Returns the wnids."""
    pictures = {}
    for relative, read in walk_files(archive, f"{ROOT}/train"):
        pictures.setdefault(relative.split("/")[0], []).append((relative, read()))
    rng = np.random.default_rng(seed)
    wnids = sorted(rng.choice(sorted(pictures), size=classes, replace=False).tolist())
    for wnid in wnids:
        rows = sorted(pictures[wnid])
        (folder / "train" / wnid).mkdir(parents=True)
        for index in rng.choice(len(rows), size=min(per_class, len(rows)), replace=False):
            name, data = rows[index]
            (folder / "train" / wnid / name.split("/")[-1]).write_bytes(data)
    annotations, val = {}, {}
    for relative, read in walk_files(archive, f"{ROOT}/val", suffixes=IMAGE_SUFFIXES + (".txt",)):
        if relative == "val_annotations.txt":
            annotations = dict(line.split("\t")[:2] for line in read().decode().splitlines() if "\t" in line)
        else:
            val[relative.split("/")[-1]] = read()
    written = {wnid: 0 for wnid in wnids}
    for name in sorted(val):
        wnid = annotations.get(name)
        if wnid in written and (test_per_class is None or written[wnid] < test_per_class):
            (folder / "test" / wnid).mkdir(parents=True, exist_ok=True)
            (folder / "test" / wnid / name).write_bytes(val[name])
            written[wnid] += 1
    return wnids


def measure(preset, dataset, data_config, runs, data_dir, epochs):
    """Train `preset` as the build would, and its test accuracy from the same embedding the app uses."""
    from bundle.embedding import embed
    from classifier.export import keras_outputs
    from classifier.train import TrainConfig, train
    from classifier.transfer import TFLITE_FILE_NAME, TransferConfig

    config = TrainConfig(preset=preset, epochs=epochs, batch_size=32, data=data_config,
                         transfer=TransferConfig(tflite_model=str(Path(data_dir) / "imagenet-models" / TFLITE_FILE_NAME)))
    out_dir = Path(runs) / preset
    started = time.perf_counter()
    model, history, fit_seconds = train(config, dataset, out_dir, verbose=0)
    total = time.perf_counter() - started
    started = time.perf_counter()
    probabilities = embed(keras_outputs(model, out_dir), dataset.x_test).probabilities
    predict_seconds = time.perf_counter() - started
    return {
        "preset": preset, "test_accuracy": float((probabilities.argmax(axis=1) == dataset.y_test).mean()),
        "fit_seconds": round(total, 1), "epochs_run": len(history.get("loss", [])),
        "predict_ms_per_image": round(1000 * predict_seconds / len(dataset.y_test), 2),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=64, help="Tiny ImageNet's own size")
    parser.add_argument("--epochs", type=int, default=30, help="fastnet_small's epochs (the transfer head has its own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presets", default="fastnet_small,mobilenet_v2_tflite,mobilenet_v2,resnet50")
    parser.add_argument("--out", default="assets/reports/few_pictures.json")
    args = parser.parse_args(argv)

    from classifier.dataset import DataConfig, prepare_dataset
    from bundle.images import Preprocessing
    from classifier.train import describe_machine
    from classifier.transfer import TransferUnavailable

    data_dir = Path(resolve_data_dir(args.data_dir))
    work = Path(tempfile.mkdtemp(prefix="few_pictures-"))
    try:
        wnids = write_tree(data_dir / ARCHIVE, work / "data", args.classes, args.per_class, args.seed)
        data_config = DataConfig(source=str(work / "data"), source_subdir="train", source_test_subdir="test",
                                 preprocessing=Preprocessing(args.image_size, args.image_size, 3), cache_dir=str(work / "cache"))
        dataset = prepare_dataset(data_config)
        print(f"data: {len(wnids)} Tiny ImageNet classes ({', '.join(wnids)}), {args.per_class} pictures each "
              f"({len(dataset.y_train)} train, {len(dataset.y_val)} val after the build's split); "
              f"test: their {len(dataset.y_test)} val pictures; {args.image_size}x{args.image_size}", flush=True)
        rows, skipped = [], {}
        for preset in [p for p in args.presets.split(",") if p]:
            try:
                row = measure(preset, dataset, data_config, work / "runs", data_dir, args.epochs)
            except TransferUnavailable as error:
                skipped[preset] = str(error)
                print(f"{preset:22s} skipped: {error}", flush=True)
                continue
            rows.append(row)
            print(f"{preset:22s} test accuracy {row['test_accuracy']:.3f}   fit {row['fit_seconds']:.0f} s "
                  f"({row['epochs_run']} epochs)   predict {row['predict_ms_per_image']:.1f} ms/picture", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"command": "python -m bench.few_pictures " + " ".join(sys.argv[1:] if argv is None else argv), "machine": describe_machine(),
              "classes": wnids, "pictures_per_class": args.per_class, "image_size": args.image_size,
              "test_pictures": int(len(dataset.y_test)), "seed": args.seed, "rows": rows, "skipped": skipped}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
