"""Users' corrections as votes, reviewed before any retraining uses them.

    store = CorrectionStore("state/corrections.sqlite")
    vote = store.vote(png, picture_hash, "ship", answer="airplane", answered_by="fallback", voter=v, session=s)
    store.pending(); store.review(vote_id, accept=True, reviewer="admin")
    store.export("folder", accepted_only=True)     # <label>/<hash>.png, what pipeline.build --feedback trains on

Rules:
- A vote never overwrites another: each keeps the proposed label, the app's answer and who answered,
  when, and a pseudonymous voter (a salted hash of the client's address) with the session; votes
  for different labels on one picture stay side by side until a reviewer settles them.
- One vote per picture per voter: a second one is refused, so one visitor cannot stuff the ballot.
- A picture is kept once, by the hash of the uploaded file (two files that differ in a few pixels
  are two pictures), as a PNG no larger than the app's correction copy.
- Crash-safe: the picture and its vote are written in one SQLite transaction, synchronous=FULL,
  so a vote the visitor was told is saved survives a kill -9, and there is never a vote without
  its picture or a picture without a vote.
"""

import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from classifier.atomic import write_bytes_atomic

STATUSES = ("pending", "accepted", "rejected")

SCHEMA = """
CREATE TABLE IF NOT EXISTS pictures (
    hash TEXT PRIMARY KEY,
    png BLOB NOT NULL,
    first_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    picture TEXT NOT NULL REFERENCES pictures (hash),
    label TEXT NOT NULL,
    answer TEXT,
    answered_by TEXT NOT NULL,
    time REAL NOT NULL,
    voter TEXT NOT NULL,
    session TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    reviewer TEXT,
    reviewed_at REAL,
    UNIQUE (picture, voter)
);
CREATE INDEX IF NOT EXISTS votes_status ON votes (status, time);
"""


class CorrectionError(ValueError):
    """A correction we cannot take; the message is written for the person who sent it."""


@dataclass(frozen=True)
class Vote:
    id: int
    picture: str
    label: str
    answer: str | None
    answered_by: str
    time: float
    voter: str
    session: str
    status: str
    reviewer: str | None = None
    reviewed_at: float | None = None


class CorrectionStore:
    def __init__(self, path, class_names, busy_timeout_s=10.0):
        self.path = Path(path)
        self.class_names = tuple(class_names)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._errors("open"):
            connection = self._connection()
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)

    def vote(self, png, picture_hash, label, answer, answered_by, voter, session):
        """Store one vote (and the picture, the first time it is voted on); returns the Vote."""
        if not isinstance(label, str) or label not in self.class_names:
            raise CorrectionError(f"Unknown label {label!r}; choose one of: {', '.join(self.class_names)}.")
        now = time.time()
        with self._transaction() as connection:
            # ON CONFLICT, not OR IGNORE: a picture without its PNG must fail, not be skipped.
            connection.execute("INSERT INTO pictures (hash, png, first_seen) VALUES (?, ?, ?) ON CONFLICT (hash) DO NOTHING",
                               (picture_hash, png, now))
            try:
                row_id = connection.execute(
                    "INSERT INTO votes (picture, label, answer, answered_by, time, voter, session) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (picture_hash, label, answer, answered_by, now, voter, session)).lastrowid
            except sqlite3.IntegrityError as error:
                if "UNIQUE" not in str(error):
                    raise  # a missing field is our bug, not the visitor's second vote
                raise CorrectionError("You already sent a correction for this picture; thank you, it is waiting for review.") from None
        return Vote(row_id, picture_hash, label, answer, answered_by, now, voter, session, "pending")

    def votes(self, status=None, picture=None, limit=None):
        """Votes, oldest first, optionally of one status or one picture."""
        where, parameters = [], []
        if status is not None:
            where.append("status = ?")
            parameters.append(status)
        if picture is not None:
            where.append("picture = ?")
            parameters.append(picture)
        query = "SELECT id, picture, label, answer, answered_by, time, voter, session, status, reviewer, reviewed_at FROM votes"
        query += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with self._errors("read"):
            return [Vote(*row) for row in self._connection().execute(query, parameters).fetchall()]

    def pending(self, limit=None):
        return self.votes("pending", limit=limit)

    def picture(self, picture_hash):
        """The stored PNG bytes of a picture, or None."""
        with self._errors("read"):
            row = self._connection().execute("SELECT png FROM pictures WHERE hash = ?", (picture_hash,)).fetchone()
        return None if row is None else row[0]

    def review(self, vote_id, accept, reviewer="admin"):
        """Accept or reject one vote; returns the updated Vote."""
        status = "accepted" if accept else "rejected"
        with self._transaction() as connection:
            cursor = connection.execute("UPDATE votes SET status = ?, reviewer = ?, reviewed_at = ? WHERE id = ?",
                                        (status, str(reviewer), time.time(), int(vote_id)))
            if cursor.rowcount == 0:
                raise CorrectionError(f"No vote has id {vote_id}.")
        return self.votes_by_id(vote_id)

    def votes_by_id(self, vote_id):
        found = [v for v in self.votes() if v.id == int(vote_id)]
        return found[0] if found else None

    def counts(self):
        with self._errors("read"):
            rows = self._connection().execute("SELECT status, COUNT(*) FROM votes GROUP BY status").fetchall()
        return {status: 0 for status in STATUSES} | dict(rows)

    def export(self, folder, accepted_only=True):
        """Write the pictures to train on as <label>/<hash>.png under `folder`; returns a report.

        A picture goes under the label its votes agree on: its accepted votes (or, with
        accepted_only=False, all its votes but rejected ones). Pictures whose votes name more
        than one label are left out and listed: a training set must not hold one picture twice."""
        statuses = ("accepted",) if accepted_only else ("accepted", "pending")
        labels = {}
        for vote in self.votes():
            if vote.status in statuses:
                labels.setdefault(vote.picture, set()).add(vote.label)
        folder = Path(folder)
        written, conflicts = 0, []
        for picture, names in sorted(labels.items()):
            if len(names) > 1:
                conflicts.append(picture)
                continue
            target = folder / next(iter(names)) / f"{picture}.png"
            if not target.exists():
                write_bytes_atomic(target, self.picture(picture))
            written += 1
        return {"pictures": written, "conflicting": conflicts, "accepted_only": accepted_only}

    def close(self):
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # ------------------------------------------------------------------ internals

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
            # FULL: a commit is on disk before the visitor is told the vote is saved.
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            connection.execute("PRAGMA foreign_keys = ON")
            self._local.connection = connection
        return connection

    @contextmanager
    def _transaction(self):
        with self._errors("write to"):
            connection = self._connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    @contextmanager
    def _errors(self, action):
        try:
            yield
        except sqlite3.Error as error:
            raise CorrectionError(f"Could not {action} the corrections store: {error}.") from error
