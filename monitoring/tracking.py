"""MLflow, an optional extra (pip install -r requirements-mlflow.txt): where the store is, and the
upload logger behind `python app.py --mlflow`.

    tracker = UploadTracker("state")            # store: $MLFLOW_TRACKING_URI, else sqlite:///state/mlruns.db
    tracker.record(upload_metrics(...), "cat")  # from a request thread: a queue put, never waits
    tracker.close()                             # at exit: what is queued is written

Each upload's confidence, pixel entropy and colour-histogram distance go to one run per answered
class ("refused" for a refusal) of this serving session, the class as the run's tag
`answered_class`, each upload a step: `mlflow ui` then plots a class's confidence over the uploads
and filters by the tag. Nothing is written on the request path: a background thread takes the rows
off a bounded queue and writes them with MlflowClient.log_batch every `batch_rows` rows or
`flush_s` seconds. When the store cannot keep up and the queue is full, an upload is dropped and
counted rather than made to wait. The default store is a SQLite file, its artifacts in a folder
beside it: nothing needs a server or the network. mlflow is imported only when tracking is asked for.
"""

import itertools
import logging
import math
import os
import queue
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
    flush_s: float = 5.0  # ... or this long after the first of them arrived
    queue_size: int = 10_000  # uploads held while the store is slow; beyond, they are dropped and counted
    close_timeout_s: float = 30.0


_STOP = object()


class UploadTracker:
    def __init__(self, folder=".", config=UploadTrackingConfig(), tags=None):
        self.config = config
        self.client, self.experiment_id = open_experiment(config.experiment, folder)
        self.uri = tracking_uri(folder)
        # Runs of one serving session share this tag, so that `mlflow ui` can put them side by side.
        self.session = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.tags = dict(tags or {})
        self.runs = {}  # answered class -> run id, created by the writer thread when first needed
        self.logged = self.dropped = self.failed = 0
        self._steps = itertools.count()  # next() is atomic under the interpreter lock
        self._count_lock = threading.Lock()
        self._queue = queue.Queue(config.queue_size)
        self._closed = False
        self._writer = threading.Thread(target=self._write, name="mlflow-uploads", daemon=True)
        self._writer.start()

    def record(self, metrics, answered_class=None, when=None):
        """Queue one upload (a dict with UPLOAD_METRICS, e.g. monitoring.upload_metrics' result;
        answered_class None: refused). Returns False when it was dropped."""
        if self._closed:
            return False
        row = (next(self._steps), time.time() if when is None else when, REFUSED if answered_class is None else str(answered_class),
               *(metrics.get(name) for name in UPLOAD_METRICS))
        try:
            self._queue.put_nowait(row)
            return True
        except queue.Full:
            with self._count_lock:
                self.dropped += 1
            return False

    def close(self):
        """Write what is queued, end the runs; later records are dropped. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=self.config.close_timeout_s)
        except queue.Full:
            logger.warning("MLflow upload logging: the writer did not drain the queue in time")
        self._writer.join(self.config.close_timeout_s)
        for run_id in self.runs.values():
            try:
                self.client.set_terminated(run_id)
            except Exception as error:  # the store went away: nothing more to save
                logger.warning("MLflow upload logging: could not end run %s: %s", run_id, error)
        if self.dropped or self.failed:
            logger.warning("MLflow upload logging: %d uploads dropped (queue full), %d failed to write",
                           self.dropped, self.failed)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write(self):
        batch, deadline = [], None
        while True:
            try:
                row = self._queue.get(timeout=None if not batch else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                row = None  # the deadline passed
            if row is _STOP:
                self._flush(batch)
                return
            if row is not None:
                batch.append(row)
                if len(batch) == 1:
                    deadline = time.monotonic() + self.config.flush_s
            if batch and (len(batch) >= self.config.batch_rows or time.monotonic() >= deadline):
                self._flush(batch)
                batch = []

    def _flush(self, rows):
        from mlflow.entities import Metric

        by_class = {}
        for step, when, answered, *values in rows:
            milliseconds = int(when * 1000)
            by_class.setdefault(answered, []).extend(
                Metric(name, float(value), milliseconds, step) for name, value in zip(UPLOAD_METRICS, values)
                # No reference, no histogram distance: left out rather than logged as NaN.
                if value is not None and math.isfinite(float(value)))
        for answered, metrics in by_class.items():
            uploads = sum(1 for row in rows if row[2] == answered)
            try:
                run_id = self._run_for(answered)
                for start in range(0, len(metrics), MAX_BATCH_METRICS):
                    self.client.log_batch(run_id, metrics=metrics[start:start + MAX_BATCH_METRICS], synchronous=True)
                self.logged += uploads
            except Exception as error:  # a broken store must not stop the writer, nor the page
                self.failed += uploads
                logger.warning("MLflow upload logging: %d uploads not written: %s", uploads, error)

    def _run_for(self, answered):
        if answered not in self.runs:
            run = self.client.create_run(self.experiment_id, run_name=f"uploads: {answered}", tags={
                "answered_class": answered, "session": self.session, **self.tags})
            self.runs[answered] = run.info.run_id
        return self.runs[answered]
