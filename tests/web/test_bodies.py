"""web.bodies: request bodies read within limits, and uploads read by python-multipart."""

import asyncio

import pytest

from bench.visitors import multipart_body
from web.bodies import BodyLimits, BodyRefused, ClientGone, OneFileForm, read_body


def check(parts, chunk=7):
    body, kind = multipart_body(parts)
    form = OneFileForm(kind)
    for start in range(0, len(body), chunk):  # the parts arrive in pieces, as over a network
        form.write(body[start:start + chunk])
    form.finish()
    return form.files


@pytest.mark.parametrize("parameters", ['name="files"; filename="a.png"', "name=files; filename=a.png"])
def test_one_named_file_passes_however_it_is_quoted(parameters):
    assert check([(parameters, b"\x89PNG...")]) == 1


@pytest.mark.parametrize("parts, message", [
    ([(f"name=files; filename=f{i}.png", b"x") for i in range(1000)], "one picture at a time"),
    ([('name="files"; filename="a.png"', b"x"), ("name=files; filename=b.png", b"y")], "one picture at a time"),
    ([("name=\"files\"; filename*=UTF-8''a.png", b"x")], "plainly"),
    ([('name="files"', b"x")], "named picture file"),
    ([('filename="a.png"', b"x")], "named picture file"),
    ([('name="files"; filename=""', b"x")], "no name"),
    ([], "no file"),
])
def test_anything_but_one_named_file_is_refused(parts, message):
    with pytest.raises(BodyRefused, match=message) as refused:
        check(parts)
    assert refused.value.status == 400


def test_a_body_that_is_not_a_form_is_refused():
    with pytest.raises(BodyRefused, match="multipart/form-data"):
        OneFileForm("application/json")
    form = OneFileForm("multipart/form-data; boundary=b")
    with pytest.raises(BodyRefused, match="well-formed"):
        form.write(b"this is no multipart body at all\r\n" * 10)
        form.finish()


def messages(*chunks, pause_s=0.0):
    """A client's receive(): the chunks, `pause_s` apart, then nothing more for a long time."""
    queue = list(chunks)

    async def receive():
        if not queue:
            await asyncio.sleep(3600)
        await asyncio.sleep(pause_s)
        chunk = queue.pop(0)
        return chunk if isinstance(chunk, dict) else {"type": "http.request", "body": chunk, "more_body": bool(queue)}

    return receive


def test_a_body_is_spooled_and_replayed_whole():
    async def run():
        body = await read_body(messages(b"a" * 100_000, b"b" * 100_000), 300_000, BodyLimits(spool_bytes=1024))
        replay = body.replay(messages({"type": "http.disconnect"}))
        data = b""
        while True:
            message = await replay()
            data += message["body"]
            if not message["more_body"]:
                break
        return data, await replay()

    data, after = asyncio.run(run())
    assert data == b"a" * 100_000 + b"b" * 100_000 and after["type"] == "http.disconnect"


@pytest.mark.parametrize("receive, limits, status", [
    (messages(b"x" * 10, b"y" * 10), BodyLimits(), 413),  # longer than it said
    (messages(b"x" * 5, {"type": "http.request", "body": b"x", "more_body": True}), BodyLimits(chunk_timeout_s=0.2), 408),
    (messages(*[{"type": "http.request", "body": b"x", "more_body": True}] * 50, pause_s=0.05),
     BodyLimits(chunk_timeout_s=1, total_timeout_s=0.5), 408),  # a trickle: each chunk in time, the whole too slow
])
def test_too_long_stalled_or_trickling_bodies_are_refused(receive, limits, status):
    with pytest.raises(BodyRefused) as refused:
        asyncio.run(read_body(receive, 15, limits))
    assert refused.value.status == status


def test_a_client_that_goes_away_is_noticed():
    with pytest.raises(ClientGone):
        asyncio.run(read_body(messages({"type": "http.request", "body": b"x", "more_body": True},
                                       {"type": "http.disconnect"}), 100))
