"""Cold start, side by side: from launch to the first answered /api/v1/classify for `python app.py`,
and from launch to the first page for a do-nothing Gradio page (bench.gradio_floor), in turns;
then the app's resident memory at rest. With --baseline, another checkout's app (e.g. the last
release, on its own bundle) is timed in the same turns.

    python -m bench.startup [--assets assets] [--repeats 3] [--baseline /tmp/old-checkout]

Prints each figure's runs and median, the app's median over the floor's, and resident memory
(VmRSS of the server process, after one answer and 2 s idle).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.app_server import REPO, free_port

PHOTO = REPO / "assets" / "examples"


def _first_photo():
    return sorted(PHOTO.glob("*.jpg"))[0]


def _wait(check, process, timeout=180):
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError("the server did not answer in time")


def _classify(url, photo):
    request = urllib.request.Request(url + "api/v1/classify", data=photo.read_bytes(), headers={"Content-Type": "image/jpeg"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status == 200 and b"answered_by" in response.read()


def _page(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


def _resident_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_once(kind, checkout, assets):
    """(seconds from launch to the first answer, resident MB at rest) for one server."""
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        if kind == "floor":
            command = [sys.executable, "-m", "bench.gradio_floor", "--port", str(port)]
        else:
            command = [sys.executable, "app.py", "--assets", str(assets), "--port", str(port), "--state-dir", state,
                       "--rate-limit", "0"]
        url = f"http://127.0.0.1:{port}/"
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait((lambda: _page(url)) if kind == "floor" else (lambda: _classify(url, _first_photo())), process)
            seconds = time.perf_counter() - started
            time.sleep(2)
            return seconds, _resident_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default=None, help="another checkout whose app.py (on its own assets/) is timed alongside")
    args = parser.parse_args()
    servers = {"gradio page doing nothing": ("floor", REPO, None), "app.py": ("app", REPO, Path(args.assets).resolve())}
    if args.baseline:
        servers["baseline app.py"] = ("app", Path(args.baseline), Path(args.baseline) / "assets")
    runs = {name: [] for name in servers}
    for _ in range(args.repeats):
        for name, (kind, checkout, assets) in servers.items():
            runs[name].append(run_once(kind, checkout, assets))
    floor = statistics.median(seconds for seconds, _ in runs["gradio page doing nothing"])
    for name, results in runs.items():
        seconds = [s for s, _ in results]
        memory = statistics.median(m for _, m in results)
        print(f"{name:<28} launch to first answer (s): {', '.join(f'{s:.1f}' for s in seconds)}; median "
              f"{statistics.median(seconds):.2f} ({statistics.median(seconds) / floor:.2f}x the page doing nothing); "
              f"resident at rest {memory:.0f} MB")


if __name__ == "__main__":
    main()
