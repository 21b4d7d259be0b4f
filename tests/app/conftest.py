"""Start the real app (python app.py) on a free localhost port, on the committed bundle."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# TEST_BUNDLE points the app tests at another bundle folder (e.g. a smoke build) while developing.
ASSETS = Path(os.environ.get("TEST_BUNDLE", REPO / "assets"))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """(url, state_dir) of a running app; stopped at the end of the session."""
    assert (ASSETS / "bundle.json").exists(), "the committed bundle assets/ is missing: run python -m pipeline.build"
    state_dir = tmp_path_factory.mktemp("app-state")
    port = free_port()
    log_path = state_dir / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--assets", str(ASSETS), "--port", str(port), "--state-dir", str(state_dir)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 180
    while "Serving on" not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("the app did not start:\n" + log_path.read_text()[-3000:])
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/", state_dir
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)
