"""The public link under attack: the three figures of the security issue, measured on a real server.

    python -m bench.public_link [--assets assets] [--sessions 10] [--megapixels 49] [--corrections 100]

1. Memory: the server's resident memory before and after `sessions` visitors each upload a PNG
   declaring `megapixels` (goal: growth < 400 MB once they are done).
2. Crash: `corrections` corrections sent by many visitors at once; the server is killed with
   SIGKILL half-way, restarted on the same state folder, and every correction a visitor was told
   was saved is looked up (goal: 0 lost, 0 votes without their picture, 0 pictures without a vote).
3. Fairness: a normal visitor's latency alone, then while another visitor floods the server with
   concurrent uploads (goal: its p95 under twice its quiet p95).

The tests (tests/app/test_security.py) run the same functions on smaller numbers.
"""

import argparse
import multiprocessing
import os
import signal
import sqlite3
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def flood(url, address, photo, stop, workers=16):
    """One visitor sending uploads from `workers` threads until `stop` is set; returns
    (threads, what it got). Run it in a process of its own (Flooder): its threads would
    otherwise slow the measuring client through Python's interpreter lock, not the server."""
    seen = {"answered": 0, "limited": 0, "errors": 0, "error_messages": []}

    def loop():
        client = visitor(url, address)
        while not stop.is_set():
            try:
                verdict = classify(client, photo)[0]
                seen["limited" if "⚠️" in verdict else "answered"] += 1
            except Exception as error:
                # The front door's refusal of too many uploads is HTTP 429 with our sentence.
                kind = "limited" if "429" in str(error) or "Too many" in str(error) else "errors"
                seen[kind] += 1
                if kind == "errors" and len(seen["error_messages"]) < 5:
                    seen["error_messages"].append(f"{type(error).__name__}: {error}"[:300])

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    return threads, seen


def _flood_process(url, address, photo, stop, results, workers):
    threads, seen = flood(url, address, photo, stop, workers)
    for thread in threads:
        thread.join()
    results.put(seen)


class Flooder:
    """A flooding visitor in a process of its own: `with Flooder(...) as flooder: ...`, then
    `flooder.seen` says what it got."""

    def __init__(self, url, address, photo, workers=16):
        context = multiprocessing.get_context("spawn")
        self.stop, self.results = context.Event(), context.Queue()
        self.process = context.Process(target=_flood_process, args=(url, address, str(photo), self.stop, self.results, workers))
        self.seen = None

    def __enter__(self):
        self.process.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.seen = self.results.get(timeout=120)
        self.process.join(timeout=30)


def fairness(url, photos, count=30):
    """(quiet p95, p95 under a flood, what the flood got) in seconds, for one normal visitor."""
    quiet = latencies(url, "192.0.2.10", photos, count)
    with Flooder(url, "192.0.2.66", photos[0]) as flooder:
        time.sleep(5.0)  # the flood under way (the process starts in about a second)
        busy = latencies(url, "192.0.2.11", photos, count)
    return p95(quiet), p95(busy), flooder.seen


def p95(values):
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default=str(REPO / "assets"))
    parser.add_argument("--sessions", type=int, default=10)
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
            before, after, peak = memory_growth(url, pid, picture, args.sessions)
            print(f"memory: {before:.0f} MB before, {after:.0f} MB after {args.sessions} sessions "
                  f"(growth {after - before:+.0f} MB, goal < 400; peak {peak:.0f} MB)")
        state = work / "crash"
        with running_app(args.assets, state, extra_args=("--rate-limit", "0")) as (url, _):
            pid = int((state / "server.pid").read_text())
            acknowledged = correction_burst(url, photos, args.corrections, kill_after=args.corrections // 2, pid=pid)
        with running_app(args.assets, state, extra_args=("--rate-limit", "0")):
            lost, orphan_votes, orphan_pictures = store_check(state, acknowledged, pseudonyms_of(state))
        print(f"crash: SIGKILL after {len(acknowledged)} acknowledged corrections (of {args.corrections} sent); "
              f"after restart {lost} lost, {orphan_votes} votes without picture, {orphan_pictures} pictures without vote (goal 0, 0, 0)")
        with running_app(args.assets, work / "fair") as (url, _):
            quiet, busy, seen = fairness(url, photos)
            print(f"fairness: normal visitor p95 {quiet * 1000:.0f} ms quiet, {busy * 1000:.0f} ms while another floods "
                  f"(ratio {busy / quiet:.2f}, goal < 2); the flooder got {seen['answered']} answers, "
                  f"{seen['limited']} plain refusals, {seen['errors']} errors {seen['error_messages']}")


if __name__ == "__main__":
    main()
