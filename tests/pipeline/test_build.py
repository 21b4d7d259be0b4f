"""The whole build on a little data: every stage runs and the bundle serves predictions."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.build import STAGES
from pipeline.fallback_stage import FallbackConfig
from service.answer import CNN, FALLBACK, RULE_FILE, AnswerRule
from service.bundle import Bundle
from service.predictor import Predictor

# Real photos of our classes, as the build copies them into the bundle's examples/ (from the data
# folder's imagenet-samples/): the fallback is an ImageNet model, so it knows these well.
REPO = Path(__file__).resolve().parents[2]
PHOTOS_OF_OUR_CLASSES = {"container_ship": "ship", "airliner": "airplane", "banana": "fruit_and_vegetables"}


def test_every_artefact_is_written(smoke_bundle):
    directory, metrics = smoke_bundle
    for name in ("bundle.json", "model.keras", "config.json", "metrics.json", "history.json", RULE_FILE,
                 "ood_detector.joblib", "ood_config.json", "noise_gate.json", "gallery.npz", "monitoring_reference.json", "fallback"):
        assert (directory / name).exists(), name
    for figure in ("confusion_matrix.png", "curves.png", "tsne.png", "predictions.png",
                   "errors_kmeans.png", "errors_dbscan.png", "activations.png", "filters.png"):
        assert (directory / "figures" / figure).stat().st_size > 1000, figure
    for photo in PHOTOS_OF_OUR_CLASSES:
        assert (directory / "examples" / f"{photo}.jpg").stat().st_size > 1000, photo
    assert set(STAGES) <= set(json.loads((directory / "metrics.json").read_text()))
    assert not directory.with_name(directory.name + ".building").exists()
    assert (directory / "reports" / "ladder.md").read_text() == "# Model ladder\n", "reports outlive a rebuild"


def test_with_the_whole_data_folder_nothing_is_skipped(smoke_bundle):
    _, metrics = smoke_bundle
    assert metrics["skipped"] == []
    sizes = metrics["ood"]["sizes"]
    assert sizes["near_ood"] == 300 and sizes["far_ood"] == 300, "the smoke config's limits"
    assert sizes["photos_ood"] > 0 and sizes["photos_ours"] > 0


def test_the_answer_rule_is_written_at_the_bundle_root_and_loads(smoke_bundle):
    directory, metrics = smoke_bundle
    stored = json.loads((directory / RULE_FILE).read_text())
    # The smoke build does not tune: the rule it was given is the one written, and said so.
    assert stored["tuning"] is None
    rule = AnswerRule.load(directory)
    assert rule == FallbackConfig().rule
    assert rule.to_dict() == metrics["fallback"]["rule"] == {k: v for k, v in stored.items() if k != "tuning"}
    assert Bundle.load(directory, with_fallback=False).answer_rule == rule


def test_the_bundle_loads_once_and_answers_real_photos_of_our_classes(smoke_bundle):
    directory, _ = smoke_bundle
    bundle = Bundle.load(directory)
    assert bundle.ood_detector is not None and bundle.gallery is not None and bundle.noise_gate is not None
    assert bundle.fallback is not None and bundle.monitoring_reference is not None
    predictor = Predictor(bundle)
    for photo, expected in PHOTOS_OF_OUR_CLASSES.items():
        prediction = predictor.predict(directory / "examples" / f"{photo}.jpg")
        assert prediction.noise_correlation > bundle.noise_gate.threshold_, f"{photo}: a photo is no static"
        assert prediction.answered_by in (CNN, FALLBACK), f"{photo} was refused: {prediction.detail}"
        assert prediction.label in bundle.class_names
        if prediction.answered_by == CNN:
            # The CNN answers only with its own best class, and only when sure enough.
            assert prediction.label == prediction.top_classes[0][0]
            assert prediction.confidence >= bundle.answer_rule.cnn_confidence_threshold
        else:
            # The ImageNet model knows these photos: its answer is the right class.
            assert prediction.label == expected, (photo, prediction.label, prediction.imagenet_top)
            assert prediction.confidence >= bundle.answer_rule.fallback_mass_threshold
        assert len(prediction.top_classes) == 3
        assert sum(p for _, p in prediction.top_classes) <= 1.0 + 1e-6
        np.testing.assert_allclose(prediction.cnn_probabilities.sum(), 1.0, rtol=1e-5)


def test_config_is_saved_beside_the_artefacts(smoke_bundle, shared_data):
    directory, _ = smoke_bundle
    config = json.loads((directory / "config.json").read_text())
    assert config["train"]["preset"] == "fastnet_small" and config["train"]["data"]["limit_per_class"] == 40
    assert config["train"]["data"]["data_dir"] == config["data_dir"] == str(shared_data)
    manifest = json.loads((directory / "bundle.json").read_text())
    assert manifest["preprocessing"] == {"height": 32, "width": 32, "channels": 3, "scale": 1 / 255, "resample": "lanczos", "jpeg_quality": 75}


def test_the_command_line_shows_each_stage_and_logs_one_mlflow_run(smoke_bundle, shared_data, tmp_path):
    pytest.importorskip("mlflow", reason="the MLflow extra (requirements-mlflow.txt)")
    directory, _ = smoke_bundle
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.build", "--smoke", "--mlflow", "--stages", "ood", "--data-dir", str(shared_data),
         "--out", str(tmp_path / "bundle"), "--runs", str(directory.parent / "runs")],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "MLFLOW_TRACKING_URI": store},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stages = [line for line in result.stdout.splitlines() if " stage: " in line]
    assert [line.split(" stage: ")[1].split(" (")[0].split(",")[0] for line in stages] == [
        "data", "training", "embedding the splits", "evaluation", "ood", "bundle"], stages
    assert stages[0].startswith("[build] [....") and stages[-1].startswith("[build] [####")
    import mlflow

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1
    assert runs.iloc[0]["params.train.preset"] == "fastnet_small"
    assert runs.iloc[0]["metrics.classifier.test_accuracy"] > 0
