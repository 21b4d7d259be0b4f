"""A tiny real training run, end to end, and the bundle round trip (service.bundle)."""

import json
from dataclasses import asdict

import numpy as np
import pytest

from classifier.dataset import DataConfig, prepare_dataset
from classifier.models import PRESETS, build_model
from classifier.train import TrainConfig, load_or_train
from service.bundle import Bundle
from bundle.files import BundleUnavailable
from pipeline.bundle_files import data_config_from_json, export_model, push_to_hub, write_manifest


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
    runs = tmp_path_factory.mktemp("runs")
    data = DataConfig(data_dir=str(shared_data), limit_per_class=16, cache_dir=str(runs / "cache"))
    config = TrainConfig(preset="fastnet_small", epochs=2, batch_size=32, data=data)
    dataset = prepare_dataset(config.data)
    model, history, run_dir = load_or_train(config, dataset, runs)
    return config, dataset, model, history, run_dir


def test_training_writes_model_config_and_history(tiny_run):
    config, _, _, history, run_dir = tiny_run
    for name in ("model.keras", "config.json", "history.json", "history.csv"):
        assert (run_dir / name).exists(), name
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["preset"] == "fastnet_small" and saved["data"]["limit_per_class"] == 16
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert history["fit_seconds"] > 0 and "CPU cores" in history["machine"]


def test_a_finished_run_is_reused_not_retrained(tiny_run):
    config, dataset, model, _, run_dir = tiny_run
    stamp = (run_dir / "model.keras").stat().st_mtime_ns
    again, _, again_dir = load_or_train(config, dataset, run_dir.parent)
    assert again_dir == run_dir and (run_dir / "model.keras").stat().st_mtime_ns == stamp
    x = dataset.x_test[:8].astype(np.float32) / 255
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_bundle_round_trip_gives_identical_predictions(tiny_run, tmp_path, photo_paths):
    _, dataset, model, _, _ = tiny_run
    exported = export_model(model, tmp_path)  # model.keras in float32, and model.tflite the server runs
    write_manifest(tmp_path, dataset.class_names, DataConfig().preprocessing)
    bundle = Bundle.load(tmp_path)
    assert bundle.class_names == dataset.class_names and bundle.input_shape == (32, 32, 3)
    x = bundle.preprocess(photo_paths[:5] + photo_paths[-5:])
    out = bundle.embed(x)
    np.testing.assert_allclose(out.probabilities, np.asarray(exported(x, training=False)), atol=1e-5)
    assert out.features.shape[0] == 10 and out.logits.shape == (10, 13)
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # Batched predict() and the direct call agree.
    big = bundle.embed(np.repeat(x, 10, axis=0))
    np.testing.assert_allclose(big.probabilities[::10], out.probabilities, atol=1e-5)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_names_the_layers_the_product_reads(preset):
    model = build_model(preset, (32, 32, 3), 13)
    for name in ("features", "logits", "probabilities"):
        model.get_layer(name)
    assert model.output_shape == (None, 13)


def test_a_folder_without_a_bundle_is_refused_clearly(tmp_path):
    with pytest.raises(BundleUnavailable, match="not a bundle folder"):
        Bundle.load(tmp_path)
    with pytest.raises(BundleUnavailable, match="No bundle"):
        Bundle.load(tmp_path / "missing" / "deeper")


def test_hub_bundle_offline_fails_clearly():
    with pytest.raises(BundleUnavailable, match="Hugging Face Hub.*offline"):
        Bundle.load("nobody-here/no-such-bundle")


def test_push_to_hub_offline_fails_clearly(tmp_path):
    with pytest.raises(BundleUnavailable, match="Could not push"):
        push_to_hub(tmp_path, "nobody-here/no-such-bundle", token="hf_not_a_real_token")


def test_data_config_round_trips_through_json_and_refuses_unknown_settings(tmp_path):
    config = DataConfig(data_dir=str(tmp_path), limit_per_class=7, extra_train_folders=("state/feedback",))
    assert data_config_from_json(json.loads(json.dumps(asdict(config)))) == config
    with pytest.raises(ValueError, match="does not know.*colour_jitter"):
        data_config_from_json({**asdict(config), "colour_jitter": 0.1})
