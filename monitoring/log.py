"""The prediction log: one row per upload, durable, safe to share between threads, and between
app processes when it lives in PostgreSQL.

    log = PredictionLog("monitoring.sqlite")                 # or "postgresql://app@db:5432/honest"
    row_id = log.append({**upload_metrics(image, probabilities, reference), "answer": "dog", "answered_by": "cnn",
                         "ood": False, "image": image})
    log.tag(row_id, "cat")          # the user's correction
    log.recent(10), log.window(last=100), log.count()

Why these choices: one SQLAlchemy Core code path over either database (storage). On SQLite, WAL
mode lets the dashboard read while uploads are written, and with synchronous=NORMAL a commit
costs no fsync (a power cut may lose the last few uploads, never corrupt the file); writers wait
on a busy timeout instead of failing. On PostgreSQL the tables sit in the schema "monitoring" and
every replica writes and reads the same rows, so all show one dashboard. Time is stored as UTC
seconds since the epoch (double precision), indexed, as is (class, time): the queries the
dashboard makes. Thumbnails and colour histograms live in a table of their own, so that the
over-time aggregates scan 60-byte rows, not 3-kilobyte ones.
"""

import io
import math
import time as clock
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone

import numpy as np
import sqlalchemy as sa
from PIL import Image

import storage

ANSWERED_BY = ("cnn", "fallback", "refused")
REFUSALS = ("unknown", "unsure")  # service.answer's two refusals: none of our classes, or not sure which
THUMBNAIL_SIDE = 32
WINDOW_COLUMNS = ("id", "time", "predicted_class", "confidence", "entropy", "histogram_distance", "answered_by", "answer", "ood",
                  "refusal")
ROW_COLUMNS = ("time", "predicted_class", "confidence", "entropy", "histogram_distance", "answered_by", "ood", "tag", "answer",
               "refusal")

METADATA = sa.MetaData()
# predicted_class and confidence are the CNN's own (it measures every upload, refused ones too);
# answer is what the person was told (NULL: refused), answered_by the stage that told it.
PREDICTIONS = sa.Table(
    "predictions", METADATA,
    # INTEGER PRIMARY KEY is SQLite's row id (as in logs written before); BIGSERIAL on PostgreSQL.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("time", sa.Double(), nullable=False),
    sa.Column("predicted_class", sa.Text(), nullable=False),
    sa.Column("confidence", sa.Double(), nullable=False),
    sa.Column("entropy", sa.Double(), nullable=False),
    sa.Column("histogram_distance", sa.Double()),
    sa.Column("answered_by", sa.Text(), nullable=False),
    sa.Column("ood", sa.Integer(), nullable=False),
    sa.Column("tag", sa.Text()),
    sa.Column("answer", sa.Text()),
    sa.Column("refusal", sa.Text()),  # which refusal (REFUSALS); NULL when answered
    sa.Index("predictions_time", "time"),
    sa.Index("predictions_class_time", "predicted_class", "time"),
)
# Blobs apart, so that the predictions table stays ~60 bytes a row and scanning it is cheap.
PICTURES = sa.Table(
    "pictures", METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.ForeignKey(PREDICTIONS.c.id), primary_key=True,
              autoincrement=False),
    sa.Column("histogram", sa.LargeBinary()),
    sa.Column("thumbnail", sa.LargeBinary()),
)


class LogError(storage.DatabaseError):
    """The log cannot be opened, read or written (locked too long, disk full, not SQLite, server unreachable)."""


@dataclass
class PredictionRecord:
    predicted_class: str  # the CNN's class
    confidence: float  # the CNN's top probability
    entropy: float
    histogram_distance: float = float("nan")  # NaN: no reference to measure it against
    answered_by: str = "cnn"  # "cnn", "fallback" or "refused"
    answer: str = None  # the class the person was told; None when refused
    refusal: str = None  # "unknown" (none of our classes) or "unsure" when refused; None when answered
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
        if self.refusal is not None and (self.refusal not in REFUSALS or self.answered_by != "refused"):
            raise ValueError(f"refusal is one of {REFUSALS} for a refused upload, else None; not {self.refusal!r}.")
        for name in ("confidence", "entropy"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"The {name} of a logged prediction must be a finite number.")
        distance = float("nan") if self.histogram_distance is None else float(self.histogram_distance)
        histogram = None if self.colour_histogram is None else np.asarray(self.colour_histogram, "<f4").tobytes()
        prediction = (
            clock.time() if self.time is None else float(self.time), str(self.predicted_class),
            float(self.confidence), float(self.entropy), distance if math.isfinite(distance) else None,
            self.answered_by, int(bool(self.ood)), self.tag, None if self.answer is None else str(self.answer),
            self.refusal,
        )
        return prediction, (histogram, thumbnail_png(self.image))


class PredictionLog:
    def __init__(self, target="monitoring.sqlite", busy_timeout_s=10.0):
        """`target`: a SQLite file, or a PostgreSQL URL that several app processes share."""
        self.target = str(target)
        self.busy_timeout_s = busy_timeout_s
        with self._errors("open"):
            self.engine = storage.open_engine(self.target, schema="monitoring", synchronous="NORMAL",
                                              busy_timeout_s=busy_timeout_s)
            storage.create_tables(self.engine, METADATA)

    def append(self, record):
        """Log one prediction; returns its row id."""
        prediction, (histogram, thumbnail) = PredictionRecord.coerce(record).row()
        with self._errors("write to"), self.engine.begin() as connection:
            row_id = connection.execute(sa.insert(PREDICTIONS).values(dict(zip(ROW_COLUMNS, prediction)))).inserted_primary_key[0]
            if (histogram, thumbnail) != (None, None):
                connection.execute(sa.insert(PICTURES).values(id=row_id, histogram=histogram, thumbnail=thumbnail))
        return row_id

    def tag(self, row_id, label):
        """Attach feedback (e.g. the class the user says it is) to a logged upload; None clears it."""
        with self._errors("write to"), self.engine.begin() as connection:
            updated = connection.execute(sa.update(PREDICTIONS).where(PREDICTIONS.c.id == int(row_id))
                                         .values(tag=None if label is None else str(label))).rowcount
        if updated == 0:
            raise ValueError(f"No logged prediction has id {row_id}.")

    def count(self):
        return self._read(sa.select(sa.func.count()).select_from(PREDICTIONS))[0][0]

    def recent(self, n=10):
        """The last n uploads, newest first, as dicts; `image` is the decoded thumbnail (or None)."""
        names = ["id", "time", "predicted_class", "confidence", "entropy", "histogram_distance", "answered_by", "answer",
                 "ood", "tag", "refusal"]
        query = (sa.select(*[PREDICTIONS.c[name] for name in names], PICTURES.c.thumbnail)
                 .select_from(PREDICTIONS.outerjoin(PICTURES, PICTURES.c.id == PREDICTIONS.c.id))
                 .order_by(PREDICTIONS.c.id.desc()).limit(int(n)))
        uploads = []
        for row in self._read(query):
            upload = dict(zip(names + ["thumbnail"], row))
            upload["ood"] = bool(upload["ood"])
            upload["utc"] = datetime.fromtimestamp(upload["time"], timezone.utc).isoformat(timespec="seconds")
            upload["image"] = decode_png(upload.pop("thumbnail"))
            uploads.append(upload)
        return uploads

    def window(self, last=None, since=None, until=None, histograms=False):
        """Columns (numpy arrays, oldest first) of the last `last` uploads and/or those logged in
        [since, until) (UTC seconds). With histograms=True also "colour_histogram", (n, values)."""
        selected = [PREDICTIONS.c[name] for name in WINDOW_COLUMNS]
        source = PREDICTIONS
        if histograms:
            selected.append(PICTURES.c.histogram)
            source = PREDICTIONS.outerjoin(PICTURES, PICTURES.c.id == PREDICTIONS.c.id)
        query = sa.select(*selected).select_from(source).order_by(PREDICTIONS.c.id.desc())
        if since is not None:
            query = query.where(PREDICTIONS.c.time >= float(since))
        if until is not None:
            query = query.where(PREDICTIONS.c.time < float(until))
        if last is not None:
            query = query.limit(int(last))
        return _columns(self._read(query)[::-1], list(WINDOW_COLUMNS) + (["histogram"] if histograms else []))

    def timeline(self, buckets=60, history=50_000):
        """Per-class means over time of the last `history` uploads, in `buckets` equal time spans,
        aggregated in SQL so that a large log costs one indexed range scan.

        Returns (bucket start times, {"class": [...], "bucket": [...], "confidence": [...],
        "entropy": [...], "count": [...]}) with one entry per (class, bucket) that has uploads.
        """
        names = ["class", "bucket", "confidence", "entropy", "count"]
        with self._errors("read"), self.engine.connect() as connection:
            last_id = connection.execute(sa.select(sa.func.max(PREDICTIONS.c.id))).scalar()
            if last_id is None:
                return np.zeros(0), _columns([], names)
            recent = PREDICTIONS.c.id > last_id - int(history)
            start, end = connection.execute(
                sa.select(sa.func.min(PREDICTIONS.c.time), sa.func.max(PREDICTIONS.c.time)).where(recent)).one()
            # At least a minute a bucket, so that a log of a few seconds still has a time axis.
            width = max((end - start) / buckets, 60.0)
            index = storage.floor_integer((PREDICTIONS.c.time - start) / width)
            bucket = sa.case((index > buckets - 1, buckets - 1), else_=index).label("bucket")
            # Grouped by the output name: PostgreSQL would not match the expression's parameters.
            rows = connection.execute(
                sa.select(PREDICTIONS.c.predicted_class, bucket, sa.func.avg(PREDICTIONS.c.confidence),
                          sa.func.avg(PREDICTIONS.c.entropy), sa.func.count())
                .where(recent).group_by(PREDICTIONS.c.predicted_class, sa.text("bucket")).order_by(sa.text("bucket"))).all()
        return start + width * np.arange(buckets), _columns(rows, names)

    def close(self):
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read(self, query):
        with self._errors("read"):
            return storage.read(self.engine, query)

    @contextmanager
    def _errors(self, action):
        try:
            yield
        except storage.database_errors() as error:
            raise LogError(f"Could not {action} the prediction log {storage.describe(self.target)}: {storage.error_text(error)}.") from error


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
        if name in ("predicted_class", "answered_by", "answer", "class", "tag", "refusal"):
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
