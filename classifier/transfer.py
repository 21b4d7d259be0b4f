"""Transfer learning: a network pretrained on ImageNet, frozen, with a small head trained on our
pictures. For people who bring tens of pictures per class, not thousands.

    model, history = fit(config, dataset, out_dir, verbose)   # classifier.train calls this

Presets (TrainConfig.preset):
- mobilenet_v2_tflite (offline): the bundled MobileNetV2 TFLite (uint8 quantized, 224x224); its
  1,280-wide average-pool tensor is the frozen feature extractor. The model is the Keras head alone
  (1,280 numbers in); the run folder keeps a copy of the .tflite and extractor.json saying how to
  reach the features; the build exports the head to LiteRT and bundle.litert.CNNRuntime runs both.
- mobilenet_v2, resnet50 (online): a keras.applications base (include_top=False, ImageNet weights,
  its own preprocess_input), frozen, then the same head; optionally the top blocks fine-tuned at a
  low learning rate afterwards (keras-io's "Transfer learning & fine-tuning"). One Keras model,
  pictures in. Offline, they fail at once with TransferUnavailable.

The head names the layers the product reads: "features" (OOD detector, gallery), "logits",
"probabilities".
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bundle.files import reachable
from bundle.litert import EXTRACTOR_FILE, ModelUnavailable, TFLiteFeatures
from classifier.readers import DataUnavailable

TFLITE_PRESETS = ("mobilenet_v2_tflite",)
# preset: (keras.applications class, the no-top weights file Keras caches)
KERAS_PRESETS = {
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
    "resnet50": ("ResNet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
}
PRESETS = TFLITE_PRESETS + tuple(KERAS_PRESETS)
TFLITE_FILE_NAME = "mobilenet_v2_1.0_224_quant.tflite"  # in a data folder's imagenet-models/
WEIGHTS_HOST = "storage.googleapis.com"


class TransferUnavailable(DataUnavailable):
    """A transfer preset that cannot run here: no TFLite file, or ImageNet weights while offline."""


@dataclass(frozen=True)
class TransferConfig:
    tflite_model: str | None = None  # the .tflite file (offline preset)
    head_width: int = 256
    dropout: float = 0.3
    head_epochs: int = 60  # few pictures: a head on 1,280 numbers trains in seconds
    head_learning_rate: float = 1e-3
    batch_size: int = 32
    flip_copies: bool = True  # the TFLite preset also learns from each picture mirrored
    base_input_size: int = 224  # online presets: pictures are enlarged to this inside the model
    fine_tune_epochs: int = 0  # online presets: then unfreeze the top layers for this many epochs
    fine_tune_layers: int = 20
    fine_tune_learning_rate: float = 1e-5
    connect_timeout: float = 3.0
    weights: str | None = "imagenet"  # online presets; None: untrained, for checking the code path offline


def fit(train_config, dataset, out_dir, verbose="auto"):
    """Train a transfer preset; returns (model, history dict). The model is the head alone for the
    TFLite preset (see module doc), a whole picture-in Keras model for the online ones."""
    import keras

    config, preset = train_config.transfer, train_config.preset
    keras.utils.set_random_seed(train_config.seed)
    if preset in TFLITE_PRESETS:
        extractor = tflite_features(config)
        train = _features_with_flips(extractor, dataset.x_train, dataset.y_train, config.flip_copies)
        val = extractor.features(dataset.x_val), dataset.y_val
        model = build_head(extractor.width, len(dataset.class_names), config)
        history = _fit(model, train, val, config.head_epochs, config.head_learning_rate, config, verbose)
        extractor.save_beside(out_dir)
        return model, history
    if preset not in KERAS_PRESETS:
        raise ValueError(f"Unknown transfer preset {preset!r}; choose from {PRESETS}.")
    model, base = build_keras_model(preset, dataset.x_train.shape[1:], len(dataset.class_names), config, config.weights)
    train, val = (_as_float(dataset.x_train), dataset.y_train), (_as_float(dataset.x_val), dataset.y_val)
    history = _fit(model, train, val, config.head_epochs, config.head_learning_rate, config, verbose)
    if config.fine_tune_epochs:
        # Unfreeze the top layers only; BatchNormalization stays frozen (the base runs with
        # training=False), else its statistics would be rewritten from a few pictures.
        base.trainable = True
        for layer in base.layers[:-config.fine_tune_layers]:
            layer.trainable = False
        more = _fit(model, train, val, config.fine_tune_epochs, config.fine_tune_learning_rate, config, verbose)
        history = {name: history.get(name, []) + values for name, values in more.items()}
    return model, history


def build_head(width, num_classes, config=TransferConfig()):
    """The trained part: 1,280 (or any) pretrained features -> "features" -> "logits" -> "probabilities"."""
    import keras

    return keras.Sequential([keras.Input((width,))] + _head_layers(num_classes, config), name="transfer_head")


def _head_layers(num_classes, config):
    from keras import layers

    return [
        layers.Dropout(config.dropout),
        layers.Dense(config.head_width, activation="relu", name="features"),
        layers.Dropout(config.dropout),
        layers.Dense(num_classes, name="logits"),
        layers.Activation("softmax", name="probabilities"),
    ]


def build_keras_model(preset, input_shape, num_classes, config=TransferConfig(), weights="imagenet"):
    """[0, 1] pictures -> enlarged -> the application's own preprocessing -> frozen base -> head.
    Returns (model, base). weights=None builds it untrained, without the network."""
    import keras
    from keras import layers

    class_name = KERAS_PRESETS[preset][0]
    if weights == "imagenet":
        check_weights_reachable(preset, config.connect_timeout)
    size = config.base_input_size
    try:
        base = getattr(keras.applications, class_name)(include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg")
    except Exception as error:  # urllib, SSL, socket, a truncated file: all mean "no weights"
        raise TransferUnavailable(f"{preset}'s ImageNet weights could not be downloaded ({type(error).__name__}: {error}); "
                                  "use --preset mobilenet_v2_tflite (offline) instead.") from error
    base.trainable = False
    inputs = keras.Input(tuple(input_shape))
    x = layers.Resizing(size, size, name="enlarge")(inputs) if tuple(input_shape[:2]) != (size, size) else inputs
    x = _preprocess_layer(preset, input_shape[-1])(x)
    x = base(x, training=False)
    for layer in _head_layers(num_classes, config):  # at the top level, where get_layer finds them
        x = layer(x)
    return keras.Model(inputs, x, name=f"transfer_{preset}"), base


def check_available(preset, config=TransferConfig()):
    """Raise TransferUnavailable, plainly and at once, when a transfer preset cannot run here;
    nothing for any other preset. The build calls it before loading any data."""
    if preset in TFLITE_PRESETS:
        tflite_features(config)
    elif preset in KERAS_PRESETS:
        check_weights_reachable(preset, config.connect_timeout)


def check_weights_reachable(preset, timeout=3.0):
    """Fail at once, plainly, when the weights are not cached and their server cannot be reached,
    instead of letting Keras wait on the network."""
    weights_file = KERAS_PRESETS[preset][1]
    cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / weights_file
    if not cached.exists() and not reachable(WEIGHTS_HOST, 443, timeout):
        raise TransferUnavailable(f"The {preset} preset needs ImageNet weights from {WEIGHTS_HOST} and this machine is offline; "
                                  "use --preset mobilenet_v2_tflite (the bundled MobileNetV2, offline) instead.")


def tflite_features(config):
    """The frozen extractor of the mobilenet_v2_tflite preset (TransferUnavailable when it cannot run)."""
    if not config.tflite_model:
        raise TransferUnavailable(f"The mobilenet_v2_tflite preset needs the bundled {TFLITE_FILE_NAME}: "
                                  "give the data folder that holds imagenet-models/ (--data-dir).")
    try:
        return TFLiteFeatures(config.tflite_model)
    except ModelUnavailable as error:
        raise TransferUnavailable(f"{error} The offline transfer preset needs the bundled {TFLITE_FILE_NAME} "
                                  "(the data folder's imagenet-models/).") from error


def copy_extractor(run_dir, target_dir):
    """Copy a TFLite run's extractor (extractor.json and its .tflite) into a bundle folder; no-op otherwise."""
    spec_path = Path(run_dir) / EXTRACTOR_FILE
    if spec_path.exists():
        for name in (EXTRACTOR_FILE, json.loads(spec_path.read_text())["file"]):
            shutil.copyfile(Path(run_dir) / name, Path(target_dir) / name)


def features_description(run_dir, preset):
    """What a model's "features" layer is, in one sentence (bundle.json; the Model tab shows it)."""
    spec_path = Path(run_dir) / EXTRACTOR_FILE
    head = "the trained head's Dense layer (\"features\") on top"
    if spec_path.exists():
        return f"{json.loads(spec_path.read_text())['description']}; {head}"
    if preset in KERAS_PRESETS:
        return f"keras.applications {KERAS_PRESETS[preset][0]} with ImageNet weights, frozen (average-pooled); {head}"
    return "the CNN's own penultimate layer, trained from scratch on these pictures"


def _features_with_flips(extractor, x, y, flips):
    features = extractor.features(x)
    if not flips:
        return features, y
    return np.concatenate([features, extractor.features(x[:, :, ::-1])]), np.concatenate([y, y])


def _fit(model, train, val, epochs, learning_rate, config, verbose):
    """Adam on (x, labels) pairs; a recompile each call, so that fine-tuning sees what was unfrozen."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy", metrics=["accuracy"])
    eye = np.eye(model.output_shape[-1], dtype=np.float32)
    fit = model.fit(train[0], eye[train[1]], validation_data=(val[0], eye[val[1]]), epochs=epochs,
                    batch_size=config.batch_size, shuffle=True, verbose=verbose)
    return {name: [float(v) for v in values] for name, values in fit.history.items()}


def _preprocess_layer(preset, channels):
    """The application's preprocess_input on [0, 1] pixels, as one fixed 1x1 convolution saved with
    the model (no Lambda: a .keras file then loads without unsafe deserialisation). Grayscale goes to
    all three channels. mobilenet_v2: x * 2 - 1. resnet50 ("caffe"): x * 255, RGB -> BGR, minus
    ImageNet's BGR means."""
    import keras

    if preset == "mobilenet_v2":
        mixing, bias = 2.0 * np.eye(3, dtype=np.float32), -np.ones(3, np.float32)
    else:
        mixing, bias = 255.0 * np.eye(3, dtype=np.float32)[:, ::-1], -np.array([103.939, 116.779, 123.68], np.float32)
    if channels == 1:
        mixing = mixing.sum(axis=0, keepdims=True)
    layer = keras.layers.Conv2D(3, 1, name="preprocess", trainable=False)
    layer.build((None, None, None, channels))
    layer.set_weights([mixing.reshape(1, 1, channels, 3), bias])
    return layer


def _as_float(x):
    from bundle.images import to_float

    return to_float(x) if x.dtype == np.uint8 else x
