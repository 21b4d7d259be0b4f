"""Each client's places in Gradio's shared queue: at most `cap` events waiting or running.

    turns = QueueTurns(cap=2)
    if turns.take(client, session):      # at the door, before Gradio's /queue/join sees the request
        ...join..., then turns.bind(client, session, event_id) or turns.give_back(client, session)
    turns.finished(event_id)             # its "process_completed" message went out
    turns.session_ended(session)         # its event stream closed: Gradio drops what it still held

Why at the door: Gradio's queue is first come, first served across all visitors. A per-client cap
inside the handler refuses a flooder's extra requests only when their turn comes, so they still
stand in line in front of everybody else. Counted here, a client never has more than `cap` places
in the line. A place whose end we never see (a stream cut in a way we missed) is freed after
`expiry_s`, so a client can lock out only itself, and only for that long.

A client refused a place is refused every place for `cooldown_s` after that, and each refusal
restarts the wait. A cap alone would still give a flooder `cap` of the server's turns against a
normal visitor's one, a larger share of the CPU than the visitor's; with the cool-down a client
that keeps sending more than its places gets nothing until it stops, while a visitor who waits for
each answer (as the page does) is never refused.
"""

import threading
import time
from collections import defaultdict


class QueueTurns:
    def __init__(self, cap=2, expiry_s=60.0, cooldown_s=10.0, clock=time.monotonic):
        self.cap = int(cap)
        self.expiry_s = expiry_s
        self.cooldown_s = cooldown_s
        self._cooling = {}  # client -> when it may have a place again
        self.clock = clock
        self._held = defaultdict(dict)  # client -> {place key: time taken}
        self._owner = {}  # event id -> (client, place key)
        self._by_session = defaultdict(set)  # session hash -> event ids
        # Ends seen before their join was bound (a quick event can finish, its end stream out on a
        # session's open stream, before the join's answer has gone back): bind frees those at once.
        self._ended_early = {}  # event id -> when its end was seen
        self._lock = threading.Lock()
        self._counter = 0

    def take(self, client, session):
        """A place for `client`, or None when it already holds `cap` of them or is cooling down."""
        with self._lock:
            self._expire(client)
            now = self.clock()
            if len(self._held.get(client, ())) >= self.cap or self._cooling.get(client, now) > now:
                self._cooling[client] = now + self.cooldown_s
                if len(self._cooling) > 10_000:  # forget the clients whose wait is over
                    self._cooling = {c: t for c, t in self._cooling.items() if t > now}
                return None
            self._counter += 1
            key = (session, self._counter)
            self._held[client][key] = self.clock()
            return key

    def bind(self, client, key, event_id):
        """The place `key` now waits for the event Gradio named `event_id`."""
        with self._lock:
            if self._ended_early.pop(event_id, None) is not None:
                self._drop(client, key)
            elif key in self._held.get(client, {}):
                self._owner[event_id] = (client, key)
                self._by_session[key[0]].add(event_id)

    def give_back(self, client, key):
        with self._lock:
            self._drop(client, key)

    def finished(self, event_id):
        with self._lock:
            owner = self._owner.pop(event_id, None)
            if owner is not None:
                self._by_session[owner[1][0]].discard(event_id)
                self._drop(*owner)
                return
            now = self.clock()
            self._ended_early[event_id] = now
            if len(self._ended_early) > 1000:  # ids whose join never came back: forget them
                self._ended_early = {e: t for e, t in self._ended_early.items() if t > now - self.expiry_s}

    def session_ended(self, session):
        with self._lock:
            for event_id in self._by_session.pop(session, set()):
                owner = self._owner.pop(event_id, None)
                if owner is not None:
                    self._drop(*owner)

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
        now = self.clock()
        places = self._held.get(client)
        if not places:
            return
        expired = {key for key, taken in places.items() if taken <= now - self.expiry_s}
        for key in expired:
            del places[key]
            for event_id in self._by_session.get(key[0], set()) & {e for e, owner in self._owner.items() if owner == (client, key)}:
                del self._owner[event_id]
                self._by_session[key[0]].discard(event_id)
            if not self._by_session.get(key[0], True):
                del self._by_session[key[0]]
        if not places:
            del self._held[client]
