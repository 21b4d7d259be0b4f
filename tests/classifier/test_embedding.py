"""classifier.embedding on the committed model: the outputs the product reads, the pooled earlier
layers the OOD detector reads, and that batching never mixes one picture's views with another's.
Needs no data folder: the pictures are the gallery's own (assets/gallery.npz)."""

import numpy as np
import pytest

from classifier.embedding import OOD_LAYERS, embed, feature_model


@pytest.fixture(scope="module")
def pictures(cnn_bundle):
    return cnn_bundle.gallery.thumbnails_[:40]


@pytest.fixture(scope="module")
def extractor(cnn_bundle):
    return feature_model(cnn_bundle.model)


def test_the_outputs_match_the_saved_model_and_the_pooled_layers_sit_beside_the_features(cnn_bundle, extractor, pictures):
    out = embed(extractor, pictures)
    # The saved model's own output is the probabilities the product reads.
    direct = np.asarray(cnn_bundle.model.predict_on_batch(pictures.astype(np.float32) / 255.0))
    np.testing.assert_allclose(out.probabilities, direct, atol=1e-5)
    widths = [cnn_bundle.model.get_layer(name).output.shape[-1] for name in OOD_LAYERS]
    assert out.ood_features.shape == (len(pictures), sum(widths) + out.features.shape[1] + 1)
    # Each part has length 1, the last part is the features' direction, then their length.
    edges = np.cumsum([0, *widths, out.features.shape[1]])
    for start, end in zip(edges[:-1], edges[1:]):
        np.testing.assert_allclose(np.linalg.norm(out.ood_features[:, start:end], axis=1), 1.0, atol=1e-4)
    length = np.linalg.norm(out.features, axis=1)
    np.testing.assert_allclose(out.ood_features[:, edges[-2]:edges[-1]], out.features / length[:, None], atol=1e-5)
    np.testing.assert_allclose(out.ood_features[:, -1], length, rtol=1e-5)


def test_batches_of_any_size_give_the_same_rows(extractor, pictures):
    whole = embed(extractor, pictures)
    for batch_size in (1, 7, 64):
        parts = embed(extractor, pictures, batch_size=batch_size)
        for name in ("features", "logits", "probabilities", "ood_features"):
            np.testing.assert_allclose(getattr(parts, name), getattr(whole, name), atol=1e-4, err_msg=f"{name}, batch {batch_size}")
    one = embed(extractor, pictures[5:6])
    np.testing.assert_allclose(one.ood_features, whole.ood_features[5:6], atol=1e-4)


def test_a_model_without_the_earlier_layers_reads_its_features(pictures):
    import keras

    inputs = keras.Input((32, 32, 3))
    features = keras.layers.Identity(name="features")(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(inputs)))
    logits = keras.layers.Dense(13, name="logits")(features)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))
    out = embed(feature_model(model), pictures)
    # Just the features: their direction and their length.
    length = np.linalg.norm(out.features, axis=1)
    np.testing.assert_allclose(out.ood_features, np.c_[out.features / length[:, None], length], rtol=1e-5)
