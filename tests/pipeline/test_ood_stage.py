"""The pipeline's OOD stage end to end, on the dev (or committed) model and small real sets."""

import json

import numpy as np
import pytest

from bench.dev import dev_embeddings
from classifier.dataset import DataConfig, Dataset
from bundle.embedding import Embedding
from bundle.images import Preprocessing
from bundle.labels import CLASS_NAMES
from ood import load_detector
from pipeline.ood_evaluation import METHODS
from pipeline.context import BuildContext
from pipeline.ood_stage import OODConfig, run
from service.bundle import Bundle
from bundle.files import OOD_FILE

PER_CLASS = 200  # as tests/ood/conftest.py: the same cached features


@pytest.fixture(scope="module")
def stage_inputs(model_path, shared_data):
    """(bundle, dataset, embeddings) with real features of the data folder's pictures."""
    import dataclasses

    features = dev_embeddings(PER_CLASS, model_path, data_dir=shared_data)
    # The model's own bundle folder (it embeds the OOD sets), as a copy the stage may set parts on.
    bundle = dataclasses.replace(Bundle.load(model_path.parent, with_fallback=False), ood_detector=None, noise_gate=None,
                                 class_names=CLASS_NAMES, preprocessing=Preprocessing())
    splits = {name: features[name] for name in ("train", "val", "test")}
    # The stage reads labels and flags from the dataset and features from the embeddings only.
    none = np.zeros((0, 32, 32, 3), np.uint8)
    dataset = Dataset(
        x_train=none, y_train=splits["train"]["labels"], x_val=none, y_val=splits["val"]["labels"],
        x_test=none, y_test=splits["test"]["labels"], class_names=CLASS_NAMES,
        train_augmented=np.zeros(len(splits["train"]["labels"]), bool),
    )
    embeddings = {name: Embedding(s["features"], s["logits"], s["logits"], s["ood_features"]) for name, s in splits.items()}
    return bundle, dataset, embeddings


def context(stage_inputs, data_dir, out_dir):
    bundle, dataset, embeddings = stage_inputs
    return BuildContext(bundle, dataset, embeddings, out_dir, DataConfig(data_dir=str(data_dir)), str(data_dir))


def test_the_stage_writes_detector_config_and_figure_and_reports_the_table(stage_inputs, shared_data, tmp_path):
    config = OODConfig(n_estimators=50, near_ood_limit=300, far_ood_limit=300)
    metrics = run(context(stage_inputs, shared_data, tmp_path), config)

    assert set(metrics["table"]) == set(METHODS)
    for row in metrics["table"].values():
        for name in ("near_ood", "far_ood", "photos_ood"):
            assert 0.0 <= row[name]["auroc"] <= 1.0 and 0.0 <= row[name]["fpr_at_95_tpr"] <= 1.0
        assert 0.0 <= row["id_refusal_rate"] <= 1.0 and "photos_ours_refusal_rate" in row
    assert metrics["chosen"] in METHODS and metrics["reason"]
    assert metrics["sizes"]["near_ood"] == 300 and metrics["sizes"]["far_ood"] == 300
    assert metrics["skipped"] == []  # every OOD set of the data folder was there
    json.dumps(metrics)  # goes into metrics.json as it is

    detector = load_detector(tmp_path / OOD_FILE)
    assert type(detector).__name__ == metrics["detector_class"]
    assert detector.tpr_ == config.tpr
    assert stage_inputs[0].ood_detector is not None  # the bundle being built has it at once
    assert json.loads((tmp_path / "ood_config.json").read_text())["near_ood_limit"] == 300
    assert (tmp_path / "figures" / "ood_histograms.png").stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["figures", OOD_FILE, "ood_config.json"])
    # Features only, no pictures: no noise gate (the pipeline test builds one from pictures).
    assert "skipped" in metrics["noise_gate"]


def test_the_table_splits_near_ood_auroc_by_the_source_of_the_test_pictures(stage_inputs, shared_data, tmp_path):
    config = OODConfig(n_estimators=50, near_ood_limit=300, far_ood_limit=300, use_photos=False,
                       methods=("feature_norm",), default_method="feature_norm")
    row = run(context(stage_inputs, shared_data, tmp_path), config)["table"]["feature_norm"]
    by_group = row["near_ood"]["auroc_by_id_group"]
    assert set(by_group) == {"cifar10_test", "extra_classes_test"}
    # AUROC is the share of (ID, OOD) pairs ranked right, so the whole split's is the two parts'
    # weighted by their sizes.
    labels = stage_inputs[1].y_test
    cifar10, extra = np.sum(labels < 10), np.sum(labels >= 10)
    mixed = (by_group["cifar10_test"] * cifar10 + by_group["extra_classes_test"] * extra) / len(labels)
    assert row["near_ood"]["auroc"] == pytest.approx(mixed)
    assert 0.0 <= row["cifar10_test_refusal_rate"] <= 1.0 and 0.0 <= row["extra_classes_test_refusal_rate"] <= 1.0
    overall = (row["cifar10_test_refusal_rate"] * cifar10 + row["extra_classes_test_refusal_rate"] * extra) / len(labels)
    assert overall == pytest.approx(row["id_refusal_rate"])


def test_without_a_data_folder_the_default_is_shipped_unmeasured(stage_inputs, tmp_path):
    config = OODConfig(n_estimators=20, methods=("feature_norm", "forests_ash_norm"))
    bundle, dataset, embeddings = stage_inputs
    metrics = run(BuildContext(bundle, dataset, embeddings, tmp_path, DataConfig(), None), config)
    assert metrics["table"] == {} and metrics["chosen"] == config.default_method and "unmeasured" in metrics["reason"]
    assert len(metrics["skipped"]) == 3  # Tiny ImageNet, MNIST and the photos, each named
    assert type(load_detector(tmp_path / OOD_FILE)).__name__ == "CombinedScore"  # the forests, ASH-S and the length
