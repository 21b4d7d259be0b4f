"""The bundle folder: what Bundle.load reads from the committed assets/, and what it refuses."""

import json
from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

from classifier.dataset import DataConfig
from bundle.images import Preprocessing
from service.answer import RULE_FILE, AnswerRule
from service.bundle import Bundle
from bundle.files import GALLERY_FILE, MANIFEST, MONITORING_FILE, NOISE_GATE_FILE, OOD_FILE, BundleUnavailable
from pipeline.bundle_files import data_config_from_json, recorded_data_config, write_manifest
from tests.conftest import REPO

ASSETS = REPO / "assets"


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load(ASSETS)


def test_the_committed_bundle_loads_every_artefact(bundle):
    manifest = json.loads((ASSETS / MANIFEST).read_text())
    assert bundle.class_names == tuple(manifest["class_names"]) and len(bundle.class_names) == 13
    assert bundle.preprocessing == Preprocessing.from_dict(manifest["preprocessing"])
    assert bundle.input_shape == (32, 32, 3)
    for file_name in (OOD_FILE, NOISE_GATE_FILE, GALLERY_FILE, MONITORING_FILE):
        assert (ASSETS / file_name).exists(), file_name
    assert bundle.ood_detector is not None and bundle.noise_gate is not None
    assert bundle.gallery is not None and bundle.monitoring_reference is not None
    assert bundle.fallback is not None and bundle.fallback.class_names == bundle.class_names
    assert bundle.metrics == json.loads((ASSETS / "metrics.json").read_text())


def test_the_answer_rule_is_the_bundles_own(bundle):
    # A bundle keeps its tuned thresholds in answer_rule.json.
    stored = json.loads((ASSETS / RULE_FILE).read_text())
    assert bundle.answer_rule == AnswerRule.from_dict(stored)
    assert bundle.answer_rule != AnswerRule(), "the shipped rule is tuned, not the defaults"


def test_a_bundle_without_a_rule_file_gets_the_defaults_and_one_of_the_old_layout_a_plain_rebuild(tmp_path):
    assert AnswerRule.load(tmp_path) == AnswerRule()
    old = tmp_path / "old"
    (old / "fallback").mkdir(parents=True)
    (old / "fallback" / "fallback_config.json").write_text(json.dumps({"policy": {"cnn_confidence_threshold": 0.9}}))
    (old / MANIFEST).write_text((ASSETS / MANIFEST).read_text())
    with pytest.raises(BundleUnavailable, match="older version.*rebuild it"):
        Bundle.load(old, with_fallback=False)
    AnswerRule(0.7, 0.4, 0.3).save(tmp_path, tuning={"why": "test"})
    assert AnswerRule.load(tmp_path) == AnswerRule(0.7, 0.4, 0.3)
    with pytest.raises(ValueError, match="cnn_confidence_threshold must lie in"):
        AnswerRule(cnn_confidence_threshold=1.5)


def test_without_the_fallback(cnn_bundle, bundle):
    assert cnn_bundle.fallback is None
    assert cnn_bundle.class_names == bundle.class_names and cnn_bundle.ood_detector is not None


def test_preprocess_and_embed_a_real_photo(bundle, example_photos):
    path = example_photos["airliner"]
    photo = Image.open(path)
    x = bundle.preprocess([path, path.read_bytes(), photo])
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    # A path, the file's bytes and the decoded picture are one picture to the model.
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])
    out = bundle.embed(x)
    assert out.probabilities.shape == (3, 13) and np.allclose(out.probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert out.logits.shape == (3, 13) and out.features.ndim == 2 and len(out.features) == 3
    assert np.array_equal(np.argmax(out.logits, axis=1), np.argmax(out.probabilities, axis=1))
    # A uint8 batch is scaled the same way as the float batch.
    pixels = np.round(x * 255).astype(np.uint8)
    assert np.allclose(bundle.embed(pixels).probabilities, out.probabilities, atol=1e-5)
    assert bundle.class_names[int(np.argmax(out.probabilities[0]))] == "airplane"


def test_a_folder_that_is_no_bundle_is_refused_plainly(tmp_path):
    with pytest.raises(BundleUnavailable, match="is not a bundle folder"):
        Bundle.load(tmp_path)
    with pytest.raises(BundleUnavailable, match="No bundle at"):
        Bundle.load(tmp_path / "missing" / "folder")


def test_a_hub_bundle_that_cannot_be_fetched_is_refused_plainly():
    # Offline here; online, the repository does not exist. Either way: a plain message, no traceback.
    with pytest.raises(BundleUnavailable, match="from the Hugging Face Hub"):
        Bundle.load("no-such-owner-honest/no-such-bundle")


def test_write_manifest_round_trips(tmp_path, bundle):
    preprocessing = Preprocessing(height=28, width=28, channels=1, jpeg_quality=None)
    write_manifest(tmp_path, ("0", "1"), preprocessing, {"data": "digits"})
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["class_names"] == ["0", "1"] and manifest["data"] == "digits"
    assert Preprocessing.from_dict(manifest["preprocessing"]) == preprocessing
    assert set(manifest["versions"]) == {"keras", "scikit-learn", "numpy"}


def test_a_recorded_data_config_round_trips_through_config_json(tmp_path):
    # What pipeline.build writes: asdict(BuildConfig) as JSON, where tuples become lists.
    config = DataConfig(data_dir="/data", limit_per_class=40, extra_train_folders=("state/corrections",),
                        preprocessing=Preprocessing(jpeg_quality=75))
    (tmp_path / "config.json").write_text(json.dumps({"train": {"data": asdict(config)}}))
    assert recorded_data_config(tmp_path) == config
    with pytest.raises(ValueError, match=r"DataConfig does not know: \['cifar10_archive'\]"):
        data_config_from_json({**asdict(config), "cifar10_archive": "/old/layout.tgz"})
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        recorded_data_config(tmp_path / "nothing")


def test_the_shipped_bundle_records_the_data_it_was_trained_on(bundle):
    # bench.answer_snapshot and the errors stage rebuild the bundle's splits from this.
    config = recorded_data_config(ASSETS)
    assert config.preprocessing == bundle.preprocessing
    assert config.source is None, "the shipped bundle is trained on our 13 classes"
