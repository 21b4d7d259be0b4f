"""MLflow, an optional extra (pip install -r requirements-mlflow.txt): where the store is, and the
upload logger behind `python app.py --mlflow`.

    tracker = UploadTracker("state")            # store: $MLFLOW_TRACKING_URI, else sqlite:///state/mlruns.db
    tracker.record(upload_metrics(...), "cat")  # from a request thread: a deque append, never waits
    tracker.close()                             # at exit: what is queued is written

Each upload's confidence, pixel entropy and colour-histogram distance go to one run per answered
class ("refused" for a refusal) of this serving session, the class as the run's tag
`answered_class`, each upload a step: `mlflow ui` then plots a class's confidence over the uploads
and filters by the tag.

Nothing is written on the request path. A request appends a row to a bounded deque (no lock, and
no thread woken per upload: a queue.Queue put woke the writer each time, and under load the GIL
hand-over cost milliseconds). A thread looks every `poll_s` and, once `batch_rows` rows wait or
the oldest has waited `flush_s`, hands them to a writer process (python -m monitoring.tracking)
that writes them with MlflowClient.log_batch. A process, not a thread: a batch of 200 uploads is
~130 ms of SQLAlchemy in Python, which in a thread would hold the GIL against the requests. When
the store cannot keep up and the deque is full, an upload is dropped and counted rather than made
to wait. The default store is a SQLite file, its artifacts in a folder beside it: nothing needs a
server or the network. The app never imports mlflow; the writer process and the build do.
"""

import collections
import importlib.util
import itertools
import logging
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "MLflow tracking needs the optional extra: pip install -r requirements-mlflow.txt"
URI_VARIABLE = "MLFLOW_TRACKING_URI"
STORE_FILE = "mlruns.db"
ARTIFACTS_FOLDER = "mlruns"
UPLOAD_METRICS = ("confidence", "entropy", "histogram_distance")
REFUSED = "refused"
MAX_BATCH_METRICS = 1000  # MLflow's limit on one log_batch call
ROOT = Path(__file__).resolve().parent.parent  # where `python -m monitoring.tracking` is found

logger = logging.getLogger(__name__)


class TrackingUnavailable(RuntimeError):
    """MLflow is not installed, or its store cannot be opened: the message says what to do."""


def import_mlflow():
    try:
        import mlflow
    except ImportError:
        raise TrackingUnavailable(INSTALL_HINT) from None
    return mlflow


def tracking_uri(folder="."):
    """$MLFLOW_TRACKING_URI when set, else a SQLite file in `folder`."""
    return os.environ.get(URI_VARIABLE) or f"sqlite:///{(Path(folder) / STORE_FILE).resolve()}"


def open_experiment(name, folder="."):
    """(MlflowClient, experiment id) of experiment `name` in the store, created when missing; in the
    default store its artifacts go to folder/mlruns (MLflow's own default is ./mlruns wherever the
    command happens to run)."""
    import_mlflow()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    Path(folder).mkdir(parents=True, exist_ok=True)
    try:
        client = MlflowClient(tracking_uri(folder))
        found = client.get_experiment_by_name(name)
        if found is not None:
            return client, found.experiment_id
        location = None if os.environ.get(URI_VARIABLE) else (Path(folder) / ARTIFACTS_FOLDER).resolve().as_uri()
        try:
            return client, client.create_experiment(name, artifact_location=location)
        except MlflowException:
            # Another process created it between our look and our create.
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return client, found.experiment_id
    except MlflowException as error:
        raise TrackingUnavailable(f"Cannot open the MLflow store {tracking_uri(folder)}: {error}") from None


@dataclass(frozen=True)
class UploadTrackingConfig:
    experiment: str = "uploads"
    batch_rows: int = 200  # write when this many uploads wait ...
    flush_s: float = 5.0  # ... or the oldest has waited this long
    poll_s: float = 0.25  # how often the hand-over thread looks
    queue_size: int = 10_000  # uploads held while the store is slow; beyond, they are dropped and counted
    close_timeout_s: float = 60.0


class UploadTracker:
    def __init__(self, folder=".", config=UploadTrackingConfig(), tags=None):
        if importlib.util.find_spec("mlflow") is None:
            raise TrackingUnavailable(INSTALL_HINT)
        self.config = config
        self.uri = tracking_uri(folder)
        # Runs of one serving session share this tag, so that `mlflow ui` can put them side by side.
        self.session = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.runs = {}  # answered class -> run id, as the writer process reports them
        self.logged = self.dropped = self.failed = 0
        self.flush_seconds = []  # the writer process's time per batch (not a request's)
        # next() and deque.append/popleft are atomic under the interpreter lock: no lock of our own.
        self._steps = itertools.count()
        self._dropped = itertools.count(1)
        self._rows = collections.deque()
        self._closed = False
        self._stop = threading.Event()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "monitoring.tracking"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
        # The process finds the same store: it inherits MLFLOW_TRACKING_URI, and is given the folder.
        reply = self._exchange({"folder": str(Path(folder).resolve()), "experiment": config.experiment,
                                "tags": {"session": self.session, **(tags or {})}})
        if reply is None or "error" in reply:
            self._process.kill()
            self._process.wait()
            raise TrackingUnavailable(reply["error"] if reply else f"The MLflow writer process did not start ({self.uri}).")
        self.experiment_id = reply["experiment_id"]
        self._handover = threading.Thread(target=self._hand_over, name="mlflow-uploads", daemon=True)
        self._handover.start()

    def record(self, metrics, answered_class=None, when=None):
        """Queue one upload (a dict with UPLOAD_METRICS, e.g. monitoring.upload_metrics' result;
        answered_class None: refused). Returns False when it was dropped."""
        if self._closed:
            return False
        if len(self._rows) >= self.config.queue_size:
            self.dropped = next(self._dropped)
            return False
        self._rows.append((next(self._steps), time.time() if when is None else when,
                           REFUSED if answered_class is None else str(answered_class),
                           *(metrics.get(name) for name in UPLOAD_METRICS)))
        return True

    def close(self):
        """Write what is queued, end the runs and the writer process; later records are dropped.
        Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._handover.join(self.config.close_timeout_s)
        try:
            self._process.wait(self.config.close_timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("MLflow upload logging: the writer process did not finish in %.0f s", self.config.close_timeout_s)
            self._process.kill()
        if self.dropped or self.failed:
            logger.warning("MLflow upload logging: %d uploads dropped (queue full), %d failed to write",
                           self.dropped, self.failed)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _hand_over(self):
        while True:
            stopping = self._stop.wait(self.config.poll_s)
            while self._rows and (stopping or len(self._rows) >= self.config.batch_rows
                                  or time.time() - self._rows[0][1] >= self.config.flush_s):
                batch = [self._rows.popleft() for _ in range(min(len(self._rows), self.config.batch_rows))]
                reply = self._exchange(batch)
                if reply is None:
                    self.failed += len(batch)
                    continue
                self.logged += reply["logged"]
                self.failed += reply["failed"]
                self.runs.update(reply["runs"])
                self.flush_seconds.append(reply["seconds"])
            if stopping:
                reply = self._exchange(None)  # the writer ends the runs and exits
                if reply is not None:
                    self.runs.update(reply["runs"])
                return

    def _exchange(self, message):
        """Send one message to the writer process and wait for its reply; None if it is gone."""
        try:
            pickle.dump(message, self._process.stdin)
            self._process.stdin.flush()
            return pickle.load(self._process.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as error:
            logger.warning("MLflow upload logging: the writer process is gone (%s)", error)
            return None


class StoreWriter:
    """The writer process's side: uploads to runs, one per answered class."""

    def __init__(self, client, experiment_id, tags):
        self.client, self.experiment_id, self.tags = client, experiment_id, tags
        self.runs = {}

    def write(self, rows):
        """-> (uploads logged, uploads failed)."""
        from mlflow.entities import Metric

        by_class = {}
        for step, when, answered, *values in rows:
            milliseconds = int(when * 1000)
            by_class.setdefault(answered, []).extend(
                Metric(name, float(value), milliseconds, step) for name, value in zip(UPLOAD_METRICS, values)
                # No reference, no histogram distance: left out rather than logged as NaN.
                if value is not None and math.isfinite(float(value)))
        logged = failed = 0
        for answered, metrics in by_class.items():
            uploads = sum(1 for row in rows if row[2] == answered)
            try:
                run_id = self._run_for(answered)
                for start in range(0, len(metrics), MAX_BATCH_METRICS):
                    self.client.log_batch(run_id, metrics=metrics[start:start + MAX_BATCH_METRICS], synchronous=True)
                logged += uploads
            except Exception as error:  # a broken store must not stop the writer, nor the page
                failed += uploads
                logger.warning("MLflow upload logging: %d uploads not written: %s", uploads, error)
        return logged, failed

    def end(self):
        for run_id in self.runs.values():
            try:
                self.client.set_terminated(run_id)
            except Exception as error:  # the store went away: nothing more to save
                logger.warning("MLflow upload logging: could not end run %s: %s", run_id, error)

    def _run_for(self, answered):
        if answered not in self.runs:
            run = self.client.create_run(self.experiment_id, run_name=f"uploads: {answered}",
                                         tags={"answered_class": answered, **self.tags})
            self.runs[answered] = run.info.run_id
        return self.runs[answered]


def _writer_process():
    """python -m monitoring.tracking: read batches (pickles) on stdin, answer each on stdout."""
    # Ctrl-C reaches the whole process group: the app stops first and then sends us the end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # anything printed goes to the log, not into the replies

    def reply(message):
        pickle.dump(message, replies)
        replies.flush()

    setup = pickle.load(requests)
    try:
        client, experiment_id = open_experiment(setup["experiment"], setup["folder"])
    except TrackingUnavailable as error:
        reply({"error": str(error)})
        return
    writer = StoreWriter(client, experiment_id, setup["tags"])
    reply({"experiment_id": experiment_id})
    while True:
        try:
            batch = pickle.load(requests)
        except EOFError:
            batch = None  # the app is gone: end the runs all the same
        if batch is None:
            writer.end()
            try:
                reply({"runs": writer.runs})
            except OSError:
                pass
            return
        started = time.perf_counter()
        logged, failed = writer.write(batch)
        reply({"logged": logged, "failed": failed, "runs": writer.runs, "seconds": time.perf_counter() - started})


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s mlflow-writer %(levelname)s %(message)s")
    _writer_process()
