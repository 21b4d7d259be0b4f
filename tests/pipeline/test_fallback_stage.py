"""The pipeline's fallback stage: the fallback folder, and the answer rule tuned for the CNN
(pipeline.fallback_stage, pipeline.answer_tuning), on the real TFLite models and WordNet files."""

import dataclasses
import json

import pytest

from classifier.dataset import DataConfig, prepare_dataset
from bundle.images import Preprocessing, open_image
from classifier.label_map import build_label_map
from bundle.labels import CLASS_NAMES
from fallback import CONFIG_FILE, load_fallback
from pipeline.answer_tuning import CNN_THRESHOLDS
from tests.fallback.conftest import MOBILENET_V1_TINY
from pipeline.context import BuildContext
from pipeline.fallback_stage import GRID_FILE, FallbackConfig, run
from service.answer import RULE_FILE, AnswerRule
from service.bundle import Bundle


def bare_bundle(directory):
    """A bundle with only its class names: all the untuned stage reads of it."""
    return Bundle(directory=directory, cnn=None, class_names=CLASS_NAMES, preprocessing=Preprocessing(), manifest={})


def test_the_stage_writes_a_folder_that_loads_and_runs(tmp_path, shared_data, data_path, example_photos):
    bundle = bare_bundle(tmp_path)
    context = BuildContext(bundle, None, {}, tmp_path, DataConfig(data_dir=str(shared_data)), str(shared_data))
    metrics = run(context, FallbackConfig(model_file=MOBILENET_V1_TINY, tune=False, rule=AnswerRule(0.7, 0.4)))
    folder = tmp_path / "fallback"
    for name in (MOBILENET_V1_TINY, "imagenet_labels.txt", "label_map.txt", "label_map.json", "NOTICE", CONFIG_FILE):
        assert (folder / name).is_file(), name
    assert "Apache License" in (folder / "NOTICE").read_text()
    # The thresholds live in the bundle's answer_rule.json now, not in the fallback's config.
    assert "policy" not in json.loads((folder / CONFIG_FILE).read_text())
    saved = json.loads((tmp_path / RULE_FILE).read_text())
    assert saved == {"cnn_confidence_threshold": 0.7, "fallback_mass_threshold": 0.4, "thumbnail_cnn_threshold": 0.5,
                     "unsure_mass_threshold": 0.5, "teach_mass_threshold": 1.0, "tuning": None}
    assert AnswerRule.load(tmp_path) == AnswerRule(0.7, 0.4) == bundle.answer_rule
    assert metrics["rule"] == AnswerRule(0.7, 0.4).to_dict() and metrics["skipped"] == []
    assert metrics["imagenet_classes_per_class"]["dog"] == 119 and metrics["imagenet_classes_none"] == 704

    fallback = load_fallback(folder)
    assert bundle.fallback is not None  # the bundle being built has it at once
    assert fallback.label_map == build_label_map(data_path("wordnet"))
    pictures = [open_image(example_photos["wall_clock"]), open_image(example_photos["pug"])]
    masses = fallback.class_masses(pictures)
    assert masses.shape == (2, len(CLASS_NAMES)) and (masses >= 0).all() and (masses.sum(axis=1) <= 1 + 1e-5).all()
    assert len(fallback.analyse(pictures[1], k=3).top) == 3


def test_without_the_model_files_the_rule_keeps_its_defaults(tmp_path):
    # No data folder at all: no fallback folder, and a rule file that says why it is untuned.
    context = BuildContext(bare_bundle(tmp_path), None, {}, tmp_path, DataConfig(), None)
    metrics = run(context, FallbackConfig())
    assert "ImageNet fallback" in metrics["skipped"][0]
    assert not (tmp_path / "fallback").exists()
    assert AnswerRule.load(tmp_path) == AnswerRule()
    assert json.loads((tmp_path / RULE_FILE).read_text())["tuning"]["tuned"] is False


def test_the_stage_tunes_the_rule_for_the_cnn(tmp_path, shared_data, cnn_bundle):
    data = DataConfig(data_dir=str(shared_data), limit_per_class=40, cache_dir=str(tmp_path / "data"))
    # A copy: the stage sets the fallback and the rule on the bundle it builds.
    bundle = dataclasses.replace(cnn_bundle, directory=tmp_path)
    context = BuildContext(bundle, prepare_dataset(data), {}, tmp_path, data, str(shared_data))
    config = FallbackConfig(model_file=MOBILENET_V1_TINY, cache_dir=str(tmp_path / "cache"))
    metrics = run(context, config)
    assert cnn_bundle.fallback is None
    tuning = metrics["tuning"]
    assert tuning["tuned"] and tuning["ood_detector"]  # the shipped bundle has a detector
    # Photos: the tune half of imagenet-samples, never the bench half.
    photos = tuning["photos"]
    assert "tune half" in photos["set"] and "250 photos" in photos["set"]
    tuned = photos["tuned_metrics"]
    assert tuned["pictures_ours"] + tuned["pictures_none"] == 250
    grid = json.loads((tmp_path / GRID_FILE).read_text())
    assert len(grid["photos"]) > 100
    qualifying = [row for row in grid["photos"]
                  if row["answer_error_ours"] <= config.max_answer_error and row["refused_none"] >= config.min_refused_others]
    if qualifying:  # the most of ours answered right among the thresholds within the stated risk
        assert tuned["accuracy_ours"] == pytest.approx(max(row["accuracy_ours"] for row in qualifying))
        assert tuned["answer_error_ours"] <= config.max_answer_error and tuned["refused_none"] >= config.min_refused_others
    assert "CNN top probability (calibrated)" in photos["risk_coverage"]
    # Thumbnails: one row per candidate; the chosen one answers the most right within its limits.
    thumbnails = grid["thumbnails"]
    assert [row["thumbnail_cnn_threshold"] for row in thumbnails] == [float(t) for t in CNN_THRESHOLDS]
    chosen = next(row for row in thumbnails if row["thumbnail_cnn_threshold"] == metrics["rule"]["thumbnail_cnn_threshold"])
    within = [row for row in thumbnails
              if row["wrong"] <= config.thumbnail_max_wrong and row["refused_others"] >= config.thumbnail_min_refused_others]
    if within:
        assert chosen["right"] == pytest.approx(max(row["right"] for row in within))
    assert AnswerRule.load(tmp_path) == AnswerRule(**metrics["rule"]) == bundle.answer_rule
    assert list((tmp_path / "cache").glob("imagenet-probabilities-*.npy"))  # the fallback's outputs are cached
