"""The front door (web.guard) on the real server: every route, limits before bodies, and who a
visitor is. Visitors are told apart by X-Forwarded-For, believed because the app runs with
--behind-proxy (as behind the --share tunnel) and the tests connect from loopback."""

import json
import socket
import time

import pytest

from bench.app_server import running_app
from bench.visitors import Flooder, classify, http_request, multipart_body, upload_bodies, visitor
from tests.app.conftest import ASSETS

CLOSED = "This route is closed"


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    """The app with a public link's limits, low enough to reach: 6 uploads a minute (12 upload requests)."""
    state = tmp_path_factory.mktemp("door")
    with running_app(ASSETS, state, extra_args=("--rate-limit", "6")) as (url, _):
        yield url, state


def upload(url, address, data=b"\x89PNG-ish", parameters='name="files"; filename="a.png"'):
    body, kind = multipart_body([(parameters, data)])
    return http_request(url, "POST", "/gradio_api/upload", body, {"X-Forwarded-For": address, "Content-Type": kind})


def headers_only(url, path, address, length, content_type="image/jpeg"):
    """A socket that sent a request's headers, announcing `length` bytes, and none of its body."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    connection = socket.create_connection(("127.0.0.1", port))
    connection.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: {address}\r\n"
                       f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n".encode())
    connection.settimeout(60)
    return connection


def status_of(connection):
    """(status, the whole answer) of a request sent on `connection`, read until the server closes it
    or the answer's announced length has come."""
    answer = b""
    while True:
        chunk = connection.recv(65536)
        answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
        if not chunk or (length and len(body) >= length[0]):
            break
    connection.close()
    text = answer.decode("latin-1")
    return int(text.split()[1]), text


@pytest.mark.parametrize("path", ["/gradio_api/run/classify", "/gradio_api/api/classify", "/gradio_api/call/classify",
                                  "/gradio_api/call/v2/classify", "/run/predict", "/call/classify"])
def test_gradios_direct_routes_are_closed(door, path):
    url, _ = door
    status, body = http_request(url, "POST", path, json.dumps({"data": [None]}).encode(),
                                {"Content-Type": "application/json", "X-Forwarded-For": "198.51.100.1"})
    assert status == 404 and CLOSED in json.loads(body)["error"]


def test_hostile_upload_bodies_are_refused_or_store_one_file(door):
    url, _ = door
    results = upload_bodies(url, "198.51.100.1")
    assert all(status == 400 and stored == 0 for case, (status, stored, _) in results.items()
               if case != "one unquoted filename"), results
    assert results["one unquoted filename"][:2] == (200, 1)


def test_a_join_naming_no_session_or_an_unknown_function_gets_a_plain_400(door):
    url, _ = door
    for body, message in ((b"not json", "session"), (json.dumps({"data": [], "fn_index": 999, "session_hash": "x"}).encode(), "no such function"),
                          (json.dumps({"data": [], "fn_index": "0", "session_hash": "x"}).encode(), "no such function")):
        status, answer = http_request(url, "POST", "/gradio_api/queue/join", body,
                                      {"Content-Type": "application/json", "X-Forwarded-For": "198.51.100.2"})
        assert status == 400 and message in json.loads(answer)["error"], answer


def test_a_request_with_a_body_must_say_its_length(door):
    url, _ = door
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        assert b" 411 " in connection.recv(4096)
    status, _ = http_request(url, "POST", "/gradio_api/cancel", b"x" * 300_000, {"Content-Type": "application/json"})
    assert status == 413  # a small route takes a small body


def test_a_client_over_its_limit_is_refused_before_its_body_is_read(door):
    url, _ = door
    address = "198.51.100.3"
    statuses = [upload(url, address)[0] for _ in range(12)]  # twice the upload limit
    assert statuses == [200] * 12, statuses
    for path in ("/gradio_api/upload", "/api/v1/classify"):
        started = time.perf_counter()
        # Twenty megabytes announced, none sent: the refusal comes without waiting for them.
        status, answer = status_of(headers_only(url, path, address, 20_000_000, "multipart/form-data; boundary=b"))
        assert status == 429 and "Too many" in answer, answer
        assert time.perf_counter() - started < 5  # the tarpit's second, not a body's read
    assert upload(url, "198.51.100.4")[0] == 200  # another visitor is not affected


def test_stalled_uploads_hold_their_own_clients_places_and_are_stopped(door):
    url, state = door
    address = "198.51.100.5"
    stalled = [headers_only(url, "/gradio_api/upload", address, 1_000_000, "multipart/form-data; boundary=b") for _ in range(2)]
    time.sleep(0.5)
    status, answer = upload(url, address)
    assert status == 429 and "at most 2" in json.loads(answer)["error"]
    assert upload(url, "198.51.100.6")[0] == 200
    started = time.perf_counter()
    assert [status_of(connection)[0] for connection in stalled] == [408, 408]
    assert time.perf_counter() - started < 20  # the door stops a silent body after 15 s
    assert "body too slow, stopped" in (state / "server.log").read_text()


def test_an_aborted_upload_costs_one_log_line_and_no_traceback(door):
    url, state = door
    for index in range(20):
        connection = headers_only(url, "/api/v1/classify", f"198.51.101.{index}", 1_000_000)
        connection.sendall(b"x" * 10_000)
        connection.close()
    time.sleep(1.0)
    log = (state / "server.log").read_text()
    assert log.count("cut off by the client") >= 20 and "Traceback" not in log


def test_the_json_api_flood_of_one_visitor_leaves_others_answered(door, example_photos):
    url, _ = door
    photos = list(example_photos.values())
    with Flooder(url, "198.51.100.66", photos[0], workers=12, route="api") as flooder:
        time.sleep(3.0)
        normal = visitor(url, "198.51.100.67")
        verdicts = [classify(normal, photo)[0] for photo in photos[:4]]
    assert all("⚠️" not in verdict for verdict in verdicts), verdicts
    seen = flooder.seen
    assert seen["limited"] > 0 and seen["errors"] == 0, seen


def test_a_forwarded_address_is_believed_only_behind_a_proxy(tmp_path, door):
    # Without --behind-proxy, any local process could make up visitors: every loopback request is one client.
    with running_app(ASSETS, tmp_path, extra_args=("--rate-limit", "3"), behind_proxy=False) as (url, _):
        statuses = [upload(url, f"203.0.113.{index}")[0] for index in range(8)]
    assert statuses[:6] == [200] * 6 and 429 in statuses[6:], statuses
    # Behind a proxy, the rightmost entry is the one the proxy appended: a visitor's own entries
    # to its left change nothing.
    url, _ = door
    statuses = [upload(url, f"203.0.113.{index}, 198.51.100.9")[0] for index in range(14)]
    assert statuses[:12] == [200] * 12 and statuses[12:] == [429, 429], statuses
