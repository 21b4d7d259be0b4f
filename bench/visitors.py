"""Simulated visitors of the running app, kind and hostile: for benches and tests.

    client = visitor(url, "203.0.113.9")            # a gradio_client session from that address
    classify(client, path)                          # the page's /classify, as a browser would
    classify_by_route(url, "api", path, address)    # by any way in: page, api, run, call
    with Flooder(url, address, photo, route="api") as flooder: ...   # 16 threads, in a process of its own
    upload_bodies(url, address); login_tries(admin_url)              # hostile bodies, wrong passwords

A visitor's address reaches the app as X-Forwarded-For, which the app believes from loopback only
when it runs --behind-proxy, as behind the --share tunnel (bench.app_server starts it so).
"""

import http.client
import json
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit


SAVED = "Based on the image you selected"


def visitor(url, address):
    """A gradio_client session for one visitor; the address reaches the app as X-Forwarded-For
    (believed only because the app runs --behind-proxy and this client connects from loopback,
    as the --share tunnel does)."""
    from gradio_client import Client

    return Client(url, verbose=False, headers={"X-Forwarded-For": address})


def classify(client, path):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/classify")


def latencies(url, address, photos, count):
    client = visitor(url, address)
    times = []
    for index in range(count):
        started = time.perf_counter()
        classify(client, photos[index % len(photos)])
        times.append(time.perf_counter() - started)
    return times


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
