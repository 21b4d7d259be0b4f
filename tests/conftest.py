"""Shared fixtures: real data from ../shared/data, never fakes of our own parts."""

from pathlib import Path

import pytest

from classifier.data import SHARED_DATA

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.exists():
        pytest.fail(f"The shared data folder {SHARED_DATA} is missing: tests read real data from it.")
    return SHARED_DATA


@pytest.fixture(scope="session")
def photo_paths(shared_data):
    """Real full-size ImageNet photos."""
    return sorted((shared_data / "imagenet-samples").glob("*.JPEG"))


@pytest.fixture(scope="session")
def cnn_bundle():
    """The committed bundle (assets/), without its fallback model."""
    from classifier.bundle import Bundle

    return Bundle.load(REPO / "assets", with_fallback=False)
