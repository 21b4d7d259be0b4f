"""classifier.export on the committed model: the LiteRT file the server runs answers as the float32
Keras model does, with the pooled earlier layers the OOD detector reads beside the features.
Needs no data folder: the pictures are the gallery's own (assets/gallery.npz)."""

import json

import numpy as np
import pytest

from bundle.embedding import OOD_LAYERS, embed
from classifier.export import export_litert, float32_model, keras_outputs


@pytest.fixture(scope="module")
def pictures(cnn_bundle):
    return cnn_bundle.gallery.thumbnails_[:40]


def test_the_bundle_runs_what_keras_computes(cnn_bundle, keras_model, pictures):
    served = embed(cnn_bundle.cnn, pictures)
    expected = embed(keras_outputs(keras_model), pictures)
    np.testing.assert_allclose(served.probabilities, expected.probabilities, atol=1e-4)
    np.testing.assert_allclose(served.ood_features, expected.ood_features, atol=1e-3)
    # The saved model's own output is the probabilities the product reads.
    direct = np.asarray(keras_model.predict_on_batch(pictures.astype(np.float32) / 255.0))
    np.testing.assert_allclose(served.probabilities, direct, atol=1e-4)


def test_the_pooled_layers_sit_beside_the_features(cnn_bundle, keras_model, pictures):
    out = embed(cnn_bundle.cnn, pictures)
    widths = [keras_model.get_layer(name).output.shape[-1] for name in OOD_LAYERS]
    assert out.ood_features.shape == (len(pictures), sum(widths) + out.features.shape[1] + 1)
    # Each part has length 1, the last part is the features' direction, then their length.
    edges = np.cumsum([0, *widths, out.features.shape[1]])
    for start, end in zip(edges[:-1], edges[1:]):
        np.testing.assert_allclose(np.linalg.norm(out.ood_features[:, start:end], axis=1), 1.0, atol=1e-4)
    length = np.linalg.norm(out.features, axis=1)
    np.testing.assert_allclose(out.ood_features[:, -1], length, rtol=1e-5)


def test_the_committed_model_computes_in_float32(keras_model):
    policies = {layer.dtype_policy.name for layer in keras_model.layers}
    assert policies == {"float32"}, policies
    assert "bfloat16" not in json.dumps(float32_model(keras_model).get_config())


def test_a_model_without_the_earlier_layers_exports_its_features(tmp_path, pictures):
    import keras

    from bundle.litert import CNNRuntime

    inputs = keras.Input((32, 32, 3))
    features = keras.layers.Identity(name="features")(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(inputs)))
    logits = keras.layers.Dense(13, name="logits")(features)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))
    export_litert(model, tmp_path / "model.tflite")
    out = embed(CNNRuntime(tmp_path / "model.tflite"), pictures)
    np.testing.assert_allclose(out.probabilities, embed(keras_outputs(model), pictures).probabilities, atol=1e-5)
    # Just the features: their direction and their length.
    length = np.linalg.norm(out.features, axis=1)
    np.testing.assert_allclose(out.ood_features, np.c_[out.features / length[:, None], length], rtol=1e-5)
