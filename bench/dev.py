"""The model and features that benches and tests use when no bundle was built yet.

    model_path = find_model()                 # assets/model.keras, else the newest runs/*/*.keras
    features = dev_embeddings(per_class=300)  # cached under .cache/ood/, keyed by the model file

Each split is a subset drawn per class, so the CPU is spared while a model trains. The data folder
is the command line's (pipeline.data_dir: $HONEST_DATA_DIR, else ../shared/data beside the repo)
unless one is given.
"""

import hashlib
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO / ".cache" / "ood"


def find_model(repo=REPO):
    """assets/model.keras if built, else the newest model of a training run (a finished run's
    model.keras or a running one's checkpoint.keras); None if neither."""
    shipped = Path(repo) / "assets" / "model.keras"
    if shipped.exists():
        return shipped
    models = [*Path(repo).glob("runs/*/model.keras"), *Path(repo).glob("runs/*/checkpoint.keras")]
    return max(models, key=lambda p: p.stat().st_mtime) if models else None


def data_folder(data_dir=None):
    """The given data folder, else the command line's default (pipeline.data_dir), which is
    anchored at the repository, as tests/conftest.py does, so that benches run from any folder."""
    from pipeline.data_dir import resolve_data_dir

    if data_dir:
        return Path(data_dir).expanduser().resolve()
    path = Path(resolve_data_dir())
    return path if path.is_absolute() else (REPO / path).resolve()


def dev_data_config(data_dir=None):
    """The DataConfig of the development data in `data_dir` (see data_folder), its raw pictures
    cached in the repository's .cache/data whatever the working folder."""
    from classifier.dataset import DataConfig

    return DataConfig(data_dir=str(data_folder(data_dir)), cache_dir=str(REPO / ".cache" / "data"))


def subset_per_class(labels, per_class, seed=0):
    """Sorted indices of up to `per_class` random samples of each class."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(labels == label))[:per_class] for label in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def dev_embeddings(per_class=300, model_path=None, extra_sets=None, data_dir=None, cache_dir=CACHE_DIR):
    """{split: {"features", "logits", "labels"}} for train (non-augmented), val and test subsets
    of the development data in `data_dir` (see data_folder).

    `extra_sets` maps a name to a function returning uint8 images (e.g. the OOD sets); those are
    embedded and cached too, with labels -1.
    """
    from classifier.dataset import prepare_dataset

    model_path = Path(model_path or find_model() or "")
    if not model_path.is_file():
        raise FileNotFoundError("No model: build assets/ or let a training run write runs/*/checkpoint.keras.")
    data_dir = data_folder(data_dir)
    stat = model_path.stat()
    key = f"{model_path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{per_class}|{data_dir}"
    key = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"dev-{key}.npz"
    cached = dict(np.load(path)) if path.exists() else {}
    wanted = ("train", "val", "test") + tuple(extra_sets or ())
    missing = [name for name in wanted if f"{name}.ood_features" not in cached]
    if missing:
        import keras

        from bundle.embedding import embed
        from classifier.export import keras_outputs

        extractor = keras_outputs(keras.saving.load_model(model_path, compile=False))
        splits = {"train", "val", "test"} & set(missing)
        dataset = prepare_dataset(dev_data_config(data_dir)) if splits else None
        for name in missing:
            if name in ("train", "val", "test"):
                x, y = getattr(dataset, f"x_{name}"), getattr(dataset, f"y_{name}")
                keep = np.flatnonzero(~dataset.train_augmented) if name == "train" else np.arange(len(y))
                keep = keep[subset_per_class(y[keep], per_class)]
                x, y = x[keep], y[keep]
            else:
                x = extra_sets[name]()
                y = np.full(len(x), -1)
            out = embed(extractor, x)
            cached.update({f"{name}.features": out.features, f"{name}.ood_features": out.ood_features,
                           f"{name}.logits": out.logits, f"{name}.labels": y})
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp.npz")
        np.savez(temporary, **cached)
        os.replace(temporary, path)
    return {
        name: {part: cached[f"{name}.{part}"] for part in ("features", "ood_features", "logits", "labels")} for name in wanted
    }
