"""Two real app processes on one real PostgreSQL database (tests/postgres_server.py): one
dashboard, one review queue, every acknowledged upload and correction stored exactly once, and
a replica killed with kill -9 in the middle of a burst loses nothing it acknowledged.

The full 8 clients x 50 uploads, and the 1-vs-2-replica throughput, are bench.replicas's; here
8 clients send 6 uploads each per burst, to keep the test near a minute on 2 cores.
"""

import os
import re

import pytest

from bench.visitors import classify, visitor
from bench.replicas import burst, database_check, distinct_photos, replicas
from tests.app.conftest import ASSETS

CLIENTS, UPLOADS = 8, 6
PASSWORD = "replicas share one admin password"


@pytest.fixture(scope="module")
def pair(postgres_server, tmp_path_factory, example_photos):
    """[(url, state folder)] of two replicas on one fresh database, with their admin areas on."""
    assert (ASSETS / "bundle.json").exists(), "the committed bundle assets/ is missing: run python -m pipeline.build"
    database = postgres_server.new_database()
    work = tmp_path_factory.mktemp("replicas")
    before = os.environ.get("HONEST_ADMIN_PASSWORD")
    os.environ["HONEST_ADMIN_PASSWORD"] = PASSWORD  # read by the replicas when they start
    try:
        with replicas(ASSETS, database, work, 2) as started:
            _restore(before)
            from service.visitors import Pseudonyms

            yield {"replicas": started, "database": database, "work": work, "voter": Pseudonyms(work / "salt", database=database).voter,
                   "photos": list(example_photos.values()), "bursts": []}
    finally:
        _restore(before)


def _restore(value):
    if value is None:
        os.environ.pop("HONEST_ADMIN_PASSWORD", None)
    else:
        os.environ["HONEST_ADMIN_PASSWORD"] = value


def pictures_for(pair, name):
    pictures = distinct_photos(pair["photos"], CLIENTS * UPLOADS, pair["work"] / name)
    return [pictures[c * UPLOADS:(c + 1) * UPLOADS] for c in range(CLIENTS)]


def admin(state):
    from gradio_client import Client

    port = int((state / "admin.port").read_text())
    return Client(f"http://127.0.0.1:{port}/", verbose=False, auth=("admin", PASSWORD))


def review_queue(client):
    """[(vote id, proposed label)] of the visitors' pending votes, read from the review gallery's captions."""
    gallery = client.predict("all", "visitor", "pending", api_name="/review_queue")[0]
    return sorted((int(m.group(1)), m.group(2)) for item in gallery
                  for m in [re.match(r"#(\d+) (\S+)", item["caption"])])


def uploads_shown(client):
    drift = client.predict(api_name="/monitor")[0]
    found = re.search(r"([\d,]+) uploads?", drift)
    assert found, drift
    return int(found.group(1).replace(",", ""))


def test_two_replicas_share_one_log_one_review_queue_and_store_each_correction_once(pair):
    urls = [url for url, _ in pair["replicas"]]
    result = burst(urls, pictures_for(pair, "first"))
    pair["bursts"].append(result)
    assert result.failures == 0 and len(result.uploads) == len(result.corrections) == CLIENTS * UPLOADS
    check = database_check(pair["database"], pair["voter"], result)
    assert (check["lost"], check["duplicates"], check["pictures_missing"]) == (0, 0, 0), check
    # Exactly once: one log row per answered upload, one vote per acknowledged correction.
    assert (check["logged"], check["tagged"], check["votes"]) == (CLIENTS * UPLOADS,) * 3, check

    first, second = (admin(state) for _, state in pair["replicas"])
    assert uploads_shown(first) == uploads_shown(second) == CLIENTS * UPLOADS
    queue = review_queue(first)
    assert len(queue) == CLIENTS * UPLOADS and review_queue(second) == queue
    # A vote accepted through one replica's admin area leaves the queue of both.
    vote_id = queue[0][0]
    assert "1 accepted" in first.predict([vote_id], api_name="/accept")
    assert review_queue(second) == queue[1:]


def test_a_replica_killed_mid_burst_loses_nothing_it_acknowledged(pair):
    urls = [url for url, _ in pair["replicas"]]
    victim = int((pair["replicas"][1][1] / "server.pid").read_text())
    result = burst(urls, pictures_for(pair, "second"), kill=(victim, CLIENTS * UPLOADS // 3))
    assert result.failures > 0, "the replica was not killed before the burst ended"
    assert len(result.corrections) >= CLIENTS * UPLOADS // 3
    everything = type(result)(uploads=[u for r in (*pair["bursts"], result) for u in r.uploads],
                              corrections=[c for r in (*pair["bursts"], result) for c in r.corrections])
    check = database_check(pair["database"], pair["voter"], everything)
    assert (check["lost"], check["duplicates"], check["pictures_missing"]) == (0, 0, 0), check
    # An upload whose answer the kill cut off may be logged; an answered one always is.
    assert check["logged"] >= len(everything.uploads) and check["votes"] >= len(everything.corrections)
    # The survivor serves on, on the same database.
    assert classify(visitor(urls[0], "192.0.2.77"), pair["photos"][0])[0]
