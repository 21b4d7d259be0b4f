"""The public link, attacked as the security issue did: each finding on a real server process.

Visitors are real gradio_client sessions; the address each comes from reaches the app as
X-Forwarded-For, which the app believes only from loopback (as the --share tunnel connects).
The figures (memory growth, corrections lost, latency under a flood) are bench.public_link's.
"""

import io
import json
import sqlite3
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image

from bench.app_server import running_app
from bench.public_link import memory_every_route, memory_growth, pseudonyms_of, rss_mb, store_check
from bench.visitors import SAVED, Flooder, big_png, classify, correction_burst, login_tries, visitor
from tests.app.conftest import ASSETS


@pytest.fixture(scope="module")
def photos(example_photos):
    return list(example_photos.values())


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    """An app with the per-client limits a public link runs with (a low upload limit, to reach it)."""
    state = tmp_path_factory.mktemp("limited")
    with running_app(ASSETS, state, extra_args=("--rate-limit", "6")) as (url, _):
        yield url, state


def test_sessions_do_not_keep_big_uploads_in_memory(tmp_path, photos):
    picture = big_png(tmp_path / "big.png", megapixels=49)
    assert picture.stat().st_size < 2_000_000  # small on the wire, 196 MB once decoded as RGBA
    with running_app(ASSETS, tmp_path / "state", extra_args=("--rate-limit", "0")) as (url, _):
        pid = int((tmp_path / "state" / "server.pid").read_text())
        classify(visitor(url, "203.0.113.250"), photos[0])  # models loaded and warm before measuring
        before, after, _ = memory_growth(url, pid, picture, sessions=4)
    # Four decoded copies would be 784 MB; a session keeps a token and the server a 512-pixel PNG.
    assert after - before < 250, (before, after)


def test_every_route_decodes_within_one_budget(tmp_path, photos):
    picture = big_png(tmp_path / "big.png", megapixels=49)
    with running_app(ASSETS, tmp_path / "state") as (url, _):
        pid = int((tmp_path / "state" / "server.pid").read_text())
        classify(visitor(url, "203.0.113.251"), photos[0])  # models loaded and warm before measuring
        rest = rss_mb(pid)
        figures = memory_every_route(url, pid, picture, addresses=4)
    for route, peak, after, outcomes, sentences in figures:
        # Four 49-megapixel RGBA decodes at once would hold 0.8 GB of pixels alone (1.8 GB measured
        # before the budget); one decode at a time, reduced as it loads, holds about 0.2 GB.
        assert peak - rest < 600 and after - rest < 150, (route, rest, peak, after)
        assert outcomes.get("error", 0) == 0, (route, outcomes, sentences)
        if route in ("run", "call"):
            assert outcomes == {"refused": 4} and "closed" in sentences[0], (route, sentences)
        elif route in ("page", "api"):
            assert outcomes.get("answered", 0) >= 3, (route, outcomes, sentences)


def test_the_public_page_shows_nothing_of_other_visitors(server, photos):
    url, _ = server
    first = visitor(url, "203.0.113.1")
    classify(first, photos[1])
    second = visitor(url, "203.0.113.2")
    endpoints = second.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/classify", "/relabel", "/relabel_by_name"}, endpoints
    # The private gallery-click listener cannot be called by name either.
    with pytest.raises(Exception):
        second.predict(0, api_name="/on_gallery_click")
    # A new session has no upload of its own, and cannot use anyone else's.
    assert "Classify a picture first" in second.predict(0, api_name="/relabel")


def test_the_admin_area_is_off_without_a_password(server):
    url, state = server
    admin_port = int((state / "admin.port").read_text())
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/", timeout=5)
    assert "Admin area off: set HONEST_ADMIN_PASSWORD" in (state / "server.log").read_text()


def test_the_admin_area_needs_the_password(tmp_path, monkeypatch, photos):
    from gradio_client import Client

    monkeypatch.setenv("HONEST_ADMIN_PASSWORD", "correct horse battery staple")
    with running_app(ASSETS, tmp_path, extra_args=("--rate-limit", "0")) as (url, _):
        classify(visitor(url, "203.0.113.3"), photos[2])
        admin = f"http://127.0.0.1:{int((tmp_path / 'admin.port').read_text())}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(admin + "config", timeout=10)
        assert refused.value.code == 401
        with pytest.raises(Exception):
            Client(admin, verbose=False, auth=("admin", "wrong"))
        dashboard = Client(admin, verbose=False, auth=("admin", "correct horse battery staple"))
        drift = dashboard.predict(api_name="/monitor")[0]
        assert "1 upload" in drift, drift  # the one upload made above, and only it


def test_wrong_admin_passwords_are_throttled(tmp_path, monkeypatch):
    monkeypatch.setenv("HONEST_ADMIN_PASSWORD", "correct horse battery staple")
    with running_app(ASSETS, tmp_path, extra_args=("--rate-limit", "0")) as (url, _):
        admin = f"http://127.0.0.1:{int((tmp_path / 'admin.port').read_text())}/"
        tries = login_tries(admin, tries=12)
    assert [status for status, _ in tries[:10]] == [400] * 10, tries  # Gradio's "Incorrect credentials"
    assert [status for status, _ in tries[10:]] == [429, 429] and all(seconds >= 1.0 for _, seconds in tries[10:]), tries


def test_state_files_are_the_owners_alone(server, photos):
    import stat

    url, state = server
    client = visitor(url, "203.0.113.30")
    classify(client, photos[0])
    assert SAVED in client.predict(0, api_name="/relabel")
    files = [path for path in state.iterdir() if path.suffix in (".sqlite", ".sqlite-wal", ".sqlite-shm") or path.name == "visitor_salt"]
    assert {path.name for path in files} >= {"corrections.sqlite", "monitoring.sqlite", "visitor_salt"}
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files), {p.name: oct(p.stat().st_mode) for p in files}


def test_votes_on_one_picture_stay_side_by_side(server, photos):
    url, state = server
    first, second = visitor(url, "203.0.113.21"), visitor(url, "203.0.113.22")
    captions = [item["caption"] for item in classify(first, photos[3])[2]]
    classify(second, photos[3])
    assert SAVED in first.predict(0, api_name="/relabel")
    assert SAVED in second.predict(1, api_name="/relabel")
    # The same visitor cannot vote again on that picture, by click or by name.
    assert "already sent a correction" in first.predict(2, api_name="/relabel")
    assert "already sent a correction" in first.predict(captions[3], api_name="/relabel_by_name")
    voter = pseudonyms_of(state)
    with sqlite3.connect(state / "corrections.sqlite") as database:
        rows = database.execute("SELECT voter, label, status FROM votes WHERE voter IN (?, ?) ORDER BY id",
                                (voter("203.0.113.21"), voter("203.0.113.22"))).fetchall()
    assert [(label, status) for _, label, status in rows] == [
        (captions[0].replace(" ", "_"), "pending"), (captions[1].replace(" ", "_"), "pending")]
    # No address is stored: voters are salted hashes.
    assert all("203.0.113" not in voter_ for voter_, _, _ in rows)


def test_corrections_are_rate_limited_per_visitor(limited_server, photos):
    url, _ = limited_server
    client = visitor(url, "203.0.113.40")
    notes = []
    for photo in photos[:6]:  # the limit: 6 uploads, 2 corrections a minute
        classify(client, photo)
        notes.append(client.predict(0, api_name="/relabel"))
    assert sum(SAVED in note for note in notes) == 2, notes
    assert all("Too many corrections" in note for note in notes[2:]), notes
    # Another visitor is not affected.
    other = visitor(url, "203.0.113.41")
    classify(other, photos[0])
    assert SAVED in other.predict(0, api_name="/relabel")


def test_a_kill_9_loses_no_acknowledged_correction(tmp_path, photos):
    state = tmp_path / "state"
    with running_app(ASSETS, state, extra_args=("--rate-limit", "0")) as (url, _):
        pid = int((state / "server.pid").read_text())
        acknowledged = correction_burst(url, photos, corrections=40, kill_after=20, pid=pid)
    assert len(acknowledged) >= 20
    with running_app(ASSETS, state, extra_args=("--rate-limit", "0")) as (url, _):
        lost, orphan_votes, orphan_pictures = store_check(state, acknowledged, pseudonyms_of(state))
        # The restarted server takes corrections on the same store.
        client = visitor(url, "203.0.113.77")
        classify(client, photos[0])
        assert SAVED in client.predict(0, api_name="/relabel")
    assert (lost, orphan_votes, orphan_pictures) == (0, 0, 0)


def test_one_visitor_cannot_take_the_queue(limited_server, photos):
    url, _ = limited_server
    with Flooder(url, "203.0.113.66", photos[0], workers=12) as flooder:
        time.sleep(3.0)
        normal = visitor(url, "203.0.113.67")
        verdicts = [classify(normal, photo)[0] for photo in photos[:5]]
    seen = flooder.seen
    assert all("⚠️" not in verdict for verdict in verdicts), verdicts
    # The flooder was told plainly, not dropped by a full queue (before the limits, 31 of 100
    # such calls got HTTP 503). A rare transport error of the flooder's own twelve connections on
    # a loaded 2-core machine is no refusal of service; the messages say what it was.
    sent = seen["answered"] + seen["limited"] + seen["errors"]
    assert seen["limited"] > 0 and seen["errors"] <= max(1, sent // 100), seen


def _join(url, session, address):
    """Join Gradio's queue for /classify as the page does (with no picture: a plain refusal
    comes back once the event runs); returns (status, answer)."""
    with urllib.request.urlopen(url + "config", timeout=30) as response:
        config = json.loads(response.read())
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "classify")
    body = json.dumps({"data": [None], "fn_index": fn_index, "session_hash": session, "event_data": None}).encode()
    request = urllib.request.Request(url + "gradio_api/queue/join", data=body, method="POST", headers={
        "Content-Type": "application/json", "X-Forwarded-For": address})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _stream(url, session):
    """A session's whole event stream, read until the server closes it."""
    with urllib.request.urlopen(url + f"gradio_api/queue/data?session_hash={session}", timeout=60) as response:
        return response.read().decode()


def test_a_visitor_holds_at_most_its_in_flight_places_in_the_queue(limited_server):
    url, _ = limited_server
    flooder, neighbour = "203.0.113.70", "203.0.113.71"
    assert _join(url, "turns-a", flooder)[0] == 200
    assert _join(url, "turns-b", flooder)[0] == 200
    status, answer = _join(url, "turns-c", flooder)
    assert status == 429 and "Too many requests at once" in answer["error"], answer
    assert _join(url, "turns-d", neighbour)[0] == 200
    # Once the flooder's events have run, their ends gone out on its streams, and its cool-down
    # (web.places, 10 s from its last refusal) is over, it may join again.
    assert "process_completed" in _stream(url, "turns-a") and "process_completed" in _stream(url, "turns-b")
    time.sleep(10.5)
    assert _join(url, "turns-e", flooder)[0] == 200


def _post_upload(url, parts, address="203.0.113.90", length=None):
    """POST multipart files to Gradio's upload endpoint; returns (status, body)."""
    boundary = "----honestboundary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in parts
    ) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "gradio_api/upload", data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "X-Forwarded-For": address,
        **({"Content-Length": str(length)} if length else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _png():
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_upload_endpoint_takes_one_named_file_at_a_time(limited_server):
    url, _ = limited_server
    status, body = _post_upload(url, [("a.png", _png())], address="203.0.113.91")
    assert status == 200, body
    status, body = _post_upload(url, [("a.png", _png()), ("b.png", _png())], address="203.0.113.91")
    assert status == 400 and "one picture at a time" in json.loads(body)["error"]
    status, body = _post_upload(url, [("", _png())], address="203.0.113.91")
    assert status == 400 and "no name" in json.loads(body)["error"]
    status, body = _post_upload(url, [("huge.png", b"\0" * 1024)], address="203.0.113.91", length=200 * 1024 * 1024)
    assert status == 413


def test_upload_only_traffic_is_limited_per_visitor(limited_server):
    url, _ = limited_server
    statuses = [_post_upload(url, [("a.png", _png())], address="203.0.113.92")[0] for _ in range(14)]
    assert statuses[:12] == [200] * 12 and statuses[12:] == [429, 429], statuses  # twice the upload limit
    assert _post_upload(url, [("a.png", _png())], address="203.0.113.93")[0] == 200


def test_an_eps_upload_is_never_decoded(server, tmp_path):
    url, _ = server
    path = tmp_path / "picture.eps"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n")
    verdict = classify(visitor(url, "203.0.113.95"), path)[0]
    assert verdict.startswith("### ⚠️") and "not an image we can read" in verdict, verdict
