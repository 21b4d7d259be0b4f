"""The real app (python app.py) on a free localhost port, on the committed bundle."""

import os
from pathlib import Path

import pytest

from bench.app_server import REPO, running_app

# TEST_BUNDLE points the app tests at another bundle folder (e.g. a smoke build) while developing.
ASSETS = Path(os.environ.get("TEST_BUNDLE", REPO / "assets"))


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """(url, state_dir) of a running app; stopped at the end of the session."""
    assert (ASSETS / "bundle.json").exists(), "the committed bundle assets/ is missing: run python -m pipeline.build"
    state_dir = tmp_path_factory.mktemp("app-state")
    # No per-client limits here: the suite is one client sending many pictures. The limits have
    # their own servers in test_security.py.
    with running_app(ASSETS, state_dir, extra_args=("--rate-limit", "0")) as (url, _):
        yield url, state_dir


@pytest.fixture(scope="session")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)
