"""Users' corrections as votes, reviewed before any retraining uses them.

    store = CorrectionStore("state/corrections.sqlite", class_names)   # or a postgresql:// URL
    vote = store.vote(png, picture_hash, "ship", answer="airplane", answered_by="fallback", voter=v, session=s)
    store.pending(); store.review(vote_id, accept=True, reviewer="admin")
    store.export("folder", accepted_only=True)     # <label>/<hash>.png, what pipeline.build --feedback trains on

Rules:
- A vote never overwrites another: each keeps the proposed label, the app's answer and who answered,
  when, and a pseudonymous voter (a salted hash of the client's address) with the session; votes
  for different labels on one picture stay side by side until a reviewer settles them.
- One vote per picture per voter: a second one is refused, so one visitor cannot stuff the ballot
  (a unique key, so that two replicas taking the same visitor's votes at once refuse one too).
- A picture is kept once, by the hash of the uploaded file (two files that differ in a few pixels
  are two pictures), as a PNG no larger than the app's correction copy.
- Crash-safe: the picture and its vote are written in one transaction (SQLite with
  synchronous=FULL; PostgreSQL commits durably by default), so a vote the visitor was told is
  saved survives a kill -9, and there is never a vote without its picture or a picture without a vote.
- One store for many app processes: on PostgreSQL (tables in the schema "corrections") every
  replica writes to and reviews one queue.
"""

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

import storage
from bundle.atomic import write_bytes_atomic

STATUSES = ("pending", "accepted", "rejected")

METADATA = sa.MetaData()
PICTURES = sa.Table(
    "pictures", METADATA,
    sa.Column("hash", sa.Text(), primary_key=True),
    sa.Column("png", sa.LargeBinary(), nullable=False),
    sa.Column("first_seen", sa.Double(), nullable=False),
)
VOTES = sa.Table(
    "votes", METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("picture", sa.Text(), sa.ForeignKey(PICTURES.c.hash), nullable=False),
    sa.Column("label", sa.Text(), nullable=False),
    sa.Column("answer", sa.Text()),
    sa.Column("answered_by", sa.Text(), nullable=False),
    sa.Column("time", sa.Double(), nullable=False),
    sa.Column("voter", sa.Text(), nullable=False),
    sa.Column("session", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
    sa.Column("reviewer", sa.Text()),
    sa.Column("reviewed_at", sa.Double()),
    sa.UniqueConstraint("picture", "voter"),
    sa.Index("votes_status", "status", "time"),
)
VOTE_COLUMNS = ("id", "picture", "label", "answer", "answered_by", "time", "voter", "session", "status", "reviewer", "reviewed_at")


class CorrectionError(ValueError):
    """A correction we cannot take; the message is written for the person who sent it."""


class CorrectionStoreError(CorrectionError):
    """The store itself failed (locked, disk full, server unreachable): the message is for the
    operator's log, and names the database; a visitor is told only to try again."""


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
    def __init__(self, target, class_names, busy_timeout_s=10.0):
        """`target`: a SQLite file, or a PostgreSQL URL that several app processes share."""
        self.target = str(target)
        self.path = None if storage.is_postgresql(self.target) else Path(self.target)  # the SQLite file, if one
        self.class_names = tuple(class_names)
        with self._errors("open"):
            # FULL: a commit is on disk before the visitor is told the vote is saved.
            self.engine = storage.open_engine(self.target, schema="corrections", synchronous="FULL",
                                              busy_timeout_s=busy_timeout_s)
            storage.create_tables(self.engine, METADATA)

    def vote(self, png, picture_hash, label, answer, answered_by, voter, session):
        """Store one vote (and the picture, the first time it is voted on); returns the Vote."""
        if not isinstance(label, str) or label not in self.class_names:
            raise CorrectionError(f"Unknown label {label!r}; choose one of: {', '.join(self.class_names)}.")
        now = time.time()
        values = dict(picture=picture_hash, label=label, answer=answer, answered_by=answered_by, time=now, voter=voter,
                      session=session)
        try:
            with self._errors("write to"), self.engine.begin() as connection:
                # DO NOTHING on a known picture only: a picture without its PNG must fail, not be skipped.
                storage.insert_ignoring_duplicates(connection, PICTURES, dict(hash=picture_hash, png=png, first_seen=now),
                                                   key=["hash"])
                row_id = connection.execute(sa.insert(VOTES).values(values)).inserted_primary_key[0]
        except CorrectionError as error:
            if isinstance(error.__cause__, sa.exc.IntegrityError) and storage.is_duplicate(error.__cause__):
                raise CorrectionError("You already sent a correction for this picture; thank you, it is waiting for review.") from None
            raise  # a missing field is our bug, not the visitor's second vote
        return Vote(row_id, status="pending", **values)

    def votes(self, status=None, picture=None, limit=None, vote_id=None):
        """Votes, oldest first, optionally of one status, one picture or one id."""
        query = sa.select(*[VOTES.c[name] for name in VOTE_COLUMNS]).order_by(VOTES.c.id)
        if status is not None:
            query = query.where(VOTES.c.status == status)
        if picture is not None:
            query = query.where(VOTES.c.picture == picture)
        if vote_id is not None:
            query = query.where(VOTES.c.id == int(vote_id))
        if limit is not None:
            query = query.limit(int(limit))
        return [Vote(*row) for row in self._read(query)]

    def pending(self, limit=None):
        return self.votes("pending", limit=limit)

    def picture(self, picture_hash):
        """The stored PNG bytes of a picture, or None."""
        rows = self._read(sa.select(PICTURES.c.png).where(PICTURES.c.hash == picture_hash))
        return bytes(rows[0][0]) if rows else None

    def review(self, vote_id, accept, reviewer="admin"):
        """Accept or reject one vote; returns the updated Vote."""
        status = "accepted" if accept else "rejected"
        with self._errors("write to"), self.engine.begin() as connection:
            updated = connection.execute(sa.update(VOTES).where(VOTES.c.id == int(vote_id)).values(
                status=status, reviewer=str(reviewer), reviewed_at=time.time())).rowcount
        if updated == 0:
            raise CorrectionError(f"No vote has id {vote_id}.")
        return self.votes_by_id(vote_id)

    def votes_by_id(self, vote_id):
        found = self.votes(vote_id=vote_id)
        return found[0] if found else None

    def counts(self):
        rows = self._read(sa.select(VOTES.c.status, sa.func.count()).group_by(VOTES.c.status))
        return {status: 0 for status in STATUSES} | {status: count for status, count in rows}

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
        self.engine.dispose()

    # ------------------------------------------------------------------ internals

    def _read(self, query):
        with self._errors("read"):
            return storage.read(self.engine, query)

    @contextmanager
    def _errors(self, action):
        try:
            yield
        except storage.database_errors() as error:
            raise CorrectionStoreError(f"Could not {action} the corrections store {storage.describe(self.target)}: {storage.error_text(error)}.") from error
