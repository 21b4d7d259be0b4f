"""The CNN's three outputs for a batch of pictures, in one pass.

    extractor = feature_model(model)              # once (a TFLite transfer model: feature_model(head, its folder))
    out = embed(extractor, x)                     # Embedding(features, logits, probabilities)

Every preset names three layers that the rest of the product reads: "features" (the penultimate
layer: OOD detector, gallery), "logits" and "probabilities".
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.images import to_float
from classifier.transfer import EXTRACTOR_FILE

OUTPUT_LAYERS = ("features", "logits", "probabilities")


@dataclass
class Embedding:
    features: np.ndarray  # penultimate layer, (n, d), float32
    logits: np.ndarray  # (n, classes)
    probabilities: np.ndarray  # (n, classes)


def feature_model(model, directory=None):
    """A Keras model that returns [features, logits, probabilities] in one pass; for a folder whose
    model is a transfer head on TFLite features (classifier.transfer), the TFLite model, then that."""
    import keras

    if directory is not None and (Path(directory) / EXTRACTOR_FILE).exists():
        from classifier.transfer import TFLiteFeatures, TransferExtractor

        return TransferExtractor(TFLiteFeatures.load_beside(directory), feature_model(model))
    return keras.Model(model.inputs[0], [model.get_layer(name).output for name in OUTPUT_LAYERS])


def embed(extractor, x, batch_size=512):
    """A float batch in [0, 1] (or a uint8 batch) -> Embedding of float32 numpy arrays."""
    if x.dtype == np.uint8:
        x = to_float(x)
    if len(x) <= 64:
        # One upload: predict_on_batch reuses the compiled predict function (a few ms), where an
        # eager call costs 40 ms and predict() sets up a data pipeline on every call.
        outputs = extractor.predict_on_batch(x)
    else:
        outputs = extractor.predict(x, batch_size=batch_size, verbose=0)
    return Embedding(*(np.asarray(o, dtype=np.float32) for o in outputs))
