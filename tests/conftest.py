"""Shared fixtures: real data, never fakes of our own parts.

The development data folder is resolved once, the way the command line does it
(pipeline.data_dir: $HONEST_DATA_DIR, else ../shared/data beside the repository). Tests that need
it ask for `shared_data` (or `data_path("...")`) and are skipped, with one line naming what is
missing, on a fresh clone without it. Everything else runs on what the repository ships: the
bundle in assets/ (its example photos are real ImageNet photos) and pictures the tests make.
"""

from pathlib import Path

import pytest

from pipeline.data_dir import resolve_data_dir
from tests.postgres_server import postgres_server, store_target  # noqa: F401  (fixtures: a throwaway PostgreSQL)

REPO = Path(__file__).resolve().parent.parent


def development_data():
    """The data folder, anchored at the repository (tests may run from any folder)."""
    path = Path(resolve_data_dir())
    return path if path.is_absolute() else (REPO / path).resolve()


DATA_DIR = development_data()


def require_data(*parts):
    """DATA_DIR/parts, or skip the test with one line saying what is missing."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the development data: {path} is missing (set HONEST_DATA_DIR or put shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def shared_data():
    return require_data()


@pytest.fixture(scope="session")
def data_path():
    """data_path("imagenet-samples") -> that path in the data folder, or the test is skipped."""
    return require_data


@pytest.fixture(scope="session")
def photo_paths(shared_data):
    """Real full-size ImageNet photos."""
    return sorted((shared_data / "imagenet-samples").glob("*.JPEG"))


@pytest.fixture(scope="session")
def example_photos():
    """The real photos the repository ships with its bundle (assets/examples), name -> path."""
    return {path.stem: path for path in sorted((REPO / "assets" / "examples").glob("*.jpg"))}


@pytest.fixture(scope="session")
def model_path():
    """The committed bundle's model, else the newest training run's (bench.dev.find_model)."""
    from bench.dev import find_model

    path = find_model()
    if path is None:
        pytest.skip("No model: neither assets/model.keras nor runs/*/model.keras exists.")
    return path


@pytest.fixture(scope="session")
def cnn_bundle():
    """The committed bundle (assets/), without its fallback model."""
    from service.bundle import Bundle

    return Bundle.load(REPO / "assets", with_fallback=False)


@pytest.fixture(scope="session")
def keras_model():
    """The committed bundle's CNN in Keras: the build side's copy of the model.tflite it serves."""
    import keras

    return keras.saving.load_model(REPO / "assets" / "model.keras", compile=False)
