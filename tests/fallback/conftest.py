"""Fixtures for the fallback tests: real photos, the real TFLite models, and the CNN when one exists."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from classifier.data import SHARED_DATA  # noqa: E402

SAMPLES = SHARED_DATA / "imagenet-samples"
MODELS = SHARED_DATA / "imagenet-models"


@pytest.fixture(scope="session")
def photo():
    """photo('n02088364_beagle') -> that real imagenet-samples photo as a PIL image."""
    from classifier.images import open_image

    return lambda name: open_image(SAMPLES / f"{name}.JPEG")


@pytest.fixture(scope="session")
def mobilenet_v2():
    from fallback.models import TFLiteImageNetClassifier

    return TFLiteImageNetClassifier(MODELS / "mobilenet_v2_1.0_224_quant.tflite")


@pytest.fixture(scope="session")
def tiny_model():
    from fallback.models import TFLiteImageNetClassifier

    return TFLiteImageNetClassifier(MODELS / "mobilenet_v1_0.25_128_quant.tflite")


@pytest.fixture(scope="session")
def fallback_v2(mobilenet_v2):
    from fallback import Fallback
    from fallback.label_map import build_label_map
    from fallback.models import IMAGENET_LABELS, read_imagenet_labels

    return Fallback(mobilenet_v2, build_label_map(), read_imagenet_labels(IMAGENET_LABELS))


@pytest.fixture(scope="session")
def cnn_bundle():
    """The committed bundle's CNN (assets/) if there is one, else the newest dev checkpoint."""
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
