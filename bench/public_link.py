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
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.app_server import REPO, running_app
from bench.visitors import (
    ROUTES, Flooder, big_jpeg, big_png, classify, classify_by_route, correction_burst, latencies, login_tries,
    upload_bodies, visitor,
)


def rss_mb(pid):
    """Resident memory of a process, in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def memory_growth(url, pid, picture, sessions):
    """(MB before, MB after, MB peak seen) while `sessions` visitors each classify `picture`."""
    before = rss_mb(pid)
    peak = before
    for index in range(sessions):
        classify(visitor(url, f"203.0.113.{index + 1}"), picture)
        peak = max(peak, rss_mb(pid))
    time.sleep(1.0)
    return before, rss_mb(pid), peak


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


def fairness(url, photos, flood_photo=None, route="page", count=30, workers=16):
    """(quiet p95, p95 under a flood, what the flood got) in seconds, for one normal visitor on
    the page while another floods through `route` ("page" or "api") with `flood_photo`."""
    quiet = latencies(url, f"192.0.2.{10 + 2 * ROUTES.index(route)}", photos, count)
    with Flooder(url, f"192.0.2.{66 + ROUTES.index(route)}", flood_photo or photos[0], workers, route) as flooder:
        time.sleep(5.0)  # the flood under way (the process starts in about a second)
        busy = latencies(url, f"192.0.2.{11 + 2 * ROUTES.index(route)}", photos, count)
    return p95(quiet), p95(busy), flooder.seen


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
