"""Fixtures for the fallback tests: real photos and the real TFLite models of the data folder
(skipped, one line, without it). The shipped fallback (assets/fallback) needs no data folder."""

import pytest

from tests.conftest import REPO

# The tiny MobileNetV1 in the data folder's imagenet-models/: a fast stand-in for the tests.
MOBILENET_V1_TINY = "mobilenet_v1_0.25_128_quant.tflite"


@pytest.fixture(scope="session")
def photo(data_path):
    """photo('n02088364_beagle') -> that real imagenet-samples photo as a PIL image."""
    from bundle.images import open_image

    samples = data_path("imagenet-samples")
    return lambda name: open_image(samples / f"{name}.JPEG")


@pytest.fixture(scope="session")
def models_dir(data_path):
    from fallback.models import MODELS_DIR

    return data_path(MODELS_DIR)


@pytest.fixture(scope="session")
def mobilenet_v2(models_dir):
    from fallback.models import MOBILENET_V2, TFLiteImageNetClassifier

    return TFLiteImageNetClassifier(models_dir / MOBILENET_V2)


@pytest.fixture(scope="session")
def tiny_model(models_dir):
    from fallback.models import TFLiteImageNetClassifier

    return TFLiteImageNetClassifier(models_dir / MOBILENET_V1_TINY)


@pytest.fixture(scope="session")
def fallback_v2(mobilenet_v2, models_dir, data_path):
    from classifier.label_map import build_label_map
    from fallback import Fallback
    from fallback.models import IMAGENET_LABELS, read_imagenet_labels

    return Fallback(mobilenet_v2, build_label_map(data_path("wordnet")), read_imagenet_labels(models_dir / IMAGENET_LABELS))


@pytest.fixture(scope="session")
def shipped_fallback():
    """The fallback folder the repository ships in assets/."""
    from fallback import load_fallback

    return load_fallback(REPO / "assets" / "fallback")
