"""Fixtures for the similarity tests: real CIFAR/Tiny ImageNet images, the real CNN's features."""

from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cnn_bundle():
    """The committed bundle (assets/) if there is one, else the newest dev checkpoint."""
    from classifier.bundle import Bundle
    from classifier.images import Preprocessing
    from classifier.labels import CLASS_NAMES

    assets = ROOT / "assets"
    if (assets / "bundle.json").exists():
        return Bundle.load(assets, with_fallback=False)
    candidates = [assets / "model.keras"] if (assets / "model.keras").exists() else []
    candidates += sorted(ROOT.glob("runs/*/checkpoint.keras"), key=lambda path: path.stat().st_mtime, reverse=True)
    if not candidates:
        pytest.skip("no assets/model.keras and no runs/*/checkpoint.keras to test with")
    import keras

    model = keras.saving.load_model(candidates[0], compile=False)
    return Bundle(candidates[0].parent, model, CLASS_NAMES, Preprocessing(), {})


@dataclass
class Embedded:
    dataset: object
    train: object  # classifier.bundle.Embedding of dataset.x_train
    val: object
    test: object


@pytest.fixture(scope="session")
def embedded(cnn_bundle):
    """40 images per class (the smoke build's data, cached in .cache/data), embedded by the CNN."""
    from classifier.data import DataConfig, prepare_dataset

    dataset = prepare_dataset(DataConfig(limit_per_class=40))
    return Embedded(
        dataset, cnn_bundle.embed(dataset.x_train), cnn_bundle.embed(dataset.x_val), cnn_bundle.embed(dataset.x_test)
    )


@pytest.fixture(scope="session")
def real_photos():
    """Real full-size photos (ImageNet samples) as the bytes a user would upload."""
    from classifier.data import SHARED_DATA

    folder = SHARED_DATA / "imagenet-samples"
    if not folder.exists():
        pytest.fail(f"{folder} is missing: the tests read real photos from it.")
    return {path.stem: path.read_bytes() for path in sorted(folder.glob("*.JPEG"))}

