"""The CNN's outputs for a batch of pictures, in one pass of the exported model.

    cnn = CNNRuntime.load("assets")             # bundle.litert
    out = embed(cnn, x)                         # Embedding(features, logits, probabilities, ood_features)

Every preset names three outputs that the rest of the product reads: "features" (the penultimate
layer: gallery, logits), "logits" and "probabilities". The unknown-picture check reads
ood_features: for an airbench net, the max-pooled activations of the earlier layers in OOD_LAYERS
(exported as "<layer>_pooled", already averaged over the test-time views like the features) and
the features, each scaled to length 1, side by side, then the features' own length as the last
column (for other nets, the features' direction and length).
A picture of no known class can look ordinary to the last layer and odd to the earlier ones
(texture, parts). The build pools them from the saved model's own layers when it exports
(classifier.export), so model.keras stays a plain pixels-to-probabilities model.
"""

from dataclasses import dataclass

import numpy as np

from bundle.arrays import l2_normalize
from bundle.images import to_float

OUTPUTS = ("features", "logits", "probabilities")
# Block 1's output, both halves of block 2 and the first half of block 3 (the features are the
# second half of block 3, pooled).
OOD_LAYERS = ("block1_gelu2", "block2_gelu1", "block2_gelu2", "block3_gelu1")


@dataclass
class Embedding:
    features: np.ndarray  # penultimate layer, (n, d), float32
    logits: np.ndarray  # (n, classes)
    probabilities: np.ndarray  # (n, classes)
    # (n, d'), what the OOD detector reads: unit-length parts, then the features' length; made
    # from the features alone when not given.
    ood_features: np.ndarray = None

    def __post_init__(self):
        if self.ood_features is None:
            self.ood_features = ood_features([], self.features)


def embed(cnn, x, batch_size=512):
    """A float batch in [0, 1] (or a uint8 batch) -> Embedding of float32 numpy arrays.
    `cnn.predict_on_batch` returns {output name: array} (bundle.litert.CNNRuntime)."""
    if x.dtype == np.uint8:
        x = to_float(x)
    parts = [_embedding(cnn.predict_on_batch(x[start:start + batch_size])) for start in range(0, len(x), batch_size)]
    if not parts:
        parts = [_embedding(cnn.predict_on_batch(x))]
    return Embedding(*(np.concatenate([getattr(part, name) for part in parts])
                       for name in ("features", "logits", "probabilities", "ood_features")))


def _embedding(outputs):
    features, logits, probabilities = (np.asarray(outputs[name], np.float32) for name in OUTPUTS)
    blocks = [outputs[f"{name}_pooled"] for name in OOD_LAYERS if f"{name}_pooled" in outputs]
    return Embedding(features, logits, probabilities, ood_features(blocks, features))


def with_temperature(embedding, temperature):
    """The embedding with its probabilities recomputed as softmax(logits / temperature): the
    calibration the build fitted on the validation split (bundle.json's "temperature")."""
    if not temperature or temperature == 1.0:
        return embedding
    scaled = embedding.logits / np.float32(temperature)
    scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    probabilities = (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)
    return Embedding(embedding.features, embedding.logits, probabilities, embedding.ood_features)


def ood_features(blocks, features):
    """[each pooled block at length 1, ..., the features at length 1, the features' length]."""
    units = [l2_normalize(rows) for rows in [*blocks, features]]
    return np.concatenate([*units, np.linalg.norm(features, axis=1, keepdims=True)], axis=1).astype(np.float32)
