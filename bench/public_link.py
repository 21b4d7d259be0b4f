"""The public link under attack: the figures of the security issues, measured on a real server.

    python -m bench.public_link [--assets assets] [--addresses 16] [--megapixels 49] [--corrections 100]

1. Memory, every route: `addresses` visitors at once, each sending a PNG declaring `megapixels`,
   through each way in (the page's queue, the JSON API, Gradio's direct /run/ and /call/), one
   route after another and then all four together: the server's peak resident memory (goal
   <= 1.5 GB) and at rest after (goal <= 1.2 GB); every request answered or plainly refused.
2. Crash: `corrections` corrections sent by many visitors at once; the server is killed with
   SIGKILL half-way, restarted on the same state folder, and every correction a visitor was told
   was saved is looked up (goal: 0 lost, 0 votes without their picture, 0 pictures without a vote).
3. Fairness: a normal visitor's latency on the page alone, then while another visitor floods the
   server from 16 threads with a large JPEG, through the page and then through the JSON API
   (goal: its p95 under twice its quiet p95 on each).
4. Upload bodies: unquoted, mixed and many-part multipart bodies at Gradio's upload route
   (goal: refused, or one file stored).
5. Admin login: twelve wrong passwords in a row (goal: the 11th waits or is refused).

The tests (tests/app/test_security.py) run the same functions on smaller numbers.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import sqlite3
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from bench.app_server import REPO, running_app

SAVED = "Based on the image you selected"


def rss_mb(pid):
    """Resident memory of a process, in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def big_png(path, megapixels=49):
    """A small file declaring a huge picture: a square RGBA PNG of `megapixels`, mostly flat."""
    from PIL import Image, ImageDraw

    side = int((megapixels * 1e6) ** 0.5)
    image = Image.new("RGBA", (side, side), (90, 140, 200, 255))
    draw = ImageDraw.Draw(image)
    for step in range(0, side, side // 16):
        draw.ellipse((step // 2, step // 3, side - step // 2, side - step // 4), outline=(250, 200, 40, 255), width=9)
    image.save(path, optimize=False, compress_level=9)
    return Path(path)


def visitor(url, address):
    """A gradio_client session for one visitor; the address reaches the app as X-Forwarded-For
    (believed only because the test client connects from loopback, as the --share tunnel does)."""
    from gradio_client import Client

    return Client(url, verbose=False, headers={"X-Forwarded-For": address})


def classify(client, path):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/classify")


def memory_growth(url, pid, picture, sessions):
    """(MB before, MB after, MB peak seen) while `sessions` visitors each classify `picture`."""
    before = rss_mb(pid)
    peak = before
    for index in range(sessions):
        classify(visitor(url, f"203.0.113.{index + 1}"), picture)
        peak = max(peak, rss_mb(pid))
    time.sleep(1.0)
    return before, rss_mb(pid), peak


def correction_burst(url, photos, corrections, kill_after=None, pid=None, workers=8):
    """Send `corrections` gallery-click corrections from many visitors at once; with `kill_after`,
    SIGKILL the server once that many were acknowledged. Returns [(address, label)] acknowledged."""
    acknowledged, lock = [], threading.Lock()
    killed = threading.Event()

    def one(index):
        if killed.is_set():
            return
        address = f"198.18.{index // 250}.{index % 250 + 1}"
        try:
            client = visitor(url, address)
            captions = [item["caption"] for item in classify(client, photos[index % len(photos)])[2]]
            position = index % len(captions)
            note = client.predict(position, api_name="/relabel")
        except Exception:
            return  # the server died under us: nothing was acknowledged
        if SAVED in note:
            with lock:
                acknowledged.append((address, captions[position].replace(" ", "_")))
                if kill_after is not None and len(acknowledged) >= kill_after and not killed.is_set():
                    killed.set()
                    os.kill(pid, signal.SIGKILL)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(corrections)))
    return acknowledged


def store_check(state_dir, acknowledged, salt_pseudonym):
    """(lost, votes without picture, pictures without vote) in a corrections store."""
    with sqlite3.connect(Path(state_dir) / "corrections.sqlite") as database:
        votes = set(database.execute("SELECT voter, label FROM votes").fetchall())
        orphan_votes = database.execute(
            "SELECT count(*) FROM votes WHERE picture NOT IN (SELECT hash FROM pictures)").fetchone()[0]
        orphan_pictures = database.execute(
            "SELECT count(*) FROM pictures WHERE hash NOT IN (SELECT picture FROM votes)").fetchone()[0]
    lost = [item for item in acknowledged if (salt_pseudonym(item[0]), item[1]) not in votes]
    return len(lost), orphan_votes, orphan_pictures


def pseudonyms_of(state_dir):
    from service.visitors import Pseudonyms

    return Pseudonyms(state_dir).voter


def latencies(url, address, photos, count):
    client = visitor(url, address)
    times = []
    for index in range(count):
        started = time.perf_counter()
        classify(client, photos[index % len(photos)])
        times.append(time.perf_counter() - started)
    return times


def http_request(url, method, path, body=b"", headers=None, timeout=120):
    """(status, body) of one request on a connection of its own, headers exactly as given."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def multipart_body(parts, boundary="honest-bench-boundary"):
    """A multipart/form-data body from [(Content-Disposition parameters, data)], parameters
    written as given (quoted or not); returns (body, content type)."""
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; {parameters}\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for parameters, data in parts)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def outcome(status, body):
    """('answered' | 'refused' | 'error', detail) of an HTTP answer: a refusal is a 4xx or 5xx
    with our JSON sentence; anything else that is not a 200 is an error."""
    if status == 200:
        return "answered", ""
    try:
        return "refused", f"{status} {json.loads(body)['error']}"
    except (ValueError, KeyError, TypeError):
        return "error", f"{status} {body[:120]!r}"


ROUTES = ("page", "api", "run", "call")


def classify_by_route(url, route, picture, address):
    """One classification of `picture` by one way in: the page's queue (gradio_client), the JSON
    API, or Gradio's direct /run/ or /call/ route after an upload; returns outcome()."""
    headers = {"X-Forwarded-For": address}
    try:
        if route == "page":
            verdict = classify(visitor(url, address), picture)[0]
            return ("refused", verdict) if "⚠️" in verdict else ("answered", "")
        data = Path(picture).read_bytes()
        field = "file" if route == "api" else "files"
        body, kind = multipart_body([(f'name="{field}"; filename="{Path(picture).name}"', data)])
        path = "/api/v1/classify" if route == "api" else "/gradio_api/upload"
        status, answer = http_request(url, "POST", path, body, {**headers, "Content-Type": kind})
        if route != "api" and status == 200:
            file_data = {"path": json.loads(answer)[0], "meta": {"_type": "gradio.FileData"}}
            status, answer = http_request(url, "POST", f"/gradio_api/{route}/classify", json.dumps({"data": [file_data]}).encode(),
                                          {**headers, "Content-Type": "application/json"})
        return outcome(status, answer)
    except Exception as error:
        text = f"{type(error).__name__}: {error}"[:200]
        # gradio_client raises our front door's plain refusals as exceptions carrying the sentence.
        return ("refused", text) if any(word in text for word in ("429", "Too many", "busy")) else ("error", text)


class PeakMemory:
    """The highest resident memory of process `pid` while the block runs, sampled every 20 ms."""

    def __init__(self, pid, every_s=0.02):
        self.pid, self.every_s, self.peak_mb = pid, every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
            time.sleep(self.every_s)

    def __enter__(self):
        self.peak_mb = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def memory_every_route(url, pid, picture, addresses=16, routes=ROUTES):
    """[(what, peak MB, MB at rest after, Counter of outcomes, a few refusal sentences)]: each
    route with `addresses` visitors at once, then every route at once."""
    figures = []
    runs = [(route, (route,)) for route in routes] + [("all at once", tuple(routes))]
    for run, (name, at_once) in enumerate(runs):
        jobs = [(route, f"198.19.{4 * run + k}.{i + 1}") for k, route in enumerate(at_once) for i in range(addresses)]
        with PeakMemory(pid) as memory, ThreadPoolExecutor(len(jobs)) as pool:
            outcomes = list(pool.map(lambda job: classify_by_route(url, job[0], picture, job[1]), jobs))
        time.sleep(2.0)
        sentences = sorted({detail for kind, detail in outcomes if kind != "answered"})[:3]
        figures.append((name, memory.peak_mb, rss_mb(pid), Counter(kind for kind, _ in outcomes), sentences))
    return figures


def flood(url, address, photo, stop, workers=16, route="page"):
    """One visitor sending uploads from `workers` threads until `stop` is set, through the page
    (gradio_client) or the JSON API (the raw file as the body); returns (threads, what it got).
    Run it in a process of its own (Flooder): its threads would otherwise slow the measuring
    client through Python's interpreter lock, not the server."""
    seen = {"answered": 0, "limited": 0, "cut_off": 0, "errors": 0, "error_messages": []}
    data = Path(photo).read_bytes()

    def one(client):
        if route == "api":
            return outcome(*http_request(url, "POST", "/api/v1/classify", data,
                                         {"X-Forwarded-For": address, "Content-Type": "image/jpeg"}))
        verdict = classify(client, photo)[0]
        return ("refused", verdict) if "⚠️" in verdict else ("answered", "")

    def loop():
        client = visitor(url, address) if route == "page" else None
        while not stop.is_set():
            try:
                kind, detail = one(client)
            except Exception as error:
                text = f"{type(error).__name__}: {error}"
                if "429" in text or "Too many" in text:
                    kind, detail = "refused", text  # the front door's plain refusal
                elif any(word in text for word in ("reset by peer", "Broken pipe", "ReadError", "RemoteProtocolError")):
                    # A refused upload over 1 MB has its connection closed after the tarpit (web.guard).
                    kind, detail = "cut_off", text
                else:
                    kind, detail = "error", text
            key = {"answered": "answered", "refused": "limited", "cut_off": "cut_off"}.get(kind, "errors")
            seen[key] += 1
            if key == "errors" and len(seen["error_messages"]) < 5:
                seen["error_messages"].append(detail[:300])

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    return threads, seen


def _flood_process(url, address, photo, stop, results, workers, route):
    threads, seen = flood(url, address, photo, stop, workers, route)
    for thread in threads:
        thread.join()
    results.put(seen)


class Flooder:
    """A flooding visitor in a process of its own: `with Flooder(...) as flooder: ...`, then
    `flooder.seen` says what it got."""

    def __init__(self, url, address, photo, workers=16, route="page"):
        context = multiprocessing.get_context("spawn")
        self.stop, self.results = context.Event(), context.Queue()
        self.process = context.Process(target=_flood_process,
                                       args=(url, address, str(photo), self.stop, self.results, workers, route))
        self.seen = None

    def __enter__(self):
        self.process.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.seen = self.results.get(timeout=180)
        self.process.join(timeout=30)


def fairness(url, photos, flood_photo=None, route="page", count=30, workers=16):
    """(quiet p95, p95 under a flood, what the flood got) in seconds, for one normal visitor on
    the page while another floods through `route` ("page" or "api") with `flood_photo`."""
    quiet = latencies(url, f"192.0.2.{10 + 2 * ROUTES.index(route)}", photos, count)
    with Flooder(url, f"192.0.2.{66 + ROUTES.index(route)}", flood_photo or photos[0], workers, route) as flooder:
        time.sleep(5.0)  # the flood under way (the process starts in about a second)
        busy = latencies(url, f"192.0.2.{11 + 2 * ROUTES.index(route)}", photos, count)
    return p95(quiet), p95(busy), flooder.seen


def big_jpeg(path, megapixels=24, quality=90):
    """A large, hard-to-compress JPEG (about 18 MB at 24 megapixels): blocks of noise."""
    import numpy as np
    from PIL import Image

    side = int((megapixels * 1e6) ** 0.5)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (side // 4, side // 4, 3), dtype=np.uint8).repeat(4, axis=0).repeat(4, axis=1)
    pixels = np.clip(pixels.astype(np.int16) + rng.integers(-40, 40, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=quality)
    return Path(path)


def _png_bytes():
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload_bodies(url, address):
    """{case: (HTTP status, files Gradio stored)} for hostile multipart bodies at /gradio_api/upload."""
    png = _png_bytes()
    cases = {
        "one unquoted filename": [("name=files; filename=f1.png", png)],
        "1,000 unquoted files": [(f"name=files; filename=f{i}.png", png) for i in range(1000)],
        "quoted and unquoted": [('name="files"; filename="a.png"', png), ("name=files; filename=b.png", png)],
        "filename* only": [("name=\"files\"; filename*=UTF-8''a.png", png)],
        "a part with no filename": [('name="files"', png)],
    }
    results = {}
    for index, (case, parts) in enumerate(cases.items()):
        body, kind = multipart_body(parts)
        status, answer = http_request(url, "POST", "/gradio_api/upload", body,
                                      {"X-Forwarded-For": f"{address}{index}", "Content-Type": kind})
        results[case] = (status, len(json.loads(answer)) if status == 200 else 0, answer[:200])
    return results


def login_tries(admin_url, tries=12):
    """[(HTTP status, seconds)] of `tries` wrong passwords in a row at the admin area's login
    (once it serves: it starts a moment after the public page)."""
    started = time.perf_counter()
    while True:
        try:
            http_request(admin_url, "GET", "/", timeout=5)
            break
        except OSError:
            if time.perf_counter() - started > 60:
                raise
            time.sleep(0.2)
    results = []
    for index in range(tries):
        started = time.perf_counter()
        status, _ = http_request(admin_url, "POST", "/login", f"username=admin&password=wrong-{index}".encode(),
                                 {"Content-Type": "application/x-www-form-urlencoded"})
        results.append((status, time.perf_counter() - started))
    return results


def p95(values):
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default=str(REPO / "assets"))
    parser.add_argument("--addresses", type=int, default=16)
    parser.add_argument("--megapixels", type=float, default=49)
    parser.add_argument("--corrections", type=int, default=100)
    args = parser.parse_args()
    photos = sorted((Path(args.assets) / "examples").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        picture = big_png(work / "big.png", args.megapixels)
        print(f"picture: {picture.stat().st_size / 1024:.0f} kB on the wire, {args.megapixels:g} megapixels declared")
        with running_app(args.assets, work / "memory") as (url, _):
            pid = int((work / "memory" / "server.pid").read_text())
            classify(visitor(url, "192.0.2.1"), photos[0])  # models loaded and warm before measuring
            print(f"memory: {rss_mb(pid):.0f} MB at rest, warm")
            for name, peak, rest, outcomes, sentences in memory_every_route(url, pid, picture, args.addresses):
                print(f"memory, {name}: {args.addresses} addresses x {args.megapixels:g} MP per route: peak {peak:.0f} MB "
                      f"(goal <= 1500), at rest after {rest:.0f} MB (goal <= 1200); {dict(outcomes)} {sentences}")
        state = work / "crash"
        with running_app(args.assets, state, extra_args=("--rate-limit", "0")) as (url, _):
            pid = int((state / "server.pid").read_text())
            acknowledged = correction_burst(url, photos, args.corrections, kill_after=args.corrections // 2, pid=pid)
        with running_app(args.assets, state, extra_args=("--rate-limit", "0")):
            lost, orphan_votes, orphan_pictures = store_check(state, acknowledged, pseudonyms_of(state))
        print(f"crash: SIGKILL after {len(acknowledged)} acknowledged corrections (of {args.corrections} sent); "
              f"after restart {lost} lost, {orphan_votes} votes without picture, {orphan_pictures} pictures without vote (goal 0, 0, 0)")
        flood_photo = big_jpeg(work / "big.jpg")
        print(f"flood picture: {flood_photo.stat().st_size / 1e6:.1f} MB JPEG")
        with running_app(args.assets, work / "fair") as (url, _):
            for route in ("page", "api"):
                quiet, busy, seen = fairness(url, photos, flood_photo, route)
                print(f"fairness, a 16-thread flood through the {route}: normal visitor p95 {quiet * 1000:.0f} ms quiet, "
                      f"{busy * 1000:.0f} ms during the flood (ratio {busy / quiet:.2f}, goal <= 2); the flooder got "
                      f"{seen['answered']} answers, {seen['limited']} plain refusals, {seen['cut_off']} refused uploads cut off "
                      f"after the tarpit, {seen['errors']} errors {seen['error_messages']}")
            for case, (status, stored, answer) in upload_bodies(url, "198.18.7.").items():
                print(f"upload body, {case}: HTTP {status}, {stored} files stored (goal: refused or 1) {answer!r}")
        os.environ["HONEST_ADMIN_PASSWORD"] = "bench-" + os.urandom(8).hex()
        with running_app(args.assets, work / "admin") as (url, _):
            admin = f"http://127.0.0.1:{int((work / 'admin' / 'admin.port').read_text())}/"
            tries = login_tries(admin)
            print("admin login, 12 wrong passwords: " + ", ".join(f"{status} in {seconds:.2f} s" for status, seconds in tries)
                  + f" (goal: the 11th waits or is refused: HTTP {tries[10][0]} after {tries[10][1]:.2f} s)")


if __name__ == "__main__":
    main()
