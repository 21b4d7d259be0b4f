"""The learning step's fine-tuning (classifier.fine_tune) of the committed CNN on real photos:
the layers before `first_trained_layer` keep the champion's weights, the ones after move (with
the champion's features held on the replayed pictures, the default)."""

from pathlib import Path

import numpy as np
import pytest

from bundle.images import to_uint8
from bundle.labels import CLASS_NAMES
from classifier.dataset import Dataset
from classifier.fine_tune import FineTuneConfig, fine_tune

MODEL = Path(__file__).resolve().parents[2] / "assets" / "model.keras"
OURS = {"airliner": "airplane", "Siamese_cat": "cat", "pug": "dog", "tow_truck": "truck", "container_ship": "ship"}
SMALL = FineTuneConfig(epochs=2, batch_size=8, replay_pictures=5, outliers=4, first_trained_layer="block3_conv1")


@pytest.fixture(scope="module")
def photos(example_photos):
    """(pictures of ours, their classes, Dataset replaying them with the other photos as outliers)."""
    x = np.stack([to_uint8(example_photos[name]) for name in OURS])
    y = np.array([CLASS_NAMES.index(label) for label in OURS.values()])
    outliers = np.stack([to_uint8(path) for name, path in example_photos.items() if name not in OURS])
    return x, y, Dataset(x, y, x, y, x, y, CLASS_NAMES, x_outliers=outliers)


def weights_after(config, photos):
    import keras

    model = keras.saving.load_model(MODEL, compile=False)
    x, y, dataset = photos
    model, report = fine_tune(model, x[::-1], y[::-1], dataset, config)  # labels shifted: something to learn
    return {layer.name: [w.numpy() for w in layer.weights] for layer in model.layers if layer.weights}, report


@pytest.mark.skipif(not MODEL.exists(), reason="no committed model.keras")
def test_frozen_layers_keep_the_champions_weights_and_the_last_block_moves(photos):
    import keras

    champion = keras.saving.load_model(MODEL, compile=False)
    before = {layer.name: [w.numpy() for w in layer.weights] for layer in champion.layers if layer.weights}
    after, report = weights_after(SMALL, photos)
    pictures_per_epoch = len(OURS) * SMALL.new_repeats + SMALL.replay_pictures + SMALL.outliers
    assert report["steps"] == SMALL.epochs * -(-pictures_per_epoch // SMALL.batch_size) and len(report["loss"]) == SMALL.epochs
    for name in ("whiten", "block1_conv1", "block2_conv2", "block2_bn2"):
        for old, new in zip(before[name], after[name]):
            np.testing.assert_array_equal(old, new)
    for name in ("block3_conv1", "block3_conv2", "logits"):
        assert not np.allclose(before[name][0], after[name][0])
