"""The model and features that benches and tests use when no bundle was built yet.

    model_path = find_model()                 # assets/model.keras, else the newest runs/*/*.keras
    features = dev_embeddings(per_class=300)  # cached under .cache/ood/, keyed by the model file

Each split is a subset drawn per class, so the CPU is spared while a model trains.
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


def subset_per_class(labels, per_class, seed=0):
    """Sorted indices of up to `per_class` random samples of each class."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(labels == label))[:per_class] for label in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def dev_embeddings(per_class=300, model_path=None, extra_sets=None, cache_dir=CACHE_DIR):
    """{split: {"features", "logits", "labels"}} for train (non-augmented), val and test subsets.

    `extra_sets` maps a name to a function returning uint8 images (e.g. the OOD sets); those are
    embedded and cached too, with labels -1.
    """
    from classifier.data import prepare_dataset

    model_path = Path(model_path or find_model() or "")
    if not model_path.is_file():
        raise FileNotFoundError("No model: build assets/ or let a training run write runs/*/checkpoint.keras.")
    stat = model_path.stat()
    key = hashlib.sha256(f"{model_path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{per_class}".encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"dev-{key}.npz"
    cached = dict(np.load(path)) if path.exists() else {}
    wanted = ("train", "val", "test") + tuple(extra_sets or ())
    missing = [name for name in wanted if f"{name}.features" not in cached]
    if missing:
        import keras

        from classifier.bundle import embed, feature_model

        extractor = feature_model(keras.saving.load_model(model_path, compile=False))
        dataset = prepare_dataset() if {"train", "val", "test"} & set(missing) else None
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
            cached.update({f"{name}.features": out.features, f"{name}.logits": out.logits, f"{name}.labels": y})
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp.npz")
        np.savez(temporary, **cached)
        os.replace(temporary, path)
    return {
        name: {part: cached[f"{name}.{part}"] for part in ("features", "logits", "labels")} for name in wanted
    }
