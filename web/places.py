"""Each client's places at the front door: at most `cap` requests with work behind them at once.

    places = Places(cap=2)
    key = places.take(client)            # before the request's body is read; None: refused
    ...an upload or a JSON API call...   places.give_back(client, key) when its answer has gone out
    ...a join of Gradio's queue...       places.bind(client, key, event_id, session) once Gradio named the event
    places.finished(event_id)            # its "process_completed" message went out
    places.session_ended(session)        # its event stream closed: Gradio drops what it still held

What takes a place: an upload while its body is read (so stalled uploads count against their
client), a JSON API call until its answer is sent, and a queue event from its join to its end.
Why at the door: Gradio's queue is first come, first served across all visitors. A per-client cap
inside the handler refuses a flooder's extra requests only when their turn comes, so they still
stand in line in front of everybody else; and a body read before a refusal has cost the server
the read. A place whose end we never see (a stream cut in a way we missed) is freed after
`expiry_s`, so a client can lock out only itself, and only for that long.

A client refused a place is refused every place for `cooldown_s` after that, and each refusal
restarts the wait. A cap alone would still give a flooder `cap` of the server's turns against a
normal visitor's one; with the cool-down a client that keeps sending more than its places gets
nothing until it stops, while a visitor who waits for each answer (as the page does) is never refused.
"""

import itertools
import threading
import time
from collections import defaultdict


class Places:
    def __init__(self, cap=2, expiry_s=60.0, cooldown_s=10.0, clock=time.monotonic):
        self.cap = int(cap)
        self.expiry_s = expiry_s
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._cooling = {}  # client -> when it may have a place again
        self._held = defaultdict(dict)  # client -> {place key: time taken}
        self._owner = {}  # event id -> (client, place key, session)
        # Ends seen before their join was bound (a quick event can finish, its end streamed out on a
        # session's open stream, before the join's answer has gone back): bind frees those at once.
        self._ended_early = {}  # event id -> when its end was seen
        self._keys = itertools.count(1)
        self._lock = threading.Lock()

    def take(self, client):
        """A place for `client`, or None when it already holds `cap` of them or is cooling down."""
        with self._lock:
            self._expire(client)
            now = self.clock()
            if len(self._held.get(client, ())) >= self.cap or self._cooling.get(client, now) > now:
                self._cooling[client] = now + self.cooldown_s
                if len(self._cooling) > 10_000:  # forget the clients whose wait is over
                    self._cooling = {c: t for c, t in self._cooling.items() if t > now}
                return None
            key = next(self._keys)
            self._held[client][key] = now
            return key

    def bind(self, client, key, event_id, session):
        """The place `key` now waits for the event Gradio named `event_id`, in `session`."""
        with self._lock:
            if self._ended_early.pop(event_id, None) is not None:
                self._drop(client, key)
            elif key in self._held.get(client, {}):
                self._owner[event_id] = (client, key, session)

    def give_back(self, client, key):
        with self._lock:
            self._drop(client, key)

    def finished(self, event_id):
        with self._lock:
            owner = self._owner.pop(event_id, None)
            if owner is not None:
                self._drop(owner[0], owner[1])
                return
            now = self.clock()
            self._ended_early[event_id] = now
            if len(self._ended_early) > 1000:  # ids whose join never came back: forget them
                self._ended_early = {e: t for e, t in self._ended_early.items() if t > now - self.expiry_s}

    def session_ended(self, session):
        with self._lock:
            for event_id in [e for e, owner in self._owner.items() if owner[2] == session]:
                client, key, _ = self._owner.pop(event_id)
                self._drop(client, key)

    def held(self, client):
        with self._lock:
            self._expire(client)
            return len(self._held.get(client, {}))

    def _drop(self, client, key):
        places = self._held.get(client)
        if places is not None:
            places.pop(key, None)
            if not places:
                del self._held[client]

    def _expire(self, client):
        places = self._held.get(client)
        if not places:
            return
        oldest = self.clock() - self.expiry_s
        expired = {key for key, taken in places.items() if taken <= oldest}
        if expired:
            for event_id in [e for e, owner in self._owner.items() if owner[0] == client and owner[1] in expired]:
                del self._owner[event_id]
            for key in expired:
                del places[key]
        if not places:
            del self._held[client]
