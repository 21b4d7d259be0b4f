"""The prediction log: one SQLite row per upload, durable, safe to share between threads.

    log = PredictionLog("monitoring.sqlite")
    row_id = log.append({**upload_metrics(image, probabilities, reference), "answer": "dog", "answered_by": "cnn",
                         "ood": False, "image": image})
    log.tag(row_id, "cat")          # the user's correction
    log.recent(10), log.window(last=100), log.count()

Why these choices: WAL mode lets the dashboard read while uploads are written, and with
synchronous=NORMAL a commit costs no fsync (a power cut may lose the last few uploads, never
corrupt the file). Each thread gets its own connection (Gradio answers in a thread pool) and waits
on a busy timeout instead of failing when another writer holds the lock. Time is stored as UTC
seconds since the epoch (REAL), indexed, as is (class, time): the queries the dashboard makes.
Thumbnails and colour histograms live in a table of their own, so that the over-time aggregates
scan 60-byte rows, not 3-kilobyte ones.
"""

import io
import math
import sqlite3
import threading
from contextlib import contextmanager
import time as clock
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

ANSWERED_BY = ("cnn", "fallback", "refused")
THUMBNAIL_SIDE = 32
WINDOW_COLUMNS = ("id", "time", "predicted_class", "confidence", "entropy", "histogram_distance", "answered_by", "answer", "ood")

SCHEMA = """
-- predicted_class and confidence are the CNN's own (it measures every upload, refused ones too);
-- answer is what the person was told (NULL: refused), answered_by the stage that told it.
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    predicted_class TEXT NOT NULL,
    confidence REAL NOT NULL,
    entropy REAL NOT NULL,
    histogram_distance REAL,
    answered_by TEXT NOT NULL,
    ood INTEGER NOT NULL,
    tag TEXT,
    answer TEXT
);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time);
CREATE INDEX IF NOT EXISTS predictions_class_time ON predictions (predicted_class, time);
-- Blobs apart, so that the predictions table stays ~60 bytes a row and scanning it is cheap.
CREATE TABLE IF NOT EXISTS pictures (
    id INTEGER PRIMARY KEY REFERENCES predictions (id),
    histogram BLOB,
    thumbnail BLOB
);
"""


class LogError(RuntimeError):
    """The log file cannot be opened, read or written (locked too long, disk full, not SQLite)."""


@dataclass
class PredictionRecord:
    predicted_class: str  # the CNN's class
    confidence: float  # the CNN's top probability
    entropy: float
    histogram_distance: float = float("nan")  # NaN: no reference to measure it against
    answered_by: str = "cnn"  # "cnn", "fallback" or "refused"
    answer: str = None  # the class the person was told; None when refused
    ood: bool = False
    image: np.ndarray = None  # model-input uint8 image; stored as a PNG thumbnail
    colour_histogram: np.ndarray = None  # (channels, bins), from monitoring.metrics
    time: float = None  # UTC seconds since the epoch; now when not given
    tag: str = None

    @classmethod
    def coerce(cls, record):
        if isinstance(record, cls):
            return record
        if not isinstance(record, dict):
            raise ValueError(f"A prediction record must be a PredictionRecord or a dict, not {type(record).__name__}.")
        unknown = set(record) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Unknown prediction record fields: {sorted(unknown)}.")
        try:
            return cls(**record)
        except TypeError as error:
            raise ValueError(f"Incomplete prediction record: {error}.") from None

    def row(self):
        if self.answered_by not in ANSWERED_BY:
            raise ValueError(f"answered_by must be one of {ANSWERED_BY}, not {self.answered_by!r}.")
        if (self.answer is None) != (self.answered_by == "refused"):
            raise ValueError("A refused upload has no answer, and an answered one has one.")
        for name in ("confidence", "entropy"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"The {name} of a logged prediction must be a finite number.")
        distance = float("nan") if self.histogram_distance is None else float(self.histogram_distance)
        histogram = None if self.colour_histogram is None else np.asarray(self.colour_histogram, "<f4").tobytes()
        prediction = (
            clock.time() if self.time is None else float(self.time), str(self.predicted_class),
            float(self.confidence), float(self.entropy), distance if math.isfinite(distance) else None,
            self.answered_by, int(bool(self.ood)), self.tag, None if self.answer is None else str(self.answer),
        )
        return prediction, (histogram, thumbnail_png(self.image))


class PredictionLog:
    def __init__(self, path="monitoring.sqlite", busy_timeout_s=10.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections = {}  # thread -> its connection
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._errors("open"):
            connection = self._connection()
            # Bigger pages hold three 2.5 kB thumbnails where 4 kB pages hold one (no effect on an
            # existing file).
            connection.execute("PRAGMA page_size = 8192")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)
            columns = {row[1] for row in connection.execute("PRAGMA table_info(predictions)")}
            if "answer" not in columns:  # a log written before answers were kept apart
                connection.execute("ALTER TABLE predictions ADD COLUMN answer TEXT")

    def append(self, record):
        """Log one prediction; returns its row id."""
        prediction, picture = PredictionRecord.coerce(record).row()
        with self._errors("write to"):
            connection = self._connection()
            # IMMEDIATE takes the write lock first, so two writers wait in turn instead of deadlocking.
            connection.execute("BEGIN IMMEDIATE")
            try:
                row_id = connection.execute(
                    "INSERT INTO predictions (time, predicted_class, confidence, entropy, histogram_distance,"
                    " answered_by, ood, tag, answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", prediction).lastrowid
                if picture != (None, None):
                    connection.execute("INSERT INTO pictures (id, histogram, thumbnail) VALUES (?, ?, ?)", (row_id, *picture))
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        return row_id

    def tag(self, row_id, label):
        """Attach feedback (e.g. the class the user says it is) to a logged upload; None clears it."""
        with self._errors("write to"):
            cursor = self._connection().execute(
                "UPDATE predictions SET tag = ? WHERE id = ?", (None if label is None else str(label), int(row_id)))
        if cursor.rowcount == 0:
            raise ValueError(f"No logged prediction has id {row_id}.")

    def count(self):
        with self._errors("read"):
            return self._connection().execute("SELECT COUNT(*) FROM predictions").fetchone()[0]

    def recent(self, n=10):
        """The last n uploads, newest first, as dicts; `image` is the decoded thumbnail (or None)."""
        with self._errors("read"):
            cursor = self._connection().execute(
                "SELECT id, time, predicted_class, confidence, entropy, histogram_distance, answered_by, answer, ood,"
                " tag, thumbnail FROM predictions LEFT JOIN pictures USING (id) ORDER BY id DESC LIMIT ?", (int(n),))
            rows = cursor.fetchall()
        names = [column[0] for column in cursor.description]
        uploads = []
        for row in rows:
            upload = dict(zip(names, row))
            upload["ood"] = bool(upload["ood"])
            upload["utc"] = datetime.fromtimestamp(upload["time"], timezone.utc).isoformat(timespec="seconds")
            upload["image"] = decode_png(upload.pop("thumbnail"))
            uploads.append(upload)
        return uploads

    def window(self, last=None, since=None, until=None, histograms=False):
        """Columns (numpy arrays, oldest first) of the last `last` uploads and/or those logged in
        [since, until) (UTC seconds). With histograms=True also "colour_histogram", (n, values)."""
        columns = list(WINDOW_COLUMNS) + (["histogram"] if histograms else [])
        where, parameters = [], []
        if since is not None:
            where.append("time >= ?")
            parameters.append(float(since))
        if until is not None:
            where.append("time < ?")
            parameters.append(float(until))
        query = f"SELECT {', '.join(columns)} FROM predictions" + (" LEFT JOIN pictures USING (id)" if histograms else "")
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id DESC"
        if last is not None:
            query += " LIMIT ?"
            parameters.append(int(last))
        with self._errors("read"):
            rows = self._connection().execute(query, parameters).fetchall()[::-1]
        return _columns(rows, columns)

    def timeline(self, buckets=60, history=50_000):
        """Per-class means over time of the last `history` uploads, in `buckets` equal time spans,
        aggregated in SQL so that a large log costs one indexed range scan.

        Returns (bucket start times, {"class": [...], "bucket": [...], "confidence": [...],
        "entropy": [...], "count": [...]}) with one entry per (class, bucket) that has uploads.
        """
        with self._errors("read"):
            connection = self._connection()
            last_id = connection.execute("SELECT MAX(id) FROM predictions").fetchone()[0]
            if last_id is None:
                return np.zeros(0), _columns([], ["class", "bucket", "confidence", "entropy", "count"])
            first_id = last_id - int(history)
            start, end = connection.execute(
                "SELECT MIN(time), MAX(time) FROM predictions WHERE id > ?", (first_id,)).fetchone()
            # At least a minute a bucket, so that a log of a few seconds still has a time axis.
            width = max((end - start) / buckets, 60.0)
            rows = connection.execute(
                "SELECT predicted_class, MIN(CAST((time - ?) / ? AS INTEGER), ?) AS bucket,"
                " AVG(confidence), AVG(entropy), COUNT(*) FROM predictions WHERE id > ?"
                " GROUP BY predicted_class, bucket ORDER BY bucket",
                (start, width, buckets - 1, first_id)).fetchall()
        return start + width * np.arange(buckets), _columns(rows, ["class", "bucket", "confidence", "entropy", "count"])

    def close(self):
        with self._lock:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            # check_same_thread=False only so that close() may close every thread's connection;
            # each connection is used by the thread that opened it.
            connection = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            connection.execute("PRAGMA synchronous = NORMAL")
            self._local.connection = connection
            with self._lock:
                # Threads come and go (a server's worker pool shrinks when idle): close the
                # connections of finished threads so that file handles do not pile up.
                for thread in [t for t in self._connections if not t.is_alive()]:
                    self._connections.pop(thread).close()
                self._connections[threading.current_thread()] = connection
        return connection

    @contextmanager
    def _errors(self, action):
        try:
            yield
        except sqlite3.Error as error:
            raise LogError(f"Could not {action} the prediction log {self.path}: {error}.") from error


def thumbnail_png(image):
    """uint8 (h, w, c) -> PNG bytes, shrunk to at most THUMBNAIL_SIDE pixels a side; None -> None."""
    if image is None:
        return None
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"A thumbnail needs a uint8 image, got {array.dtype} of shape {array.shape}.")
    picture = Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    if max(picture.size) > THUMBNAIL_SIDE:
        picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data):
    if data is None:
        return None
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture.convert("RGB"))


def _columns(rows, names):
    """Rows -> {name: numpy array}; text columns stay object arrays, NULL distances become NaN."""
    columns = list(zip(*rows)) if rows else [()] * len(names)
    out = {}
    for name, values in zip(names, columns):
        if name in ("predicted_class", "answered_by", "answer", "class", "tag"):
            out[name] = np.array(values, dtype=object)
        elif name in ("id", "bucket", "count"):
            out[name] = np.array(values, dtype=np.int64)
        elif name == "ood":
            out[name] = np.array(values, dtype=bool)
        elif name == "histogram":
            out["colour_histogram"] = _histograms(values)
        else:
            out[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return out


def _histograms(blobs):
    """Stored float32 histograms -> (n, values) float array; rows logged without one are NaN."""
    sizes = {len(blob) for blob in blobs if blob is not None}
    width = max(sizes, default=0) // 4
    out = np.full((len(blobs), width), np.nan)
    for index, blob in enumerate(blobs):
        if blob is not None and len(blob) == width * 4:
            out[index] = np.frombuffer(blob, "<f4")
    return out
