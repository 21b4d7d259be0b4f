"""Per-client limits for a public link: uploads and corrections per minute, requests in flight.

    limits = ClientLimits(uploads_per_minute=30)
    with limits.upload(client):          # raises LimitExceeded with a plain message
        ...classify...
    limits.correction(client)

A client is what the app can tell apart: the address the request came from (a --share tunnel
forwards it) — service.visitors.client_of says how it is read. Counts live in this process's
memory: a restart forgets them, which only ever lets a visitor in again.
uploads_per_minute=0 switches every per-client limit off (benchmarks, private use).
"""

import threading
import time
from collections import defaultdict, deque
from contextlib import contextmanager


class LimitExceeded(RuntimeError):
    """A client over a limit; the message is written for that person."""


class ClientLimits:
    def __init__(self, uploads_per_minute=30, corrections_per_minute=10, in_flight=2, window_s=60.0, clock=time.monotonic):
        self.uploads_per_minute = int(uploads_per_minute)
        self.corrections_per_minute = int(corrections_per_minute)
        self.in_flight = int(in_flight)
        self.window_s = window_s
        self.clock = clock
        self._events = defaultdict(deque)  # (kind, client) -> event times within the window
        self._running = defaultdict(int)  # client -> requests being answered now
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
            self._take("upload", client, self.uploads_per_minute, "pictures")
            self._running[client] += 1
        try:
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
            with self._lock:
                self._take("upload_request", client, 2 * self.uploads_per_minute, "files")

    def correction(self, client):
        if self.enabled:
            with self._lock:
                self._take("correction", client, self.corrections_per_minute, "corrections")

    def _take(self, kind, client, limit, what):
        now = self.clock()
        events = self._events[(kind, client)]
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if len(events) >= limit:
            wait = int(events[0] + self.window_s - now) + 1
            raise LimitExceeded(f"Too many {what} from you in the last minute (the limit is {limit}); try again in {wait} s.")
        events.append(now)
        # Forget idle clients, so that the table stays as small as the set of recent visitors.
        if len(self._events) > 10_000:
            for key in [k for k, v in self._events.items() if not v or v[-1] <= now - self.window_s]:
                del self._events[key]
