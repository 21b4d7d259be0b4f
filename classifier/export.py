"""Export: the trained Keras CNN -> the bundle's model.tflite, which the server runs with LiteRT.

    model = float32_model(keras_model)             # the saved layers train in mixed_bfloat16
    export_litert(model, "assets/model.tflite")    # one signature, every output serving reads
    out = embed(keras_outputs(model), x)           # the same outputs from Keras (runs, research, benches)

Serving reads, per picture: "features", "logits" and "probabilities", and for an airbench net
the max-pooled earlier layers the OOD detector reads (bundle.embedding.OOD_LAYERS), each averaged
over the test-time views with the views' own weights, as the features are. They are all outputs
of one exported signature, so one pass gives them (bundle.embedding.embed). Float32 throughout,
no quantisation: the exported model answers as the float32 Keras model does (to ~1e-5), and the
build fits every later stage (OOD detector, gallery, thresholds) on what the export computes.
"""

from pathlib import Path

import numpy as np

from bundle.embedding import OOD_LAYERS, OUTPUTS
from bundle.litert import EXTRACTOR_FILE, TFLiteFeatures
from classifier.airbench_config import VIEW_WEIGHTS


def float32_model(model):
    """The same model and weights with every layer computing in float32."""
    import keras

    config = _float32(model.get_config())
    copy = keras.Model.from_config(config) if isinstance(model, keras.Model) and type(model) is keras.Model else None
    if copy is None:
        copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def serving_outputs(model):
    """A Keras model from the CNN's input to {output name: tensor}: OUTPUTS, and the pooled
    OOD_LAYERS the model has, view-averaged."""
    import keras

    present = {layer.name for layer in model.layers}
    outputs = {name: model.get_layer(name).output for name in OUTPUTS}
    pooled = [name for name in OOD_LAYERS if name in present]
    if pooled:
        weights = _view_weights(model, pooled[0])
        for name in pooled:
            rows = keras.layers.GlobalMaxPooling2D(dtype="float32", name=f"{name}_max")(model.get_layer(name).output)
            # A layer of its own per output: slicing with ops in a functional model gives several
            # operations one auto-generated name, which Keras refuses.
            outputs[f"{name}_pooled"] = keras.layers.Lambda(
                _average_views, arguments={"weights": tuple(float(w) for w in weights)}, name=f"{name}_pooled")(rows)
    return keras.Model(model.inputs[0], outputs)


def _average_views(rows, weights):
    """(views x n, c) rows, stacked view by view on the batch axis (classifier.airbench) -> (n, c),
    weighted by the views' weights."""
    from keras import ops

    views = ops.reshape(rows, (len(weights), -1, rows.shape[-1]))
    return ops.einsum("v,vnc->nc", ops.convert_to_tensor(weights, "float32"), views)


def keras_outputs(model, directory=None):
    """What bundle.embedding.embed calls, from the Keras model itself: serving_outputs(model), after
    the frozen TFLite extractor when `directory` (a run or bundle folder) holds one."""
    head = serving_outputs(model)
    if directory is not None and (Path(directory) / EXTRACTOR_FILE).exists():
        return _AfterExtractor(TFLiteFeatures.load_beside(directory), head)
    return head


class _AfterExtractor:
    def __init__(self, extractor, head):
        self.extractor, self.head = extractor, head

    def predict_on_batch(self, x):
        return self.head.predict_on_batch(self.extractor.features(x))


def export_litert(model, path):
    """Write `model`'s serving outputs as a float32 LiteRT file at `path` (builtin ops only)."""
    import tensorflow as tf

    serving_outputs(model).export(str(path), format="litert", verbose=False,
                                  target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]})
    return path


def _view_weights(model, layer_name):
    """The views' weights (classifier.airbench_config.VIEW_WEIGHTS), told by how many rows one
    picture makes in `layer_name`."""
    import keras

    probe = keras.Model(model.inputs[0], model.get_layer(layer_name).output)
    rows = probe.predict_on_batch(np.zeros((1, *model.inputs[0].shape[1:]), np.float32)).shape[0]
    return {len(weights): weights for weights in VIEW_WEIGHTS}[rows]


def _float32(value):
    """A layer config with every dtype policy made float32 (mixed_bfloat16 -> float32)."""
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy" or value.get("class_name") == "DTypePolicyMap":
            return {**value, "config": {**value.get("config", {}), "name": "float32"}}
        return {key: _float32(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_float32(item) for item in value]
    return value
