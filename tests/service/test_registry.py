"""The bundle registry and the swap: promotion, rollback and a refused challenger, on real bundles
(copies of the committed one with a rule of their own), with requests in flight."""

import json
import shutil
import threading

import pytest

from service.bundle import Bundle
from service.predictor import Predictor
from service.registry import BundleRegistry, BundleWatcher, RegistryError
from tests.conftest import REPO

PASSED = {"passed": True, "reasons": []}


def version_folder(tmp_path, version, **rule):
    """A copy of the committed bundle named `version`, its answer rule changed by `rule`."""
    folder = tmp_path / version
    shutil.copytree(REPO / "assets", folder, ignore=shutil.ignore_patterns("figures", "reports", "model.keras"))
    manifest = json.loads((folder / "bundle.json").read_text())
    (folder / "bundle.json").write_text(json.dumps({**manifest, "version": version}))
    values = json.loads((folder / "answer_rule.json").read_text())
    (folder / "answer_rule.json").write_text(json.dumps({**values, **rule}))
    return folder


@pytest.fixture()
def registry(store_target):
    registry = BundleRegistry(store_target)
    yield registry
    registry.close()


def test_promotion_and_rollback_move_one_row(registry, tmp_path):
    assert registry.serving() == (None, None) and registry.champion() is None
    registry.register("one", tmp_path / "one", gate=PASSED)
    registry.register("two", tmp_path / "two", parent="one", gate=PASSED)
    registry.promote("one")
    registry.promote("two")
    assert registry.serving() == ("two", "one") and registry.champion().parent == "one"
    assert registry.rollback().version == "one" and registry.serving() == ("one", "two")
    # A rollback is a promotion of the one before: twice returns to where it was.
    assert registry.rollback().version == "two"
    assert [v.version for v in registry.versions()] == ["two", "one"]


def test_a_challenger_that_failed_its_gate_is_refused_with_its_reasons(registry, tmp_path):
    registry.register("good", tmp_path / "good", gate=PASSED)
    registry.promote("good")
    registry.register("bad", tmp_path / "bad", parent="good",
                      gate={"passed": False, "reasons": ["CIFAR-10 test, 10-class accuracy: 0.5000 against the champion's 0.9069"]})
    with pytest.raises(RegistryError, match="did not pass the gate: CIFAR-10 test"):
        registry.promote("bad")
    with pytest.raises(RegistryError, match="No bundle version"):
        registry.promote("never-registered")
    assert registry.serving() == ("good", None)
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback()


def test_the_predictor_swaps_between_requests_and_no_answer_mixes_two_bundles(registry, tmp_path, example_photos):
    # Two real bundles that answer differently: the second refuses whatever the fallback is not all but sure of.
    one = version_folder(tmp_path, "one")
    two = version_folder(tmp_path, "two", fallback_mass_threshold=0.999)
    photos = list(example_photos.values())
    expected = {}
    for version, folder in (("one", one), ("two", two)):
        predictor = Predictor(Bundle.load(folder))
        expected[version] = [(p.label, p.message) for p in map(predictor.predict, photos)]
    assert expected["one"] != expected["two"]

    for version, folder in (("one", one), ("two", two)):
        registry.register(version, folder, gate=PASSED)
    registry.promote("one")
    predictor = Predictor(Bundle.load(REPO / "assets"))
    watcher = BundleWatcher(registry, predictor, Bundle.load, poll_s=0.05)
    assert watcher.start().predictor.bundle.version == "one"
    answers, failures, stop = [], [], threading.Event()

    def visitor():
        while not stop.is_set():
            for index, photo in enumerate(photos):
                try:
                    p = predictor.predict(photo)
                    answers.append((p.bundle_version, index, (p.label, p.message)))
                except Exception as error:  # counted, and the test fails on any
                    failures.append(error)

    threads = [threading.Thread(target=visitor) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            registry.promote("two")
            _wait_for(lambda: predictor.bundle.version == "two")
            _wait_for(lambda: sum(version == "two" for version, _, _ in answers) >= 16)
            registry.rollback()
            _wait_for(lambda: predictor.bundle.version == "one")
            _wait_for(lambda: sum(version == "one" for version, _, _ in answers[-16:]) >= 16)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        watcher.stop()
    assert failures == []
    assert {version for version, _, _ in answers} == {"one", "two"}
    # Every answer is the one its version gives that photo: no request saw half of each bundle.
    assert all(answer == expected[version][index] for version, index, answer in answers)


def test_a_bundle_that_cannot_load_leaves_the_champion_serving(registry, tmp_path):
    registry.register("missing", tmp_path / "nowhere", gate=PASSED)
    registry.promote("missing")
    predictor = Predictor(Bundle.load(REPO / "assets"))
    before = predictor.bundle.version
    watcher = BundleWatcher(registry, predictor, Bundle.load, poll_s=0.05)
    with pytest.raises(Exception):
        watcher.check()
    assert predictor.bundle.version == before


def _wait_for(condition, timeout_s=60.0):
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_admins_learning_controls_promote_roll_back_and_refuse_plainly(registry, store_target, tmp_path):
    from bundle.labels import CLASS_NAMES
    from service.corrections import CorrectionStore
    from service.learning import LearningControl

    one, two = version_folder(tmp_path, "one"), version_folder(tmp_path, "two")
    registry.register("one", one, gate=PASSED)
    registry.register("two", two, parent="one", gate=PASSED)
    registry.register("worse", two, parent="one", gate={"passed": False, "reasons": ["photos of ours: right fell"]})
    registry.promote("one")
    predictor = Predictor(Bundle.load(REPO / "assets"))
    watcher = BundleWatcher(registry, predictor, Bundle.load)
    watcher.check()
    store = CorrectionStore(store_target, CLASS_NAMES)
    learning = LearningControl(registry, watcher, store, store_target, tmp_path / "state")
    try:
        assert "Accept some learning pictures first" in learning.start()
        assert learning.promote("two") == "Promoted two; this replica now serves two."
        assert "did not pass the gate: photos of ours: right fell" in learning.promote("worse")
        assert learning.rollback() == "Rolled back to one; this replica now serves one."
        status = learning.status()
        assert status["serving"] == "one" and status["state"] == "not started"
        assert [v.version for v in status["versions"]] == ["worse", "two", "one"]
    finally:
        store.close()
