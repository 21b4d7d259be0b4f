"""The CNN's three outputs for a batch of pictures, in one pass.

    extractor = feature_model(model)              # once
    out = embed(extractor, x)                     # Embedding(features, logits, probabilities)

Every preset names three layers that the rest of the product reads: "features" (the penultimate
layer: OOD detector, gallery), "logits" and "probabilities".
"""

from dataclasses import dataclass

import numpy as np

from classifier.images import to_float

OUTPUT_LAYERS = ("features", "logits", "probabilities")


@dataclass
class Embedding:
    features: np.ndarray  # penultimate layer, (n, d), float32
    logits: np.ndarray  # (n, classes)
    probabilities: np.ndarray  # (n, classes)


def feature_model(model):
    """A Keras model that returns [features, logits, probabilities] in one pass."""
    import keras

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
