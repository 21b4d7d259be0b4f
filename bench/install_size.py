"""What the server and the build cost to install: a fresh virtual environment per requirements
file, its size on disk and the time pip took (needs the package index).

    python -m bench.install_size [--files requirements.txt requirements-build.txt]
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.app_server import REPO


def folder_mb(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", default=["requirements.txt", "requirements-build.txt"])
    args = parser.parse_args()
    for name in args.files:
        venv = Path(tempfile.mkdtemp(prefix="install-size-"))
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            started = time.perf_counter()
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", "-r", str(REPO / name)], check=True,
                           stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - started
            print(f"{name:<26} venv {folder_mb(venv):,.0f} MB on disk, pip install {seconds:.0f} s", flush=True)
        finally:
            shutil.rmtree(venv, ignore_errors=True)


if __name__ == "__main__":
    main()
