"""Anonymous visitors: who is who (as far as the app can tell), and what it keeps of their uploads.

    voter = Pseudonyms(state_dir).voter(client)         # a salted hash of the client's address: no address is stored
    token = memory.keep(correction_png, picture_hash, answer)   # the one thing a correction needs
    memory.get(token)                                   # None once expired or evicted

The upload memory is what makes a session small: a visitor's session holds only a token; the
server keeps, per upload, the PNG copy a correction would store (long side capped) for
`ttl_s`, and never more than `max_bytes` in all (oldest first out). The decoded upload itself is
never kept.
"""

import hashlib
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

SALT_FILE = "visitor_salt"


class Pseudonyms:
    """Salted hashes of client addresses. The salt is made once per deployment and kept in the
    state folder (readable by its owner only), so pseudonyms are stable across restarts but cannot
    be turned back into addresses by anyone without the file. Replicas on one PostgreSQL
    (`database`) keep it there instead, so that one visitor is one voter on every replica."""

    def __init__(self, state_dir, database=None):
        self._salt = (_shared_salt(database) if database else _file_salt(Path(state_dir) / SALT_FILE)).encode()

    def voter(self, client):
        return hashlib.sha256(self._salt + str(client).encode()).hexdigest()[:16]


def _file_salt(path):
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def _shared_salt(target):
    """The deployment's salt in the database: the first replica to start makes it, the others
    read that one (an insert that loses the race changes nothing)."""
    import sqlalchemy as sa

    import storage

    metadata = sa.MetaData()
    table = sa.Table("secrets", metadata, sa.Column("name", sa.String(64), primary_key=True),
                     sa.Column("value", sa.String(128), nullable=False))
    engine = storage.open_engine(target, "visitors")
    try:
        storage.create_tables(engine, metadata)
        with engine.begin() as connection:
            storage.insert_ignoring_duplicates(connection, table, {"name": SALT_FILE, "value": secrets.token_hex(32)}, ["name"])
            return connection.execute(sa.select(table.c.value).where(table.c.name == SALT_FILE)).scalar_one()
    except storage.database_errors() as error:
        raise storage.DatabaseError(f"Cannot read the visitors' salt in {storage.describe(target)}: "
                                    f"{storage.error_text(error)}") from error
    finally:
        engine.dispose()


@dataclass(frozen=True)
class KeptUpload:
    png: bytes  # the correction copy
    picture_hash: str  # of the uploaded file's bytes
    answer: str | None
    answered_by: str
    gallery_classes: tuple  # the class of each gallery picture, in the order shown
    log_id: int | None
    kept_at: float


class UploadMemory:
    def __init__(self, ttl_s=3600.0, max_bytes=256 * 1024 * 1024, clock=time.monotonic):
        self.ttl_s, self.max_bytes, self.clock = ttl_s, max_bytes, clock
        self._items = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, png, picture_hash, answer, answered_by, gallery_classes, log_id=None):
        token = secrets.token_urlsafe(16)
        item = KeptUpload(png, picture_hash, answer, answered_by, tuple(gallery_classes), log_id, self.clock())
        with self._lock:
            self._items[token] = item
            self._bytes += len(png)
            self._expire()
        return token

    def get(self, token):
        if not isinstance(token, str):
            return None
        with self._lock:
            self._expire()
            return self._items.get(token)

    @property
    def size_bytes(self):
        return self._bytes

    def __len__(self):
        return len(self._items)

    def _expire(self):
        now = self.clock()
        while self._items:
            token, item = next(iter(self._items.items()))
            if self._bytes <= self.max_bytes and now - item.kept_at < self.ttl_s:
                break
            self._items.pop(token)
            self._bytes -= len(item.png)
