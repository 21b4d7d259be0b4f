"""Promotion and rollback while visitors upload through the page: real app processes, 8 clients,
0 failed requests, and every answer from exactly one bundle version (the one it names).

On one app with its SQLite state, and on two replicas sharing one PostgreSQL database, which
follow the registry's serving row without a restart (service.registry)."""

import re
import threading
import time

import pytest

from bench.replicas import replicas
from bench.visitors import classify, visitor
from service.bundle import Bundle
from service.predictor import Predictor
from service.registry import BundleRegistry
from tests.app.conftest import ASSETS
from tests.service.test_registry import PASSED, version_folder

CLIENTS = 8
VERSION = re.compile(r"Answered by model version (\S+)\.")


@pytest.fixture(scope="module")
def versions(tmp_path_factory, example_photos):
    """Two real bundle versions that answer the example photos differently, and what each answers."""
    root = tmp_path_factory.mktemp("versions")
    folders = {"one": version_folder(root, "one"), "two": version_folder(root, "two", fallback_mass_threshold=0.999)}
    photos = list(example_photos.values())
    expected = {}
    for name, folder in folders.items():
        predictor = Predictor(Bundle.load(folder))
        expected[name] = [f"### {predictor.predict(photo).message}" for photo in photos]
    assert expected["one"] != expected["two"]
    return folders, photos, expected


def register(target, folders):
    registry = BundleRegistry(target)
    for name, folder in folders.items():
        registry.register(name, folder, gate=PASSED)
    registry.promote("one")
    return registry


def visitors_during(urls, photos, change):
    """CLIENTS visitors upload the photos in turn through the page while change() runs; returns
    ([(version, photo index, verdict)], [failures])."""
    answers, failures, stop = [], [], threading.Event()

    def one(client_index):
        client = visitor(urls[client_index % len(urls)], f"203.0.113.{client_index + 1}")
        while not stop.is_set():
            for index, photo in enumerate(photos):
                try:
                    verdict, _, _, hood, *_ = classify(client, photo)
                    found = VERSION.search(hood)
                    answers.append((found.group(1) if found else None, index, verdict))
                except Exception as error:  # counted: the test asserts there are none
                    failures.append(f"{type(error).__name__}: {error}"[:300])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        change(answers)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    return answers, failures


def promote_then_roll_back(registry):
    def change(answers):
        _wait_for(lambda: len(answers) >= 2 * CLIENTS)
        registry.promote("two")
        _wait_for(lambda: sum(version == "two" for version, _, _ in answers) >= 2 * CLIENTS)
        registry.rollback()
        seen = len(answers)
        _wait_for(lambda: sum(version == "one" for version, _, _ in answers[seen:]) >= 2 * CLIENTS)
    return change


def check(answers, failures, expected):
    assert failures == [], failures[:3]
    assert {version for version, _, _ in answers} == {"one", "two"}, "both versions answered"
    wrong = [(v, i, verdict) for v, i, verdict in answers if verdict != expected[v][i]]
    assert wrong == [], wrong[:3]  # each answer is its version's, whole


def test_one_app_switches_versions_under_load_without_a_failed_request(versions, tmp_path):
    folders, photos, expected = versions
    state = tmp_path / "state"
    state.mkdir()
    registry = register(state / "corrections.sqlite", folders)
    try:
        from bench.app_server import running_app

        with running_app(ASSETS, state, extra_args=("--rate-limit", "0")) as (url, _):
            answers, failures = visitors_during([url], photos, promote_then_roll_back(registry))
    finally:
        registry.close()
    check(answers, failures, expected)


def test_two_replicas_on_postgresql_follow_one_serving_row(versions, postgres_server, tmp_path):
    folders, photos, expected = versions
    database = postgres_server.new_database()
    registry = register(database, folders)
    try:
        with replicas(ASSETS, database, tmp_path, 2) as started:
            urls = [url for url, _ in started]
            answers, failures = visitors_during(urls, photos, promote_then_roll_back(registry))
    finally:
        registry.close()
    check(answers, failures, expected)


def _wait_for(condition, timeout_s=180.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
