"""The whole build on a little data: every stage runs and the bundle serves predictions."""

import json

import numpy as np
import pytest

from classifier.bundle import Bundle
from pipeline.build import STAGES, build, smoke_config
from service.predictor import Predictor


@pytest.fixture(scope="module")
def smoke_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    # A report from another command (the model ladder) in the bundle that the build replaces.
    (root / "bundle" / "reports").mkdir(parents=True)
    (root / "bundle" / "reports" / "ladder.md").write_text("# Model ladder\n")
    metrics = build(smoke_config(root / "bundle", root / "runs"), verbose=0)
    return root / "bundle", metrics


def test_every_artefact_is_written(smoke_bundle):
    directory, metrics = smoke_bundle
    for name in ("bundle.json", "model.keras", "config.json", "metrics.json", "history.json",
                 "ood_detector.joblib", "noise_gate.json", "gallery.npz", "monitoring_reference.json", "fallback"):
        assert (directory / name).exists(), name
    for figure in ("confusion_matrix.png", "curves.png", "tsne.png", "predictions.png",
                   "errors_kmeans.png", "errors_dbscan.png", "activations.png", "filters.png"):
        assert (directory / "figures" / figure).stat().st_size > 1000, figure
    assert set(STAGES) <= set(json.loads((directory / "metrics.json").read_text()))
    assert not directory.with_name(directory.name + ".building").exists()
    assert (directory / "reports" / "ladder.md").read_text() == "# Model ladder\n", "reports outlive a rebuild"


def test_the_bundle_loads_once_and_predicts(smoke_bundle, photo_paths):
    directory, _ = smoke_bundle
    bundle = Bundle.load(directory)
    assert bundle.ood_detector is not None and bundle.gallery is not None and bundle.noise_gate is not None
    assert bundle.fallback is not None and bundle.monitoring_reference is not None
    prediction = Predictor(bundle).predict(photo_paths[0])
    assert prediction.answered_by in ("cnn", "fallback", "refused")
    assert len(prediction.top_classes) == 3
    np.testing.assert_allclose(sum(p for _, p in prediction.top_classes) <= 1.0 + 1e-6, True)


def test_config_is_saved_beside_the_artefacts(smoke_bundle):
    directory, _ = smoke_bundle
    config = json.loads((directory / "config.json").read_text())
    assert config["train"]["preset"] == "fastnet_small" and config["train"]["data"]["limit_per_class"] == 40
    manifest = json.loads((directory / "bundle.json").read_text())
    assert manifest["preprocessing"] == {"height": 32, "width": 32, "channels": 3, "scale": 1 / 255, "resample": "lanczos", "jpeg_quality": 75}
