"""The learning step and the gate on the smoke bundle: real accepted pictures in a real store, a
new version beside the champion, and a challenger taught wrong labels refused."""

import json

import numpy as np
import pytest

from bundle.labels import CLASS_NAMES
from pipeline.gate import GATE_FILE
from pipeline.learn import main as learn_main
from pipeline.learning_material import LEARNING_FILE, is_held_out
from service.bundle import Bundle
from service.corrections import CorrectionStore
from service.registry import BundleRegistry, RegistryError


def store_with(path, photos, label_of, source_of=lambda index: "visitor"):
    """A corrections store holding one accepted vote per photo."""
    store = CorrectionStore(path, CLASS_NAMES)
    for index, photo in enumerate(photos):
        data = photo.read_bytes()
        import hashlib

        vote = store.vote(data, hashlib.sha256(data).hexdigest()[:32], label_of(photo), None, "refused", f"voter-{index}",
                          "s", source=source_of(index))
        store.review(vote.id, accept=True)
    store.close()
    return path


@pytest.fixture(scope="module")
def photos_of_ours(shared_data):
    """(path, our class) of the tune half's photos of our classes: learning material, never measured."""
    from classifier.label_map import build_label_map
    from classifier.ood_sets import imagenet_photo_paths, photo_wnid
    from classifier.wordnet import read_wordnet
    from pipeline.answer_tuning import expected_classes

    paths = imagenet_photo_paths(shared_data, "ours", half="tune")[:30]
    targets = expected_classes([photo_wnid(p) for p in paths], build_label_map(shared_data / "wordnet"),
                               read_wordnet(shared_data / "wordnet").imagenet_wnids)
    return [(path, CLASS_NAMES[int(target)]) for path, target in zip(paths, targets)]


@pytest.fixture(scope="module")
def learnt(smoke_bundle, photos_of_ours, shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("learn")
    labels = dict(photos_of_ours)
    store = store_with(root / "corrections.sqlite", list(labels), labels.get,
                       source_of=lambda index: "fallback" if index % 3 == 0 else "visitor")
    version_dir = learn_main(["--bundle", str(smoke_bundle[0]), "--corrections", str(store), "--out", str(root / "bundles"),
                              "--data-dir", str(shared_data), "--gate"])
    return version_dir, store, root


def test_a_new_version_is_written_beside_the_champion_and_says_what_it_learnt(learnt, smoke_bundle, photos_of_ours):
    version_dir, _, root = learnt
    champion = Bundle.load(smoke_bundle[0])
    bundle = Bundle.load(version_dir)
    assert version_dir.parent == root / "bundles" and bundle.version == version_dir.name
    assert bundle.manifest["parent"] == champion.version and bundle.manifest["temperature"] > 0
    learning = json.loads((version_dir / LEARNING_FILE).read_text())
    trained, held = set(learning["pictures"]), set(learning["held_out_pictures"])
    assert trained and not trained & held and len(trained) + len(held) == len(photos_of_ours)
    assert all(is_held_out(h, 0.2) for h in held) and not any(is_held_out(h, 0.2) for h in trained)
    counts = learning["learnt_from"]
    assert set(counts) == {"visitor", "fallback"} and sum(sum(c.values()) for c in counts.values()) == len(trained)
    # The refitted stages wrote their files, and the new CNN differs from the champion's.
    assert (version_dir / "ood_detector.joblib").stat().st_mtime > (smoke_bundle[0] / "ood_detector.joblib").stat().st_mtime
    x = bundle.preprocess([path for path, _ in photos_of_ours[:4]])
    assert not np.allclose(bundle.embed(x).logits, champion.embed(x).logits)
    metrics = json.loads((version_dir / "metrics.json").read_text())
    assert metrics["learning"]["parent"] == champion.version and "errors" not in metrics


def test_the_gate_measures_both_on_the_same_pictures_and_registers_its_verdict(learnt, smoke_bundle):
    version_dir, store, _ = learnt
    gate = json.loads((version_dir / GATE_FILE).read_text())
    rows = {row["row"]: row for row in gate["rows"]}
    assert {"cifar10_accuracy", "photos_right", "near_ood_auroc", "held_out_cnn_top1"} <= set(rows)
    assert all(row["champion"] is not None for key, row in rows.items() if key != "held_out_cnn_top1")
    assert gate["passed"] == (not any(row["failed"] for row in rows.values())) and gate["sets"]["photos"] == 250
    registry = BundleRegistry(store)
    try:
        champion = Bundle.load(smoke_bundle[0]).version
        assert registry.serving() == (champion, None)  # the first champion is registered; nothing promoted by --gate
        assert registry.version(version_dir.name).gate["passed"] == gate["passed"]
    finally:
        registry.close()


def test_a_challenger_taught_wrong_labels_is_refused_and_the_champion_keeps_serving(smoke_bundle, photos_of_ours,
                                                                                     shared_data, tmp_path):
    # Every photo of ours labelled with one class that none of them is.
    store = store_with(tmp_path / "corrections.sqlite", [path for path, _ in photos_of_ours] * 1, lambda path: "frog")
    version_dir = learn_main(["--bundle", str(smoke_bundle[0]), "--corrections", str(store), "--out", str(tmp_path / "bundles"),
                              "--data-dir", str(shared_data), "--promote"])
    gate = json.loads((version_dir / GATE_FILE).read_text())
    assert not gate["passed"] and gate["reasons"], gate
    registry = BundleRegistry(store)
    try:
        champion = Bundle.load(smoke_bundle[0]).version
        assert registry.serving() == (champion, None)
        with pytest.raises(RegistryError, match="did not pass the gate"):
            registry.promote(version_dir.name)
    finally:
        registry.close()


def test_the_gate_logs_both_bundles_to_mlflow_and_moves_the_champion_alias(learnt, smoke_bundle, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the MLflow extra is not installed (pip install -r requirements-mlflow.txt)")
    from mlflow.tracking import MlflowClient

    from monitoring.tracking import tracking_uri
    from pipeline.tracking import CHAMPION_ALIAS, GATE_EXPERIMENT, REGISTERED_MODEL, log_gate_runs
    from tests.monitoring.test_tracking import search_runs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    version_dir = learnt[0]
    report = json.loads((version_dir / GATE_FILE).read_text())
    client = MlflowClient(tracking_uri(tmp_path))
    first = log_gate_runs(report, smoke_bundle[0], version_dir, promoted=False, folder=tmp_path)
    assert set(first) == {report["champion"], report["challenger"]} and len(set(first.values())) == 2
    # Before any promotion the alias names the champion; a promotion moves it; a bundle is registered once.
    assert client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS).version == first[report["champion"]]
    assert log_gate_runs(report, smoke_bundle[0], version_dir, promoted=True, folder=tmp_path) == first
    champion = client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS)
    assert champion.version == first[report["challenger"]] and champion.tags["bundle_version"] == version_dir.name
    runs = search_runs(tracking_uri(tmp_path), GATE_EXPERIMENT)
    assert len(runs) == 4 and set(runs["tags.role"]) == {"champion", "challenger"}
    rows = {row["row"]: row for row in report["rows"]}
    challenger_runs = runs[runs["tags.role"] == "challenger"]
    assert np.allclose(challenger_runs["metrics.cifar10_accuracy"], rows["cifar10_accuracy"]["challenger"])
