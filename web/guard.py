"""The public server's front door: an ASGI middleware in front of Gradio (and the JSON API).

    demo.launch(app_kwargs={"middleware": [Middleware(PublicGuard, limits=limits)]})

The JSON API (web.api) is served from here, beside the page: requests under /api/v1 go to it,
after the same size check as an upload. What it stops before Gradio sees it:
- an upload request larger than one file of the largest size we accept, or without a length;
- more than MAX_FILES_PER_REQUEST files in one upload request, or a file without a name;
- more upload requests per client per minute than the upload limit allows (upload-only traffic
  that never classifies still costs disk until the cache is cleaned);
- every plain-message refusal is JSON {"error": ...} with a 4xx status.
"""

import asyncio
import json
import re

from classifier.images import MAX_UPLOAD_BYTES
from service.limits import LimitExceeded
from service.visitors import client_of
from web.api import PREFIX as API_PREFIX

MAX_FILES_PER_REQUEST = 1
REFUSAL_DELAY_S = 1.0  # how long a client over its upload limit waits for its 429
# Multipart framing around one file: boundaries and part headers, a few hundred bytes in practice.
FRAMING_BYTES = 64 * 1024
FILE_PART = re.compile(rb'content-disposition:[^\r\n]*filename="([^"]*)"', re.IGNORECASE)


class PublicGuard:
    def __init__(self, app, limits, api=None):
        self.app, self.limits, self.api = app, limits, api

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.api is not None and scope["path"].startswith(API_PREFIX):
            if scope["method"] == "POST" and (refusal := _size_refusal(scope)):
                return await _refuse(send, *refusal)
            return await self.api(scope, receive, send)
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/upload"):
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        peer = scope.get("client") or ("unknown", 0)
        client = client_of(peer[0], headers.get("x-forwarded-for"))
        length = headers.get("content-length")
        if refusal := _size_refusal(scope):
            return await _refuse(send, *refusal)
        try:
            self.limits.upload_request(client)
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
