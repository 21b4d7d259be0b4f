"""The public server's front door: an ASGI middleware in front of Gradio and the JSON API.

    demo.launch(app_kwargs={"middleware": [Middleware(PublicGuard, limits=limits, api=api, functions=set(demo.fns))]})

Every request passes here first, whatever its route, and what it may cost is settled before its
body is read:
- Gradio's direct routes (/run/, /api/, /call/) are closed: the page and gradio_client go
  through the queue, curl users have the JSON API (web.api), which is served from here too.
- A request with a body must say its length (411), no more than its route takes (413): one
  picture for an upload, a JSON API call or an MCP message (web.mcp; base64), a few hundred kB
  for anything else. The MCP server's older SSE transport is closed.
- An upload, a JSON API call, an MCP message and a join of Gradio's queue each take one of their client's places
  (web.places) before the body is read, and the per-minute upload count is taken then too, so a
  client over its limit is refused without the server reading what it sent, and a stalled
  upload holds one of its own client's places, nobody else's. A refusal for a limit waits
  REFUSAL_DELAY_S first (a tarpit), on every route.
- Bodies are read within time limits into a spool (web.bodies); an upload must hold exactly one
  named file, by python-multipart's reading of it; a join must name a session and one of the
  page's functions. At most OPEN_BODIES bodies are read at once, all clients together.
- A cut-off or too-slow body costs one line in the log and never reaches the app.

Who a client is: the address uvicorn puts in the request's scope. From a loopback peer uvicorn
takes the rightmost X-Forwarded-For entry, the one the --share tunnel appends, only when the app
trusts a proxy (app.py sets FORWARDED_ALLOW_IPS; see README, Security). X-Forwarded-Host, which
the tunnel passes on from the visitor unchanged, is dropped here before Gradio reads it.
"""

import asyncio
import json
import logging
import re
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool

from bundle.images import MAX_UPLOAD_BYTES, TOO_LARGE
from web.mcp import MAX_ENCODED_CHARACTERS
from service.limits import LimitExceeded
from web.api import PREFIX as API_PREFIX
from web.bodies import BodyLimits, BodyRefused, ClientGone, OneFileForm, read_body
from web.places import Places

LOGGER = logging.getLogger(__name__)

REFUSAL_DELAY_S = 1.0  # how long a client over a limit waits for its 429
# Multipart framing around one file: boundaries and part headers, a few hundred bytes in practice.
FRAMING_BYTES = 64 * 1024
UPLOAD_BODY_BYTES = MAX_UPLOAD_BYTES + FRAMING_BYTES
SMALL_BODY_BYTES = 256 * 1024  # a queue join names its inputs (uploaded files by reference): small
OPEN_BODIES = 64  # bodies being read at once, all clients together
DRAIN_BYTES = 1024 * 1024  # a refused body up to this size is read and dropped, a larger one is cut off
CLOSED = re.compile(r"^(/gradio_api)?/(run|api|call)(/|$)")
# With --mcp (web.mcp): the streamable HTTP transport; a tool call carries one picture in base64.
MCP_ROUTE = "/gradio_api/mcp"
MCP_BODY_BYTES = MAX_ENCODED_CHARACTERS + FRAMING_BYTES
MCP_SSE = re.compile(r"^/gradio_api/mcp/(sse|messages)$")
MCP_AT_ONCE = 4
SPOOFABLE_HEADERS = {b"x-forwarded-host", b"forwarded", b"x-real-ip"}


class PublicGuard:
    def __init__(self, app, limits, api=None, functions=None, body_limits=BodyLimits()):
        self.app, self.limits, self.api = app, limits, api
        self.places = Places(limits.in_flight) if limits.enabled else None
        self.functions = None if functions is None else set(functions)  # the page's fn indices
        self.body_limits = body_limits
        self._open_bodies = 0
        self._mcp_open = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope["headers"] = [(name, value) for name, value in scope["headers"] if name.lower() not in SPOOFABLE_HEADERS]
        method, path = scope["method"], scope["path"].rstrip("/") or "/"
        api_route = self.api is not None and path.startswith(API_PREFIX)
        if not api_route and CLOSED.match(path):
            return await _refuse(scope, send, 404, "This route is closed. Use the page, gradio_client, "
                                            f"or POST {API_PREFIX}/classify (see {API_PREFIX}/docs).")
        if MCP_SSE.match(path):  # the older SSE transport holds a stream per client: streamable HTTP only
            return await _refuse(scope, send, 404, f"MCP is served over streamable HTTP at {MCP_ROUTE}/.")
        if method in ("GET", "HEAD", "OPTIONS"):
            if path.endswith("/queue/data") and self.places is not None:
                return await self._stream(scope, receive, send)
            return await (self.api if api_route else self.app)(scope, receive, send)
        app = self.api if api_route else self.app
        post = method == "POST"  # PUT, PATCH, DELETE: no route of ours takes more than a small body
        classify = post and api_route and path == f"{API_PREFIX}/classify"
        upload = post and not api_route and path.endswith("/upload")
        mcp = post and path in (MCP_ROUTE, MCP_ROUTE + "/http")
        # The one size check, on the length the request declares, before anything else is spent on it.
        limit = UPLOAD_BODY_BYTES if classify or upload else MCP_BODY_BYTES if mcp else SMALL_BODY_BYTES
        if refusal := _size_refusal(scope, limit):
            return await _refuse(scope, send, *refusal)
        # An MCP message larger than the small ones (initialize, list, a tool call on a small
        # picture) carries a picture: it is treated as an upload.
        picture_message = mcp and _length(scope) > SMALL_BODY_BYTES
        if classify or upload or picture_message:
            return await self._work(scope, receive, send, app, limit, one_file=upload, mcp=picture_message)
        if post and not api_route and path.endswith("/queue/join"):
            return await self._join(scope, receive, send)
        body = await self._read(scope, receive, send, SMALL_BODY_BYTES)
        if body is not None:
            await _pass_on(app, scope, body, receive, send)

    async def _work(self, scope, receive, send, app, limit, one_file=False, mcp=False):
        """An upload, a JSON API call or an MCP message with a picture: a place while it is read and
        answered, the per-minute count before its body, and (for Gradio's upload route) one named
        file. Gradio's MCP server holds a whole message in memory (JSON, base64), so at most
        MCP_AT_ONCE picture messages are handled at once, all clients together."""
        if mcp and self._mcp_open >= MCP_AT_ONCE:
            return await _refuse(scope, send, 503, "The server is busy with other MCP calls; try again in a minute.",
                                 retry_after=60)
        self._mcp_open += mcp
        try:
            return await self._work_on(scope, receive, send, app, limit, one_file)
        finally:
            self._mcp_open -= mcp

    async def _work_on(self, scope, receive, send, app, limit, one_file):
        client = _client(scope)
        key = await self._take_place(scope, client, send)
        if key is False:
            return
        try:
            if self.limits.enabled:
                try:
                    # With replicas the count is a database transaction: off the event loop.
                    await run_in_threadpool(self.limits.upload_request, client)
                except LimitExceeded as error:
                    return await _tarpit(scope, send, str(error))
            content_type = _header(scope, b"content-type")
            form = None
            if one_file or content_type.startswith("multipart/"):
                try:
                    form = OneFileForm(content_type)
                except BodyRefused as refused:
                    return await _refuse(scope, send, refused.status, refused.message)
            body = await self._read(scope, receive, send, limit, form)
            if body is not None:
                await _pass_on(app, scope, body, receive, send)
        finally:
            if key is not None:
                self.places.give_back(client, key)

    async def _join(self, scope, receive, send):
        """A join of Gradio's queue holds its client's place until the event ends."""
        client = _client(scope)
        key = await self._take_place(scope, client, send)
        if key is False:
            return
        event_id = session = None
        try:
            body = await self._read(scope, receive, send, SMALL_BODY_BYTES)
            if body is None:
                return
            try:
                request = json.loads(body.read())
            except ValueError:
                request = None
            session = request.get("session_hash") if isinstance(request, dict) else None
            fn_index = request.get("fn_index") if isinstance(request, dict) else None
            if not isinstance(session, str) or not session:
                body.close()
                return await _refuse(scope, send, 400, "A queue join must name its session (session_hash).")
            if self.functions is not None and (type(fn_index) is not int or fn_index not in self.functions):
                body.close()
                return await _refuse(scope, send, 400, "There is no such function on this page.")
            answer = {"status": None, "body": b""}

            async def watched(message):
                if message["type"] == "http.response.start":
                    answer["status"] = message["status"]
                elif message["type"] == "http.response.body" and len(answer["body"]) < SMALL_BODY_BYTES:
                    answer["body"] += message.get("body", b"")
                await send(message)

            await _pass_on(self.app, scope, body, receive, watched)
            event_id = _event_id(answer["body"]) if answer["status"] == 200 else None
        finally:
            if key is not None:
                if event_id is None:
                    self.places.give_back(client, key)
                else:
                    self.places.bind(client, key, event_id, session)

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
                        self.places.finished(event_id)
                pending = pending[-SMALL_BODY_BYTES:]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            self.places.session_ended(session)

    async def _take_place(self, scope, client, send):
        """A place key (None when limits are off), or False once the client was refused."""
        if self.places is None:
            return None
        key = self.places.take(client)
        if key is None:
            await _tarpit(scope, send, f"Too many requests at once: at most {self.places.cap} may wait or run. "
                                f"Wait for your answers, then {self.places.cooldown_s:.0f} s, and try again.")
            return False
        return key

    async def _read(self, scope, receive, send, limit, form=None):
        """The body (its declared length already checked against `limit` in __call__), read and
        checked; None when it was refused (answered here) or its client went away."""
        if self._open_bodies >= OPEN_BODIES:
            await _refuse(scope, send, 503, "The server is busy receiving other uploads; try again in a minute.",
                          retry_after=60)
            return None
        self._open_bodies += 1
        try:
            body = await read_body(receive, limit, self.body_limits, None if form is None else form.write)
            if form is not None:
                try:
                    form.finish()
                except BodyRefused:
                    body.close()
                    raise
            return body
        except BodyRefused as refused:
            if refused.status == 408:
                LOGGER.info("%s %s from %s: body too slow, stopped", scope["method"], scope["path"], _client(scope))
            await _refuse(scope, send, refused.status, refused.message)
        except ClientGone as gone:
            LOGGER.info("%s %s from %s: cut off by the client after %d bytes", scope["method"], scope["path"],
                        _client(scope), gone.size)
        finally:
            self._open_bodies -= 1
        return None


async def _pass_on(app, scope, body, receive, send):
    try:
        await app(scope, body.replay(receive), send)
    finally:
        body.close()


def _client(scope):
    return (scope.get("client") or ("unknown", 0))[0]


def _header(scope, name):
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


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


def _length(scope):
    length = _header(scope, b"content-length")
    return int(length) if length.isdigit() else 0


def _size_refusal(scope, limit):
    """(status, message) for a body without a length or larger than `limit`, else None."""
    length = _header(scope, b"content-length")
    if not length and not _header(scope, b"transfer-encoding"):
        return None  # no body at all (HTTP/1.1: neither a length nor a chunked encoding)
    if not length.isdigit():
        return 411, "A request with a body must say how large it is (Content-Length)."
    if int(length) > limit:
        if limit >= MAX_UPLOAD_BYTES:
            return 413, TOO_LARGE
        return 413, "The request is too large."
    return None


async def _tarpit(scope, send, message):
    # A client over its limit waits for its refusal. The wait costs the server no work (the event
    # loop serves others meanwhile), and a client that retries at once in a loop is slowed to a
    # request a second per connection instead of hundreds.
    await asyncio.sleep(REFUSAL_DELAY_S)
    await _refuse(scope, send, 429, message, retry_after=10)


async def _refuse(scope, send, status, message, retry_after=None):
    payload = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    length = _header(scope, b"content-length")
    if not length.isdigit() or int(length) > DRAIN_BYTES:
        # Close rather than read (and throw away) the rest of a large body we refused: uvicorn
        # would drain it through its parser to keep the connection alive, 0.6 of a core under a
        # 16-thread flood of 25 MB uploads (bench.public_link). A client that reads its answer
        # while still sending (curl, browsers) gets the sentence; one that sends everything first
        # sees the connection closed. A small body is drained, and its sender reads the sentence.
        headers.append((b"connection", b"close"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
