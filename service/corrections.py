"""Learning material: visitors' corrections and the ImageNet fallback's sure answers, as votes
reviewed before any training uses them.

    store = CorrectionStore("state/corrections.sqlite", class_names)   # or a postgresql:// URL
    vote = store.vote(png, picture_hash, "ship", answer="airplane", answered_by="fallback", voter=v, session=s)
    store.teach(png, picture_hash, "dog", confidence=0.93)   # the fallback's sure answer (source "fallback")
    store.queue(label="dog", source="fallback"); store.review_many([3, 4], accept=True, reviewer="admin")
    store.learning_pictures()                      # accepted (hash, label, source): what pipeline.learn trains on
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
- Two sources (SOURCES): "visitor" (a vote) and "fallback" (taught by the ImageNet fallback, which
  answered the upload surely). Caps per class, source and day (LearningCaps) keep one flood of
  pictures from owning the training set: past its cap a visitor's vote is refused with a plain
  sentence, and the fallback's is not kept.
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
VISITOR, FALLBACK = "visitor", "fallback"
SOURCES = (VISITOR, FALLBACK)
DAY_S = 24 * 3600


@dataclass(frozen=True)
class LearningCaps:
    """Votes kept per class, source and rolling day."""
    visitor_per_class_per_day: int = 200
    fallback_per_class_per_day: int = 100

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
    sa.Column("source", sa.Text(), nullable=False, server_default=VISITOR),
    sa.UniqueConstraint("picture", "voter"),
    sa.Index("votes_status", "status", "time"),
    sa.Index("votes_cap", "source", "label", "time"),
)
VOTE_COLUMNS = ("id", "picture", "label", "answer", "answered_by", "time", "voter", "session", "status", "reviewer",
                "reviewed_at", "source")


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
    source: str = VISITOR


class CorrectionStore:
    def __init__(self, target, class_names, busy_timeout_s=10.0, caps=LearningCaps()):
        """`target`: a SQLite file, or a PostgreSQL URL that several app processes share."""
        self.target = str(target)
        self.caps = caps
        self.path = None if storage.is_postgresql(self.target) else Path(self.target)  # the SQLite file, if one
        self.class_names = tuple(class_names)
        with self._errors("open"):
            # FULL: a commit is on disk before the visitor is told the vote is saved.
            self.engine = storage.open_engine(self.target, schema="corrections", synchronous="FULL",
                                              busy_timeout_s=busy_timeout_s)
            storage.create_tables(self.engine, METADATA)

    def vote(self, png, picture_hash, label, answer, answered_by, voter, session, source=VISITOR):
        """Store one vote (and the picture, the first time it is voted on); returns the Vote."""
        if not isinstance(label, str) or label not in self.class_names:
            raise CorrectionError(f"Unknown label {label!r}; choose one of: {', '.join(self.class_names)}.")
        now = time.time()
        values = dict(picture=picture_hash, label=label, answer=answer, answered_by=answered_by, time=now, voter=voter,
                      session=session, source=source)
        cap = self.caps.visitor_per_class_per_day if source == VISITOR else self.caps.fallback_per_class_per_day
        try:
            with self._errors("write to"), self.engine.begin() as connection:
                recent = connection.execute(sa.select(sa.func.count()).select_from(VOTES).where(
                    VOTES.c.source == source, VOTES.c.label == label, VOTES.c.time > now - DAY_S)).scalar()
                if recent >= cap:
                    raise CorrectionError(f"We have enough new pictures of {label.replace('_', ' ')} for today; "
                                          "thank you, please try again tomorrow.")
                # DO NOTHING on a known picture only: a picture without its PNG must fail, not be skipped.
                storage.insert_ignoring_duplicates(connection, PICTURES, dict(hash=picture_hash, png=png, first_seen=now),
                                                   key=["hash"])
                row_id = connection.execute(sa.insert(VOTES).values(values)).inserted_primary_key[0]
        except CorrectionError as error:
            if isinstance(error.__cause__, sa.exc.IntegrityError) and storage.is_duplicate(error.__cause__):
                raise CorrectionError("You already sent a correction for this picture; thank you, it is waiting for review.") from None
            raise  # a missing field is our bug, not the visitor's second vote
        return Vote(row_id, status="pending", **values)

    def teach(self, png, picture_hash, label, confidence):
        """Keep an upload the ImageNet fallback answered surely as learning material (source
        "fallback"), unless it is already kept or its class is at today's cap; returns the Vote or None."""
        try:
            return self.vote(png, picture_hash, label, label, FALLBACK, FALLBACK, f"mass {confidence:.3f}", source=FALLBACK)
        except CorrectionStoreError:
            raise
        except CorrectionError:
            return None  # seen before, or enough of this class today
    def votes(self, status=None, picture=None, limit=None, vote_id=None, source=None, label=None):
        """Votes, oldest first, optionally of one status, one picture, one id, one source or one label."""
        query = sa.select(*[VOTES.c[name] for name in VOTE_COLUMNS]).order_by(VOTES.c.id)
        if source is not None:
            query = query.where(VOTES.c.source == source)
        if label is not None:
            query = query.where(VOTES.c.label == label)
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

    def queue(self, status="pending", label=None, source=None, limit=200):
        """What the review page shows: votes of one status, oldest first, optionally of one label and source."""
        return self.votes(status, limit=limit, source=source or None, label=label or None)

    def review_many(self, vote_ids, accept, reviewer="admin"):
        """Accept or reject several votes in one transaction; returns how many changed."""
        ids = [int(vote_id) for vote_id in vote_ids]
        if not ids:
            return 0
        with self._errors("write to"), self.engine.begin() as connection:
            return connection.execute(sa.update(VOTES).where(VOTES.c.id.in_(ids)).values(
                status="accepted" if accept else "rejected", reviewer=str(reviewer), reviewed_at=time.time())).rowcount

    def learning_pictures(self):
        """[(picture hash, label, source)] of the accepted votes, one per picture; a picture whose
        accepted votes name two labels is left out (a training set must not hold it twice)."""
        chosen = {}
        for vote in self.votes("accepted"):
            chosen.setdefault(vote.picture, set()).add((vote.label, vote.source))
        return [(picture, *sorted(labels)[0]) for picture, labels in sorted(chosen.items())
                if len({label for label, _ in labels}) == 1]
    def picture(self, picture_hash):
        """The stored PNG bytes of a picture, or None."""
        rows = self._read(sa.select(PICTURES.c.png).where(PICTURES.c.hash == picture_hash))
        return bytes(rows[0][0]) if rows else None

    def review(self, vote_id, accept, reviewer="admin"):
        """Accept or reject one vote; returns the updated Vote."""
        if self.review_many([vote_id], accept, reviewer) == 0:
            raise CorrectionError(f"No vote has id {vote_id}.")
        return self.votes_by_id(vote_id)

    def votes_by_id(self, vote_id):
        found = self.votes(vote_id=vote_id)
        return found[0] if found else None

    def counts(self, source=None):
        query = sa.select(VOTES.c.status, sa.func.count()).group_by(VOTES.c.status)
        if source:
            query = query.where(VOTES.c.source == source)
        return {status: 0 for status in STATUSES} | {status: count for status, count in self._read(query)}

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
