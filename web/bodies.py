"""Request bodies at the front door: read within a size and time limit, into a spool, and checked
before the app behind the door sees a byte of them.

    upload = OneFileForm(content_type)            # BodyRefused unless multipart/form-data
    body = await read_body(receive, limit, BodyLimits(), check=upload.write)
    upload.finish()                               # BodyRefused unless exactly one named file
    await app(scope, body.replay(receive), send)  # the app reads it as if from the client

Why spooled and read first: a body is refused on what it says (its length, its parts), and an
upload that stalls or is cut off never reaches Gradio or the JSON API, so neither writes a
traceback for it, and each costs at most `spool_bytes` of memory while it arrives (the rest
waits on disk, at most the route's limit). Multipart is parsed by python-multipart, the parser
Starlette and Gradio use themselves, so the door and the app read the same parts whatever the
quoting: the door counts file parts as the app will.
"""

import asyncio
import tempfile
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

REPLAY_CHUNK_BYTES = 64 * 1024


class BodyRefused(Exception):
    """A body the door will not pass on: (HTTP status, a sentence for the sender)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


class ClientGone(Exception):
    """The client went away before its body was complete; `size` bytes had come."""

    def __init__(self, size):
        super().__init__(f"{size} bytes received")
        self.size = size


@dataclass(frozen=True)
class BodyLimits:
    # The longest silence within a body, and the longest whole body: a 25 MB upload within
    # 120 s needs about 210 kB/s. A slow-loris client holds its place only that long.
    chunk_timeout_s: float = 15.0
    total_timeout_s: float = 120.0
    spool_bytes: int = 1024 * 1024  # kept in memory per body; the rest goes to a temporary file


class Body:
    def __init__(self, spool, size):
        self.spool, self.size = spool, size

    def replay(self, receive):
        """A receive() that hands the app the spooled body in chunks, then the client's own
        messages (its disconnect, when it comes)."""
        done = False

        async def replayed():
            nonlocal done
            if done:
                return await receive()
            chunk = self.spool.read(REPLAY_CHUNK_BYTES)
            more = self.spool.tell() < self.size
            if not more:
                done = True
            return {"type": "http.request", "body": chunk, "more_body": more}

        return replayed

    def read(self):
        """The whole body as bytes (for the small ones the door reads itself)."""
        self.spool.seek(0)
        data = self.spool.read()
        self.spool.seek(0)
        return data

    def close(self):
        self.spool.close()


async def read_body(receive, limit, limits=BodyLimits(), check=None):
    """The request's body, at most `limit` bytes, within the time limits; `check(chunk)` sees each
    chunk as it comes and may raise BodyRefused. Raises BodyRefused or ClientGone."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.total_timeout_s
    spool = tempfile.SpooledTemporaryFile(max_size=limits.spool_bytes)
    size = 0
    try:
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), min(limits.chunk_timeout_s, remaining))
            except (TimeoutError, asyncio.TimeoutError):  # one class from Python 3.11 on
                raise BodyRefused(408, "The upload was too slow and was stopped; try again.") from None
            if message["type"] == "http.disconnect":
                raise ClientGone(size)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyRefused(413, "The request is larger than it said, or too large.")
            spool.write(chunk)
            if check is not None:
                check(chunk)
            if not message.get("more_body", False):
                break
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return Body(spool, size)


class OneFileForm:
    """Checks, as its chunks arrive, that a multipart/form-data body holds exactly one file part
    with a plain, non-empty name, and nothing else. Refuses at the first part too many."""

    def __init__(self, content_type):
        kind, options = parse_options_header(content_type or "")
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise BodyRefused(400, "Send the picture as a multipart/form-data upload.")
        self.files = 0
        self._header_name, self._header_value, self._disposition = b"", b"", None
        self._problem = None
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begins, "on_header_field": self._header_field,
            "on_header_value": self._header_value_part, "on_header_end": self._header_ends,
            "on_headers_finished": self._headers_finished,
        })

    def write(self, chunk):
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            raise BodyRefused(400, "The upload is not a well-formed multipart form.") from None
        if self._problem is not None:
            raise BodyRefused(400, self._problem)

    def finish(self):
        try:
            self._parser.finalize()
        except MultipartParseError:
            raise BodyRefused(400, "The upload is not a well-formed multipart form.") from None
        if self._problem is None and self.files != 1:
            self._problem = "The upload holds no file; choose a picture to upload."
        if self._problem is not None:
            raise BodyRefused(400, self._problem)

    def _part_begins(self):
        self._disposition = None

    def _header_field(self, data, start, end):
        self._header_name += data[start:end]

    def _header_value_part(self, data, start, end):
        self._header_value += data[start:end]

    def _header_ends(self):
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self):
        if self._problem is not None:
            return
        disposition = self._disposition or b""
        _, options = parse_options_header(disposition)
        if b"filename*" in disposition.lower():
            self._problem = "Name the file plainly (filename=\"photo.jpg\"); encoded names (filename*=) are not accepted."
        elif b"filename" not in options or b"name" not in options:
            self._problem = "Every part of an upload must be a named picture file."
        elif not options[b"filename"].strip():
            self._problem = "The file has no name; choose a picture file to upload."
        else:
            self.files += 1
            if self.files > 1:
                self._problem = "Send one picture at a time."
