"""Print the OOD table (AUROC, FPR@95%TPR, refusal rates) for a bundle's model.

    python bench/ood_table.py                      # assets/ (else the newest training checkpoint)
    python bench/ood_table.py --per-class 1000     # fit on a subset of the training images: faster
    python bench/ood_table.py --stored             # just print the table saved in metrics.json

Recomputing runs the pipeline's OOD stage (pipeline.ood_stage.run) on the bundle's model into --out
(a temporary folder unless given), so the figures are those a build would write. The pictures come
from the data folder: --data-dir, else $HONEST_DATA_DIR, else ../shared/data (pipeline.data_dir).
"""

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from pipeline.ood_evaluation import format_table  # noqa: E402
from pipeline.context import BuildContext  # noqa: E402
from pipeline.data_dir import resolve_data_dir  # noqa: E402
from pipeline.ood_stage import OODConfig, run  # noqa: E402


def load_bundle(directory):
    """The bundle in `directory`, or (none built yet) the dev checkpoint wrapped as one."""
    from bench.dev import find_model
    from bundle.images import Preprocessing
    from bundle.labels import CLASS_NAMES
    from service.bundle import Bundle

    if (Path(directory) / "bundle.json").exists():
        return Bundle.load(directory, with_fallback=False)
    import keras

    path = find_model()
    if path is None:
        raise SystemExit(f"No bundle in {directory} and no training checkpoint under runs/.")
    print(f"No bundle in {directory}: using {path}")
    model = keras.saving.load_model(path, compile=False)
    return Bundle(directory=Path(path).parent, model=model, class_names=CLASS_NAMES,
                  preprocessing=Preprocessing(), manifest={})


def subset_dataset(dataset, per_class):
    """The dataset with at most `per_class` non-augmented training images per class."""
    from dataclasses import replace

    from bench.dev import subset_per_class

    original = np.flatnonzero(~dataset.train_augmented)
    keep = original[subset_per_class(dataset.y_train[original], per_class)]
    return replace(dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep],
                   train_augmented=np.zeros(len(keep), bool))


def data_config(bundle, data_dir):
    """The data the bundle's model was trained on (its config.json), read from `data_dir`; the
    development data's defaults for a training checkpoint, or a bundle whose config.json this
    version of classifier.dataset cannot read (the reason is printed)."""
    from classifier.dataset import DataConfig
    from pipeline.bundle_files import recorded_data_config

    try:
        return replace(recorded_data_config(bundle.directory), data_dir=data_dir)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"Not the bundle's recorded data settings, the development data's defaults: {error}")
        return DataConfig(data_dir=data_dir)


def main(bundle_dir="assets", per_class=None, out=None, stored=False, near_limit=None, far_limit=5000, data_dir=None):
    if stored:
        metrics = json.loads((Path(bundle_dir) / "metrics.json").read_text())["ood"]
        print(format_table(metrics["table"]))
        print(f"shipped: {metrics['chosen']} ({metrics['reason']})")
        return metrics
    from classifier.dataset import prepare_dataset

    data_dir = resolve_data_dir(data_dir)
    bundle = load_bundle(bundle_dir)
    data = data_config(bundle, data_dir)
    dataset = prepare_dataset(data)
    if per_class:
        dataset = subset_dataset(dataset, per_class)
    embeddings = {split: bundle.embed(getattr(dataset, f"x_{split}")) for split in ("train", "val", "test")}
    out = Path(out or tempfile.mkdtemp(prefix="ood-table-"))
    context = BuildContext(bundle, dataset, embeddings, out, data, data_dir)
    metrics = run(context, OODConfig(near_ood_limit=near_limit, far_ood_limit=far_limit))
    print(f"shipped: {metrics['chosen']} ({metrics['reason']})")
    print(f"ID test refused: {metrics['id_refusal_rate']:.3f} (correctly classified ones: {metrics['id_refusal_rate_correct']:.3f})")
    print(f"set sizes: {metrics['sizes']}")
    print(f"targets: {metrics['targets']}")
    print(f"OOD stage: {metrics['seconds']:.0f} s; detector, config and histograms in {out}")
    return metrics


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", nargs="?", default="assets")
    parser.add_argument("--per-class", type=int, default=None, help="training images per class to fit on (default: all)")
    parser.add_argument("--near-limit", type=int, default=None, help="near-OOD images (default: all)")
    parser.add_argument("--far-limit", type=int, default=5000, help="MNIST digits")
    parser.add_argument("--out", default=None, help="folder for the detector, config and figure")
    parser.add_argument("--stored", action="store_true", help="print the table in the bundle's metrics.json")
    parser.add_argument("--data-dir", default=None, help="the development data folder (see pipeline.data_dir)")
    args = parser.parse_args()
    main(args.bundle, args.per_class, args.out, args.stored, args.near_limit, args.far_limit, args.data_dir)
