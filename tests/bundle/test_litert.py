"""bundle.litert and bundle.embedding: the exported CNN as the server runs it, no TensorFlow.
Needs no data folder: the pictures are the gallery's own (assets/gallery.npz)."""

import numpy as np
import pytest

from bundle.embedding import embed
from bundle.litert import CNNRuntime, ModelUnavailable


@pytest.fixture(scope="module")
def pictures(cnn_bundle):
    return cnn_bundle.gallery.thumbnails_[:40]


def test_batches_of_any_size_give_the_same_rows(cnn_bundle, pictures):
    whole = embed(cnn_bundle.cnn, pictures)
    for batch_size in (1, 7, 64):
        parts = embed(cnn_bundle.cnn, pictures, batch_size=batch_size)
        for name in ("features", "logits", "probabilities", "ood_features"):
            np.testing.assert_allclose(getattr(parts, name), getattr(whole, name), atol=1e-4, err_msg=f"{name}, batch {batch_size}")
    assert embed(cnn_bundle.cnn, pictures[:0]).probabilities.shape == (0, len(cnn_bundle.class_names))


def test_a_missing_or_broken_model_is_a_plain_message(tmp_path):
    with pytest.raises(ModelUnavailable, match="rebuild it"):
        CNNRuntime.load(tmp_path)
    (tmp_path / "model.tflite").write_bytes(b"not a model")
    with pytest.raises(ModelUnavailable, match="not a usable LiteRT model"):
        CNNRuntime.load(tmp_path)
