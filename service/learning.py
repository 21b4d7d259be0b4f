"""The admin's learning controls: run the learning step off the request path, promote, roll back.

    learning = LearningControl(registry, watcher, corrections, store_target, "state")
    learning.start()            # python -m pipeline.learn --gate, in its own process
    learning.status()           # {"state", "serving", "accepted", "versions", "log"}
    learning.promote(version); learning.rollback()

The server imports nothing of the build: the learning step (TensorFlow, Keras) runs as its own
process, `python -m pipeline.learn`, which needs the build's requirements (requirements-build.txt)
and the data folder; its output goes to STATE/learning.log. One step runs at a time per process.
"""

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path

from service.corrections import SOURCES
from service.registry import RegistryError

LOG_LINES = 12


class LearningControl:
    def __init__(self, registry, watcher, corrections, store_target, state_dir, assets="assets", data_dir=None):
        self.registry, self.watcher, self.corrections = registry, watcher, corrections
        self.store_target, self.assets, self.data_dir = str(store_target), str(assets), data_dir
        self.state_dir = Path(state_dir)
        self.log_path = self.state_dir / "learning.log"
        self._process, self._lock = None, threading.Lock()

    def start(self):
        """Start the learning step; returns a plain sentence for the admin."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return "A learning step is already running."
            if importlib.util.find_spec("keras") is None:
                return "The learning step needs the build's requirements on this machine: pip install -r requirements-build.txt"
            if self.corrections.counts()["accepted"] == 0:
                return "Accept some learning pictures first (the Review tab)."
            champion = self.registry.champion()
            command = [sys.executable, "-m", "pipeline.learn", "--bundle", champion.path if champion else self.assets,
                       "--corrections", self.store_target, "--out", str(self.state_dir / "bundles"), "--gate"]
            if self.data_dir:
                command += ["--data-dir", str(self.data_dir)]
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "wb") as log:
                self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return "The learning step started; it takes a few minutes (Refresh shows how far it is)."

    def status(self):
        process = self._process
        if process is None:
            state = "not started"
        elif process.poll() is None:
            state = f"running (process {process.pid})"
        else:
            state = "finished" if process.returncode == 0 else f"failed (exit {process.returncode}; see the log)"
        return {
            "state": state,
            "serving": self.watcher.predictor.bundle.version,
            "accepted": {source: self.corrections.counts(source)["accepted"] for source in SOURCES},
            "versions": self.registry.versions(),
            "log": self._log_tail(),
        }

    def promote(self, version):
        if not version:
            return "Choose a version first."
        try:
            self.registry.promote(version)
        except RegistryError as error:
            return f"⚠️ {error}"
        return f"Promoted {version}; {self._switch()}"

    def rollback(self):
        try:
            version = self.registry.rollback()
        except RegistryError as error:
            return f"⚠️ {error}"
        return f"Rolled back to {version.version}; {self._switch()}"

    def _switch(self):
        """Swap this replica at once (the others follow within their poll)."""
        try:
            return f"this replica now serves {self.watcher.check()}."
        except Exception as error:  # the watcher keeps trying; the admin reads why
            return f"this replica could not load it yet: {error}"

    def _log_tail(self):
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-LOG_LINES:])
