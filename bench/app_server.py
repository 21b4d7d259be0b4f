"""Start the real app (python app.py) on a free localhost port: for benches and tests."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_app(assets, state_dir, timeout=180, extra_args=(), command=None, behind_proxy=True):
    """Yields (url, seconds from process start to serving). The log is state_dir/server.log, the
    process id state_dir/server.pid (for memory measurements and kill -9), the admin area's port
    state_dir/admin.port (it serves only when the environment gives it a password).
    `command` (argv before --port) serves something else than app.py (bench.gradio_floor).
    `behind_proxy`: the app believes X-Forwarded-For from loopback, as behind the --share tunnel,
    so that a bench or test on this machine can be many visitors (app.py --behind-proxy)."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    port, admin_port = free_port(), free_port()
    (state_dir / "admin.port").write_text(str(admin_port))
    log_path = state_dir / "server.log"
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)] if command else
            [sys.executable, "app.py", "--assets", str(assets), "--port", str(port), "--admin-port", str(admin_port),
             "--state-dir", str(state_dir), *(("--behind-proxy",) if behind_proxy else ()), *extra_args],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    (state_dir / "server.pid").write_text(str(process.pid))
    try:
        while "Serving on" not in log_path.read_text():
            if process.poll() is not None or time.perf_counter() - started > timeout:
                raise RuntimeError("the app did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/", time.perf_counter() - started
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
