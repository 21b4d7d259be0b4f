"""The CNN's outputs for a batch of pictures, in one pass.

    extractor = feature_model(model)              # once (a TFLite transfer model: feature_model(head, its folder))
    out = embed(extractor, x)                     # Embedding(features, logits, probabilities, ood_features)

Every preset names three layers that the rest of the product reads: "features" (the penultimate
layer: gallery, logits), "logits" and "probabilities". The unknown-picture check reads
ood_features: for an airbench net, the max-pooled activations of the earlier layers in OOD_LAYERS
and the features, each averaged over the test-time views like the features and scaled to length
1, side by side, then the features' own length as the last column (for other nets, the features'
direction and length).
A picture of no known class can look ordinary to the last layer and odd to the earlier ones
(texture, parts). They are pooled here, from the saved model's own layers, so model.keras stays
a plain pixels-to-probabilities model.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.airbench_config import VIEW_WEIGHTS
from classifier.images import to_float
from classifier.transfer import EXTRACTOR_FILE

OUTPUT_LAYERS = ("features", "logits", "probabilities")
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


def l2_normalize(rows):
    """Each row scaled to length 1 (a zero row stays zero), float32."""
    rows = np.asarray(rows)
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def feature_model(model, directory=None):
    """A Keras model that returns [features, logits, probabilities, pooled OOD layers...] in one
    pass; for a folder whose model is a transfer head on TFLite features (classifier.transfer),
    the TFLite model, then that."""
    import keras

    if directory is not None and (Path(directory) / EXTRACTOR_FILE).exists():
        from classifier.transfer import TFLiteFeatures, TransferExtractor

        return TransferExtractor(TFLiteFeatures.load_beside(directory), feature_model(model))
    present = {layer.name for layer in model.layers}
    pooled = [keras.layers.GlobalMaxPooling2D(dtype="float32", name=f"{name}_pooled")(model.get_layer(name).output)
              for name in OOD_LAYERS if name in present]
    return keras.Model(model.inputs[0], [model.get_layer(name).output for name in OUTPUT_LAYERS] + pooled)


def embed(extractor, x, batch_size=512):
    """A float batch in [0, 1] (or a uint8 batch) -> Embedding of float32 numpy arrays."""
    if x.dtype == np.uint8:
        x = to_float(x)
    # predict_on_batch reuses the compiled predict function (a few ms for one upload, where an
    # eager call costs 40 ms and predict() sets up a data pipeline on every call); and each
    # batch's views must be averaged with that batch's own pictures.
    parts = [_embedding(extractor.predict_on_batch(x[start:start + batch_size]), len(x[start:start + batch_size]))
             for start in range(0, len(x), batch_size)]
    if not parts:
        parts = [_embedding(extractor.predict_on_batch(x), 0)]
    return Embedding(*(np.concatenate([getattr(part, name) for part in parts])
                       for name in ("features", "logits", "probabilities", "ood_features")))


def _embedding(outputs, count):
    features, logits, probabilities, *pooled = (np.asarray(output, dtype=np.float32) for output in outputs)
    if not pooled or count == 0:
        return Embedding(features, logits, probabilities)
    # The views of one batch are stacked on its first axis, view by view (classifier.airbench).
    weights = {len(w): np.asarray(w, np.float32) for w in VIEW_WEIGHTS}[len(pooled[0]) // count]
    blocks = [np.tensordot(weights, layer.reshape(len(weights), count, -1), axes=1) for layer in pooled]
    return Embedding(features, logits, probabilities, ood_features(blocks, features))


def ood_features(blocks, features):
    """[each pooled block at length 1, ..., the features at length 1, the features' length]."""
    units = [l2_normalize(rows) for rows in [*blocks, features]]
    return np.concatenate([*units, np.linalg.norm(features, axis=1, keepdims=True)], axis=1).astype(np.float32)
