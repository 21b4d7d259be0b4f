"""Fixtures: a small real dataset (40 images per class) and the real model's probabilities."""

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _model_path():
    bundled = ROOT / "assets" / "model.keras"
    if bundled.exists():
        return bundled
    checkpoints = sorted(ROOT.glob("runs/*/checkpoint.keras"), key=lambda p: p.stat().st_mtime)
    return checkpoints[-1] if checkpoints else None


@pytest.fixture(scope="session")
def pictures(example_photos):
    """The repository's example photos (assets/examples) as 32x32 model inputs, with their mirror
    images and upside-down copies: 36 distinct real pictures that need no data folder."""
    from bundle.images import Preprocessing, to_uint8

    photos = np.stack([to_uint8(path, Preprocessing()) for path in example_photos.values()])
    return np.concatenate([photos, photos[:, :, ::-1], photos[:, ::-1], photos[:, ::-1, ::-1]])


@pytest.fixture(scope="session")
def small_dataset(shared_data):
    from classifier.dataset import DataConfig, prepare_dataset

    return prepare_dataset(DataConfig(data_dir=str(shared_data), limit_per_class=40))


@pytest.fixture(scope="session")
def predict():
    """uint8 images -> class probabilities from assets/model.keras, else the newest dev checkpoint."""
    path = _model_path()
    if path is None:
        pytest.skip("No model: neither assets/model.keras nor runs/*/checkpoint.keras exists.")
    import keras

    from bundle.embedding import embed
    from classifier.export import keras_outputs

    extractor = keras_outputs(keras.saving.load_model(path, compile=False))
    return lambda images: embed(extractor, np.asarray(images, dtype=np.uint8)).probabilities


@pytest.fixture(scope="session")
def small_probabilities(small_dataset, predict):
    """The model's probabilities for the small dataset's validation and test splits, once."""
    return {split: predict(getattr(small_dataset, f"x_{split}")) for split in ("val", "test")}


@pytest.fixture(scope="session")
def real_reference(small_dataset, small_probabilities):
    """A reference built the way the pipeline builds it, from half of the small test split (the
    small dataset's validation split is only 26 images); the other half is left for windows."""
    from monitoring.reference import build_reference

    x, half = small_dataset.x_test, len(small_dataset.x_test) // 2
    order = np.random.default_rng(0).permutation(len(x))
    baseline_index, window_index = order[:half], order[half:]
    probabilities = small_probabilities["test"]
    reference = build_reference(
        small_dataset.x_train, small_dataset.y_train, x[baseline_index], probabilities[baseline_index],
        small_dataset.class_names)
    return reference, x[window_index], probabilities[window_index]
