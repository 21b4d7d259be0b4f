"""Transfer presets: the bundled MobileNetV2's features, a head trained on a few real pictures, and
the online presets' graph (built without weights) and their immediate failure offline."""

import time

import numpy as np
import pytest

from bundle.files import reachable
from bundle.litert import EXTRACTOR_FILE, ModelUnavailable, TFLiteFeatures
from classifier.transfer import (
    TFLITE_FILE_NAME, WEIGHTS_HOST, TransferConfig, TransferUnavailable, build_keras_model, check_weights_reachable, tflite_features,
)


@pytest.fixture(scope="module")
def tflite(data_path):
    return data_path("imagenet-models", TFLITE_FILE_NAME)


@pytest.fixture(scope="module")
def few_pictures(tmp_path_factory, data_path):
    """3 Tiny ImageNet classes: 10 training pictures each, their 50 val pictures each as test."""
    from bench.few_pictures import write_tree
    from classifier.dataset import DataConfig, prepare_dataset
    from bundle.images import Preprocessing

    root = tmp_path_factory.mktemp("few")
    write_tree(data_path("tiny-imagenet-subset.tgz"), root / "data", classes=3, per_class=10, seed=0)
    config = DataConfig(source=str(root / "data"), source_subdir="train", source_test_subdir="test",
                        preprocessing=Preprocessing(64, 64, 3), cache_dir=str(root / "cache"))
    return config, prepare_dataset(config)


def test_features_are_the_1280_wide_average_pool(tflite, few_pictures):
    _, dataset = few_pictures
    extractor = TFLiteFeatures(tflite)
    assert extractor.width == 1280 and extractor.input_size == 224 and "AvgPool" in extractor.tensor_name
    from bundle.images import to_float

    features = extractor.features(to_float(dataset.x_test[:4]))
    assert features.shape == (4, 1280) and features.dtype == np.float32
    assert features.min() >= 0 and 0 < features.max() <= 6.01  # after ReLU6, dequantized
    assert not np.allclose(features[0], features[1])
    # uint8 and [0, 1] floats are the same pictures; grayscale goes to all three channels.
    np.testing.assert_allclose(extractor.features(dataset.x_test[:4]), features)
    gray = dataset.x_test[:2].mean(axis=-1, keepdims=True).astype(np.uint8)
    assert extractor.features(gray).shape == (2, 1280)


def test_missing_tflite_is_a_plain_message(tmp_path):
    with pytest.raises(ModelUnavailable, match="No TFLite model"):
        TFLiteFeatures(tmp_path / TFLITE_FILE_NAME)
    with pytest.raises(TransferUnavailable, match="needs the bundled"):
        tflite_features(TransferConfig(tflite_model=str(tmp_path / TFLITE_FILE_NAME)))


def test_a_head_on_ten_pictures_per_class_beats_chance_by_far(tflite, few_pictures, tmp_path):
    from bundle.embedding import embed
    from classifier.export import keras_outputs
    from classifier.train import TrainConfig, load_or_train

    data_config, dataset = few_pictures
    config = TrainConfig(preset="mobilenet_v2_tflite", data=data_config,
                         transfer=TransferConfig(tflite_model=str(tflite), head_epochs=30))
    model, history, run_dir = load_or_train(config, dataset, tmp_path / "runs", verbose=0)
    assert model.input_shape == (None, 1280) and {"features", "logits", "probabilities"} <= {layer.name for layer in model.layers}
    assert (run_dir / EXTRACTOR_FILE).exists() and (run_dir / TFLITE_FILE_NAME).exists()
    assert len(history["loss"]) == 30 and history["loss"][-1] < history["loss"][0]
    out = embed(keras_outputs(model, run_dir), dataset.x_test)
    assert out.features.shape == (150, 256) and out.probabilities.shape == (150, 3)
    accuracy = float((out.probabilities.argmax(axis=1) == dataset.y_test).mean())
    assert accuracy >= 0.7, accuracy  # chance is 0.33
    again, _, same_dir = load_or_train(config, dataset, tmp_path / "runs", verbose=0)
    assert same_dir == run_dir  # reused by its config hash
    # Exported as a bundle is: the head in LiteRT after the frozen extractor, the same answers.
    from bundle.litert import CNNRuntime
    from classifier.transfer import copy_extractor
    from pipeline.bundle_files import export_model

    export_model(model, tmp_path)
    copy_extractor(run_dir, tmp_path)
    served = embed(CNNRuntime.load(tmp_path), dataset.x_test)
    np.testing.assert_allclose(served.probabilities, out.probabilities, atol=1e-4)


@pytest.mark.parametrize("preset", ["mobilenet_v2", "resnet50"])
def test_online_preset_offline_fails_at_once_and_plainly(preset, tmp_path, monkeypatch):
    if reachable(WEIGHTS_HOST, 443, 3.0):
        pytest.skip(f"{WEIGHTS_HOST} is reachable: this machine is online")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # nothing cached
    started = time.perf_counter()
    with pytest.raises(TransferUnavailable, match="offline.*mobilenet_v2_tflite"):
        build_keras_model(preset, (32, 32, 3), 3)
    assert time.perf_counter() - started < 10
    with pytest.raises(TransferUnavailable):
        check_weights_reachable(preset, timeout=0.5)


@pytest.mark.parametrize("preset, channels", [("mobilenet_v2", 3), ("resnet50", 1)])
def test_online_preset_graph_does_its_own_preprocessing(preset, channels, tmp_path):
    """Built without weights (no network): the fixed first layer is the application's own
    preprocess_input, the product's three layers are there, and the .keras file loads back."""
    import importlib

    import keras

    from bundle.embedding import embed
    from classifier.export import keras_outputs

    model, base = build_keras_model(preset, (32, 32, channels), 4, TransferConfig(base_input_size=32), weights=None)
    assert not base.trainable
    x = np.random.default_rng(0).random((2, 32, 32, channels)).astype(np.float32)
    expected = importlib.import_module(f"keras.applications.{preset}").preprocess_input(np.repeat(x, 3 // channels, axis=-1) * 255.0)
    np.testing.assert_allclose(np.asarray(model.get_layer("preprocess")(x)), expected, rtol=1e-4, atol=1e-3)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    out = embed(keras_outputs(loaded), x)
    assert out.features.shape == (2, 256) and out.probabilities.shape == (2, 4)
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_online_preset_trains_its_head_then_fine_tunes_the_top(few_pictures, tmp_path):
    """The whole online path through classifier.train, on untrained weights (offline): head epochs,
    then fine-tuning epochs with only the top layers of the base unfrozen."""
    import keras

    from classifier.train import TrainConfig, train

    data_config, dataset = few_pictures
    transfer = TransferConfig(weights=None, base_input_size=32, head_epochs=1, fine_tune_epochs=1, fine_tune_layers=5)
    model, history, _ = train(TrainConfig(preset="mobilenet_v2", data=data_config, transfer=transfer), dataset, tmp_path, verbose=0)
    assert len(history["loss"]) == 2 and len(history["val_accuracy"]) == 2
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    trainable = [layer.name for layer in base.layers if layer.trainable]
    assert 0 < len(trainable) <= 5 and trainable == [layer.name for layer in base.layers[-len(trainable):]]
    assert not model.get_layer("preprocess").trainable
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(loaded.predict_on_batch(dataset.x_test[:2] / 255.0), model.predict_on_batch(dataset.x_test[:2] / 255.0), rtol=1e-4, atol=1e-5)
