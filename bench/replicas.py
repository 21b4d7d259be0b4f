"""App replicas on one PostgreSQL database: throughput of 1 against 2 replicas, and the check that
every acknowledged upload and correction is in the database exactly once.

    python -m bench.replicas [--assets assets] [--clients 8] [--uploads 50] [--database URL]

Each client is a visitor of its own (its address reaches the app as X-Forwarded-For) sending
`uploads` distinct pictures, each classified and then corrected by a gallery click, spread over
the replicas in turn (a visitor's correction goes to the replica that classified the picture:
the correction copy is kept in that process, so a load balancer in front must keep a session on
one replica, as Gradio's own session state needs anyway). Throughput counts uploads with their
corrections per second of wall time. Without --database a throwaway PostgreSQL server is started
(tests/postgres_server.py, Debian's postgresql package). On a 2-core machine both replicas and
the clients share the same two cores, so the figure says how the store scales, not the CPU.

The test (tests/app/test_replicas.py) runs the same functions on fewer uploads, and with a kill -9.
"""

import argparse
import contextlib
import hashlib
import os
import signal
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.app_server import REPO, running_app
from bench.visitors import SAVED, classify, visitor


@dataclass
class Burst:
    seconds: float = 0.0
    uploads: list = field(default_factory=list)  # (address, picture hash) answered
    corrections: list = field(default_factory=list)  # (address, picture hash, label) acknowledged
    failures: int = 0  # requests that got no answer (a killed replica)


def distinct_photos(photos, count, folder):
    """`count` files, each a different byte string (a JPEG comment holds the folder's name and the
    file's number), so that each is a picture of its own for the store: one visitor may vote once
    per picture."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for index in range(count):
        data = Path(photos[index % len(photos)]).read_bytes()
        comment = f"bench.replicas {folder.name} {index}".encode()
        assert data[:2] == b"\xff\xd8", "distinct_photos takes JPEG files"
        path = folder / f"{index:05d}.jpg"
        path.write_bytes(data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:])
        made.append(path)
    return made


def picture_hash(path):
    """The store's key of an uploaded file (service.predictor: sha256 of its bytes)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]


@contextlib.contextmanager
def replicas(assets, database, work, count, rate_limit=0):
    """Yields [(url, state folder)] of `count` app processes on one database. They share the
    visitors' salt through it (service.visitors.Pseudonyms), so that a visitor is one voter
    whichever replica answers."""
    work = Path(work)
    with contextlib.ExitStack() as stack:
        started = []
        for index in range(count):
            state = work / f"replica-{index}"
            state.mkdir(parents=True, exist_ok=True)
            url, _ = stack.enter_context(running_app(
                assets, state, extra_args=("--rate-limit", str(rate_limit), "--database", database)))
            started.append((url, state))
        yield started


def burst(urls, pictures_by_client, kill=None):
    """Every client sends its pictures, each classified then corrected, to the replicas in turn.
    kill=(pid, after): SIGKILL that process once `after` corrections were acknowledged."""
    result, lock, killed = Burst(), threading.Lock(), threading.Event()

    def one_client(index, pictures):
        address = f"198.51.{100 + index // 250}.{index % 250 + 1}"
        sessions = {}
        for number, path in enumerate(pictures):
            url = urls[(index + number) % len(urls)]
            try:
                session = sessions.get(url) or sessions.setdefault(url, visitor(url, address))
                gallery = classify(session, path)[2]
                with lock:
                    result.uploads.append((address, picture_hash(path)))
                captions = [item["caption"] for item in gallery]
                position = number % len(captions)
                note = session.predict(position, api_name="/relabel")
            except Exception:
                with lock:
                    result.failures += 1  # no answer: nothing was acknowledged
                sessions.pop(url, None)
                continue
            if SAVED in note:
                with lock:
                    result.corrections.append((address, picture_hash(path), captions[position].replace(" ", "_")))
                    if kill is not None and len(result.corrections) >= kill[1] and not killed.is_set():
                        killed.set()
                        os.kill(kill[0], signal.SIGKILL)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(pictures_by_client)) as pool:
        list(pool.map(lambda item: one_client(*item), enumerate(pictures_by_client)))
    result.seconds = time.perf_counter() - started
    return result


def database_check(database, voter, result):
    """What the database holds of a burst: {"lost": acknowledged corrections missing or under
    another label, "duplicates": votes or pictures stored more than once, "pictures_missing":
    acknowledged pictures without their PNG, "logged": rows in the prediction log, "tagged":
    rows of it carrying a correction}."""
    import psycopg

    with psycopg.connect(database) as connection:
        votes = connection.execute("SELECT voter, picture, label FROM corrections.votes WHERE source = 'visitor'").fetchall()
        pictures = connection.execute("SELECT hash, length(png) FROM corrections.pictures").fetchall()
        logged, tagged = connection.execute("SELECT count(*), count(tag) FROM monitoring.predictions").fetchone()
    stored = {}
    for row in votes:
        stored[row] = stored.get(row, 0) + 1
    sizes = {}
    for picture, size in pictures:
        sizes.setdefault(picture, []).append(size)
    acknowledged = {(voter(address), picture, label) for address, picture, label in result.corrections}
    return {
        "lost": sum(stored.get(item, 0) == 0 for item in acknowledged),
        "duplicates": sum(n > 1 for n in stored.values()) + sum(len(s) > 1 for s in sizes.values()),
        "pictures_missing": sum(not sizes.get(picture, [0])[0] for _, picture, _ in acknowledged),
        "votes": len(votes), "logged": logged, "tagged": tagged,
    }


def throughput(assets, database, work, photos, replica_count, clients, uploads):
    """(uploads with their corrections per second, Burst, database check) for `replica_count`
    replicas on an empty `database`."""
    from service.visitors import Pseudonyms

    pictures = distinct_photos(photos, clients * uploads, Path(work) / "pictures")
    by_client = [pictures[c * uploads:(c + 1) * uploads] for c in range(clients)]
    with replicas(assets, database, work, replica_count) as started:
        urls = [url for url, _ in started]
        for url in urls:  # models loaded and warm before the clock starts
            classify(visitor(url, "192.0.2.1"), photos[0])
        result = burst(urls, by_client)
    check = database_check(database, Pseudonyms(Path(work) / "salt", database=database).voter, result)
    return len(result.uploads) / result.seconds, result, check


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default=str(REPO / "assets"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--uploads", type=int, default=50, help="per client")
    parser.add_argument("--database", default=None,
                        help="a PostgreSQL server's URL whose user may CREATE DATABASE (default: a throwaway server)")
    args = parser.parse_args()
    photos = sorted((Path(args.assets) / "examples").glob("*.jpg"))
    with contextlib.ExitStack() as stack:
        if args.database:
            server = None
        else:
            from tests.postgres_server import PostgresServer

            server = stack.enter_context(PostgresServer())
        print(f"{os.cpu_count()} CPU cores; {args.clients} clients x {args.uploads} uploads, each corrected")
        rates = {}
        for count in (1, 2):
            database = server.new_database() if server else _new_database(args.database, f"replicas_{count}_{os.getpid()}")
            with tempfile.TemporaryDirectory() as work:
                rate, result, check = throughput(args.assets, database, work, photos, count, args.clients, args.uploads)
            rates[count] = rate
            print(f"{count} replica{'s' if count > 1 else ''}: {rate:.2f} uploads/s ({len(result.uploads)} uploads, "
                  f"{len(result.corrections)} corrections acknowledged in {result.seconds:.0f} s, {result.failures} failed); "
                  f"database: {check['logged']} logged, {check['votes']} votes, {check['lost']} lost, "
                  f"{check['duplicates']} duplicates, {check['pictures_missing']} pictures missing")
        print(f"2 replicas / 1 replica: {rates[2] / rates[1]:.2f}x")


def _new_database(url, name):
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name


if __name__ == "__main__":
    main()
