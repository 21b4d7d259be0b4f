"""The public server's front door: an ASGI middleware in front of Gradio (and the JSON API).

    demo.launch(app_kwargs={"middleware": [Middleware(PublicGuard, limits=limits)]})

The JSON API (web.api) is served from here, beside the page: requests under /api/v1 go to it,
after the same size check as an upload. What it stops before Gradio sees it:
- an upload request larger than one file of the largest size we accept, or without a length;
- more than MAX_FILES_PER_REQUEST files in one upload request, or a file without a name;
- more upload requests per client per minute than the upload limit allows (upload-only traffic
  that never classifies still costs disk until the cache is cleaned);
- a client's request to join Gradio's queue while it already holds as many places in it as its
  in-flight limit (web.queue_turns: the queue is shared, first come first served, so a cap inside
  the handler would still let a flooder stand in line in front of everybody else);
- every plain-message refusal is JSON {"error": ...} with a 4xx status.
"""

import asyncio
import json
import re
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool

from classifier.images import MAX_UPLOAD_BYTES
from service.limits import LimitExceeded
from service.visitors import client_of
from web.api import PREFIX as API_PREFIX
from web.queue_turns import QueueTurns

MAX_FILES_PER_REQUEST = 1
REFUSAL_DELAY_S = 1.0  # how long a client over its upload limit waits for its 429
# Multipart framing around one file: boundaries and part headers, a few hundred bytes in practice.
FRAMING_BYTES = 64 * 1024
FILE_PART = re.compile(rb'content-disposition:[^\r\n]*filename="([^"]*)"', re.IGNORECASE)
MAX_JOIN_BYTES = 256 * 1024  # a queue join names its inputs (uploaded files by reference): small


class PublicGuard:
    def __init__(self, app, limits, api=None):
        self.app, self.limits, self.api = app, limits, api
        self.turns = QueueTurns(limits.in_flight) if limits.enabled else None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.api is not None and scope["path"].startswith(API_PREFIX):
            if scope["method"] == "POST" and (refusal := _size_refusal(scope)):
                return await _refuse(send, *refusal)
            return await self.api(scope, receive, send)
        if scope["type"] == "http" and self.turns is not None:
            path = scope["path"].rstrip("/")
            if scope["method"] == "POST" and path.endswith("/queue/join"):
                return await self._join(scope, receive, send)
            if scope["method"] == "GET" and path.endswith("/queue/data"):
                return await self._stream(scope, receive, send)
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/upload"):
            return await self.app(scope, receive, send)
        client = _client(scope)
        length = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if refusal := _size_refusal(scope):
            return await _refuse(send, *refusal)
        try:
            # With replicas the count is a database transaction: off the event loop, which every
            # other connection shares.
            await run_in_threadpool(self.limits.upload_request, client)
        except LimitExceeded as error:
            # A tarpit: a client over its limit waits for its refusal. The wait costs the server
            # no work (the event loop serves others meanwhile), and a client that retries at once
            # in a loop is slowed to a request a second per connection instead of hundreds.
            await asyncio.sleep(REFUSAL_DELAY_S)
            return await _refuse(send, 429, str(error))
        body = await _read_body(receive, int(length))
        if body is None:
            return await _refuse(send, 400, "The upload was cut short.")
        names = FILE_PART.findall(body)
        if len(names) > MAX_FILES_PER_REQUEST:
            return await _refuse(send, 400, f"Send one picture at a time (this request holds {len(names)}).")
        if any(not name.strip() for name in names):
            return await _refuse(send, 400, "The file has no name; choose a picture file to upload.")
        await self.app(scope, _replay(body, receive), send)


    async def _join(self, scope, receive, send):
        """Let a join through only while its client holds fewer places than its cap."""
        client = _client(scope)
        body = await _read_body(receive, MAX_JOIN_BYTES)
        if body is None:
            return await _refuse(send, 413, "The request is too large or was cut short.")
        try:
            session = json.loads(body).get("session_hash")
        except (ValueError, AttributeError):
            session = None
        if not isinstance(session, str):
            return await self.app(scope, _replay(body, receive), send)  # Gradio answers it plainly
        key = self.turns.take(client, session)
        if key is None:
            await asyncio.sleep(REFUSAL_DELAY_S)  # the tarpit, as for uploads
            return await _refuse(send, 429, f"Too many requests at once: at most {self.turns.cap} may wait or run. "
                                            f"Wait for your answers, then {self.turns.cooldown_s:.0f} s, and try again.")
        answer = {"status": None, "body": b""}

        async def watched(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, _replay(body, receive), watched)
        finally:
            event_id = _event_id(answer["body"]) if answer["status"] == 200 else None
            if event_id is None:
                self.turns.give_back(client, key)
            else:
                self.turns.bind(client, key, event_id)

    async def _stream(self, scope, receive, send):
        """Watch a session's event stream for the end of each event, to free its place."""
        session = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash", [""])[0]
        pending = b""

        async def watched(message):
            nonlocal pending
            if message["type"] == "http.response.body":
                pending += message.get("body", b"")
                *complete, pending = pending.split(b"\n\n")
                for event in complete:
                    if b"process_completed" in event and (event_id := _completed(event)):
                        self.turns.finished(event_id)
                pending = pending[-MAX_JOIN_BYTES:]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            self.turns.session_ended(session)


def _client(scope):
    headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
    peer = scope.get("client") or ("unknown", 0)
    return client_of(peer[0], headers.get("x-forwarded-for"))


def _event_id(body):
    try:
        event_id = json.loads(body).get("event_id")
    except (ValueError, AttributeError):
        return None
    return event_id if isinstance(event_id, str) else None


def _completed(event):
    """The event id of one server-sent 'process_completed' message, else None."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                message = json.loads(line[5:])
            except ValueError:
                return None
            if isinstance(message, dict) and message.get("msg") == "process_completed":
                event_id = message.get("event_id")
                return event_id if isinstance(event_id, str) else None
    return None


def _size_refusal(scope):
    """(status, message) for a body without a length or larger than one picture, else None."""
    length = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
    if not length.isdigit():
        return 411, "An upload must say how large it is (Content-Length)."
    if int(length) > MAX_UPLOAD_BYTES + FRAMING_BYTES:
        return 413, f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
    return None


async def _read_body(receive, length):
    """The whole body (at most `length` bytes, as announced), or None if the client went away."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > length:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body, receive):
    """The body, read already, then the client's own messages (its disconnect, when it comes)."""
    sent = False

    async def replayed():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _refuse(send, status, message):
    payload = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
