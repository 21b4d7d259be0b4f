"""Per-client limits for a public link: uploads and corrections per minute, requests in flight.

    limits = ClientLimits(uploads_per_minute=30)                       # counts in this process
    limits = ClientLimits(30, counters=SharedCounters("postgresql://app@db/honest"))   # shared by replicas
    with limits.upload(client):          # raises LimitExceeded with a plain message
        ...classify...
    limits.correction(client)

A client is what the app can tell apart: the address the request came from (behind the --share
tunnel, the address the tunnel appended; web.guard says how it is read). The per-minute counts live in
this process's memory (MemoryCounters: a sliding minute; a restart forgets them, which only ever
lets a visitor in again) or, when replicas share a database, in a table there (SharedCounters),
so that a visitor sent to two replicas still gets one allowance. The cap on requests in flight
stays per process: it guards this process's workers, and a request lives in one process only.
uploads_per_minute=0 switches every per-client limit off (benchmarks, private use).
"""

import logging
import math
import threading
import time
from collections import defaultdict, deque
from contextlib import contextmanager

import sqlalchemy as sa

import storage

logger = logging.getLogger(__name__)

METADATA = sa.MetaData()
# One row per (kind, client, minute): how many that client took in that minute.
COUNTS = sa.Table(
    "counts", METADATA,
    sa.Column("kind", sa.Text(), primary_key=True),
    sa.Column("client", sa.Text(), primary_key=True),
    sa.Column("window", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("count", sa.Integer(), nullable=False),
)


class LimitExceeded(RuntimeError):
    """A client over a limit; the message is written for that person."""


class MemoryCounters:
    """Event times per (kind, client) in this process: an exact sliding window."""

    def __init__(self, window_s=60.0, clock=time.monotonic):
        self.window_s, self.clock = window_s, clock
        self._events = defaultdict(deque)  # (kind, client) -> event times within the window
        self._lock = threading.Lock()

    def take(self, kind, client, limit):
        """Count one event if `client` is under `limit`; else the seconds until it may try again."""
        with self._lock:
            now = self.clock()
            events = self._events[(kind, client)]
            while events and events[0] <= now - self.window_s:
                events.popleft()
            if len(events) >= limit:
                return events[0] + self.window_s - now
            events.append(now)
            # Forget idle clients, so that the table stays as small as the set of recent visitors.
            if len(self._events) > 10_000:
                for key in [k for k, v in self._events.items() if not v or v[-1] <= now - self.window_s]:
                    del self._events[key]
            return None


class SharedCounters:
    """Counts per (kind, client, minute) in a database table (schema "limits" on PostgreSQL), so
    that every replica counts against one allowance. The sliding minute is estimated from the
    current minute's count and the last minute's, weighted by how much of it still lies within
    the window (a fixed minute would let a client send twice the limit across its boundary).
    Counting is one atomic upsert that adds one only below the cap: two replicas taking the
    same client's last place at once admit one of them. Replicas' clocks should agree to a few
    seconds (NTP). If the database cannot be reached the request is let through, and logged."""

    def __init__(self, target, window_s=60.0, clock=time.time, busy_timeout_s=5.0):
        self.target, self.window_s, self.clock = str(target), window_s, clock
        try:
            self.engine = storage.open_engine(self.target, schema="limits", synchronous="NORMAL", busy_timeout_s=busy_timeout_s)
            storage.create_tables(self.engine, METADATA)
        except storage.database_errors() as error:
            raise storage.DatabaseError(f"Could not open the rate-limit counters in {storage.describe(self.target)}: "
                                        f"{storage.error_text(error)}.") from error
        self._cleaned = None  # the last window this process deleted older rows in

    def take(self, kind, client, limit):
        now = self.clock()
        window = math.floor(now / self.window_s)
        past = 1.0 - (now / self.window_s - window)  # share of the last window still within the minute
        key = (COUNTS.c.kind == kind) & (COUNTS.c.client == client)
        try:
            with self.engine.begin() as connection:
                previous = connection.execute(sa.select(COUNTS.c.count).where(key & (COUNTS.c.window == window - 1))).scalar() or 0
                cap = math.floor(limit - previous * past + 1e-9)  # events this window may hold
                counted = None
                if cap >= 1:
                    counted = storage.upsert_returning(
                        connection, COUNTS, dict(kind=kind, client=client, window=window, count=1),
                        key=["kind", "client", "window"], set_=lambda excluded: {"count": COUNTS.c.count + 1},
                        where=COUNTS.c.count < cap, returning=COUNTS.c.count)
                current = counted if counted is not None else connection.execute(
                    sa.select(COUNTS.c.count).where(key & (COUNTS.c.window == window))).scalar() or 0
                if self._cleaned != window:
                    self._cleaned = window
                    connection.execute(sa.delete(COUNTS).where(COUNTS.c.window < window - 1))
        except storage.database_errors() as error:
            logger.warning("rate-limit counters unavailable (%s); request let through", storage.error_text(error))
            return None
        if counted is not None:
            return None
        return self._wait(now, window, previous, current, limit)

    def _wait(self, now, window, previous, current, limit):
        """Seconds until the estimate leaves room for one more event."""
        end = (window + 1) * self.window_s
        if current + 1 <= limit and previous:
            # Within this window, once enough of the last one has slid out.
            share = 1.0 - (limit - current - 1) / previous
            return max(window * self.window_s + share * self.window_s - now, 0.0)
        # Next window: this one's count, weighted, must leave room.
        share = 1.0 - (limit - 1) / current if current else 0.0
        return end - now + max(share, 0.0) * self.window_s

    def close(self):
        self.engine.dispose()


class ClientLimits:
    def __init__(self, uploads_per_minute=30, corrections_per_minute=10, in_flight=2, window_s=60.0, clock=time.monotonic,
                 counters=None):
        self.uploads_per_minute = int(uploads_per_minute)
        self.corrections_per_minute = int(corrections_per_minute)
        self.in_flight = int(in_flight)
        self.counters = MemoryCounters(window_s, clock) if counters is None else counters
        self._running = defaultdict(int)  # client -> requests being answered now, in this process
        self._lock = threading.Lock()

    @property
    def enabled(self):
        return self.uploads_per_minute > 0

    @contextmanager
    def upload(self, client):
        """Count one upload of `client` and hold one of its in-flight places while the block runs."""
        if not self.enabled:
            yield
            return
        with self._lock:
            if self._running[client] >= self.in_flight:
                raise LimitExceeded(f"You already have {self.in_flight} pictures being classified; wait for them to finish.")
            self._running[client] += 1
        try:
            self._take("upload", client, self.uploads_per_minute, "pictures")
            yield
        finally:
            with self._lock:
                self._running[client] -= 1
                if not self._running[client]:
                    del self._running[client]

    def upload_request(self, client):
        """A file sent to the server's upload endpoint: twice the upload limit, since every
        classified picture is uploaded first, and an upload that is never classified still
        costs disk until the cache is cleaned."""
        if self.enabled:
            self._take("upload_request", client, 2 * self.uploads_per_minute, "files")

    def correction(self, client):
        if self.enabled:
            self._take("correction", client, self.corrections_per_minute, "corrections")

    def _take(self, kind, client, limit, what):
        wait = self.counters.take(kind, client, limit)
        if wait is not None:
            raise LimitExceeded(f"Too many {what} from you in the last minute (the limit is {limit}); "
                                f"try again in {int(wait) + 1} s.")
