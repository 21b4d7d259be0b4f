"""Fixtures for the fallback tests: real photos and the real TFLite models (the CNN: tests/conftest.py)."""

import pytest

from classifier.data import SHARED_DATA

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


