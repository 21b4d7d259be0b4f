"""Users' corrections, saved as a training-ready image folder plus an append-only log.

    store = FeedbackStore("feedback")
    record = store.save(upload, "ship", predicted="airplane")   # -> feedback/ship/<hash>.png

Layout (what classifier.data.load_image_folder and DataConfig.extra_train_folders read):

    feedback/<label>/<hash>.png   the upload, decoded, RGB, long side capped at 1024 px, PNG
    feedback/feedback.jsonl       one JSON row per save: time, label, hash, predicted, source, status

Rules:
- The file name is a hash of the decoded pixels, so the same picture sent twice is one file.
  Nothing the user sends becomes part of a path: the label must be one of the class names.
- Same picture, same label again: stored once, logged as "duplicate" (several people agreeing).
- Same picture, another label: the latest wins. The new file is written, the old one removed (a
  training set must not hold one image under two labels), and the row says "relabelled" with the
  previous label, so the history keeps both answers.
- Saves are serialised by a lock per folder (threads) and an flock on feedback/.lock (processes);
  image files are written to a temporary name and renamed into place.
"""

import hashlib
import io
import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from classifier.labels import CLASS_NAMES

LOG_FILE = "feedback.jsonl"
LOCK_FILE = ".lock"
MAX_SIDE = 1024
SOURCE_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_PREDICTED_LENGTH = 100

_locks = {}
_locks_guard = threading.Lock()


class FeedbackError(ValueError):
    """A correction we cannot store; the message is written for the person who sent it."""


@dataclass(frozen=True)
class FeedbackRecord:
    time: str  # UTC, ISO 8601
    label: str
    hash: str
    path: str  # relative to the store's root, e.g. "ship/3fa4....png"
    source: str
    predicted: str | None
    status: str  # "new", "duplicate" or "relabelled"
    previous_label: str | None = None


class FeedbackStore:
    def __init__(self, root, class_names=CLASS_NAMES, max_side=MAX_SIDE):
        self.root = Path(root)
        self.class_names = tuple(class_names)
        self.max_side = max_side

    def save(self, image, label, source="gallery", predicted=None):
        """Store `image` (bytes, path, PIL image or array) under `label`; return its FeedbackRecord."""
        label = self._check_label(label)
        if not isinstance(source, str) or not SOURCE_PATTERN.match(source):
            raise FeedbackError(f"source must be a short lower-case word such as 'gallery', not {source!r}.")
        if predicted is not None and (not isinstance(predicted, str) or len(predicted) > MAX_PREDICTED_LENGTH):
            raise FeedbackError(f"predicted must be a class name (a short string) or None, not {predicted!r}.")
        png, digest = self._encode(image)
        relative = f"{label}/{digest}.png"
        with self._locked():
            holders = [name for name in self.class_names if (self.root / name / f"{digest}.png").exists()]
            if label in holders:
                status, previous = "duplicate", None
            else:
                self._write_atomically(self.root / relative, png)
                status, previous = ("relabelled", holders[0]) if holders else ("new", None)
            for name in holders:
                if name != label:
                    (self.root / name / f"{digest}.png").unlink(missing_ok=True)
            record = FeedbackRecord(
                time=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                label=label, hash=digest, path=relative, source=source, predicted=predicted,
                status=status, previous_label=previous,
            )
            with open(self.root / LOG_FILE, "a", encoding="utf-8") as log:
                # One write of one line: a reader sees whole rows, and a crash loses at most the last.
                log.write(json.dumps(asdict(record)) + "\n")
                log.flush()
                os.fsync(log.fileno())
        return record

    def records(self):
        """One record per stored image: its latest save, oldest first."""
        latest = {}
        for row in self.history():
            latest[row.hash] = row
        return [row for row in latest.values() if (self.root / row.path).exists()]

    def history(self):
        """Every row of the log, in order (damaged lines are skipped)."""
        path = self.root / LOG_FILE
        if not path.exists():
            return []
        rows = []
        fields = set(FeedbackRecord.__dataclass_fields__)
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                values = json.loads(line)
                rows.append(FeedbackRecord(**{k: v for k, v in values.items() if k in fields}))
            except (ValueError, TypeError):
                continue
        return rows

    # ------------------------------------------------------------------ internals

    def _check_label(self, label):
        if not isinstance(label, str) or label not in self.class_names:
            raise FeedbackError(f"Unknown label {label!r}; choose one of: {', '.join(self.class_names)}.")
        return label

    def _encode(self, image):
        """Decode safely (classifier.images), RGB, cap the long side, PNG; hash the pixels."""
        import numpy as np
        from PIL import Image

        from classifier.images import open_image, to_mode

        picture = to_mode(open_image(image), 3)
        if max(picture.size) > self.max_side:
            scale = self.max_side / max(picture.size)
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            picture = picture.resize(size, Image.Resampling.LANCZOS)
        pixels = np.asarray(picture, dtype=np.uint8)
        # Hash of the pixels, not of the PNG bytes: equal pictures stay equal across Pillow versions.
        digest = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()[:32]
        buffer = io.BytesIO()
        # Level 1: half the encoding time of the default for ~5% more bytes; the user is waiting.
        picture.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue(), digest

    def _write_atomically(self, path, data):
        root = self.root.resolve()
        if path.resolve().parent.parent != root:
            raise FeedbackError("Refusing to write outside the feedback folder.")
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary file sits in the root, not in a class folder, so a crash never leaves a
        # stray file where the training loader looks for images.
        temporary = self.root / f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        key = str(self.root.resolve())
        with _locks_guard:
            lock = _locks.setdefault(key, threading.Lock())
        return _FolderLock(lock, self.root / LOCK_FILE)


class _FolderLock:
    """A thread lock for this process plus an flock, where the OS has one, for other processes."""

    def __init__(self, thread_lock, path):
        self.thread_lock, self.path, self.handle = thread_lock, path, None

    def __enter__(self):
        self.thread_lock.acquire()
        try:
            import fcntl
        except ImportError:  # Windows: threads are still serialised
            return self
        try:
            self.handle = open(self.path, "a")
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()  # closing releases the flock
            self.handle = None
        self.thread_lock.release()
        return False
