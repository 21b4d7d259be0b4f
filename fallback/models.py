"""ImageNet-1k classifiers behind one small interface:

    classifier.predict(pil_images) -> (n, 1000) float32 probabilities in ImageNet-1k order

TFLiteImageNetClassifier runs a bundled TFLite model offline (the default: MobileNetV2, uint8
quantized). KerasResNet50 is for users who are online; offline it raises FallbackUnavailable at
once instead of waiting on a download.
"""

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.images import open_image, to_mode
from bundle.files import reachable
from bundle.litert import dequantized, open_interpreter

# File names in a data folder's imagenet-models/ (the development data has them).
MODELS_DIR = "imagenet-models"
MOBILENET_V2 = "mobilenet_v2_1.0_224_quant.tflite"
IMAGENET_LABELS = "imagenet_labels.txt"
# The usual ImageNet evaluation transform: keep the central 87.5% (224 of 256), then resize.
CROP_FRACTION = 0.875


class FallbackUnavailable(RuntimeError):
    """An ImageNet model that cannot be used here (missing file, weights that need a download)."""


def central_crop(image, size, crop_fraction=CROP_FRACTION):
    """PIL image -> RGB uint8 array (size, size, 3): central square of crop_fraction of the short side."""
    image = to_mode(open_image(image), 3)
    width, height = image.size
    side = max(1, round(min(width, height) * crop_fraction))
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    # reducing_gap shrinks big photos by box-averaging first: near-identical output, far faster.
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0), dtype=np.uint8)


class TFLiteImageNetClassifier:
    """A TFLite ImageNet classifier (1001 outputs with 0 = background, or 1000), uint8 or float input.

    Works for the bundled MobileNetV2 and for the tiny MobileNetV1 used in tests: the input size and
    quantization are read from the model.
    """

    def __init__(self, model_path, num_threads=0, crop_fraction=CROP_FRACTION):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FallbackUnavailable(f"No TFLite model at {self.model_path}.")
        # 0: every core of the machine it runs on (2 here: 5.4 ms a photo against 9.0 on one).
        self.num_threads = num_threads or os.cpu_count() or 1
        self.crop_fraction = crop_fraction
        self._interpreter = None

    @property
    def name(self):
        return self.model_path.stem

    def _load(self):
        if self._interpreter is None:
            try:
                interpreter = open_interpreter(self.model_path, self.num_threads)
            except (ValueError, RuntimeError) as error:
                raise FallbackUnavailable(f"{self.model_path} is not a usable TFLite model: {error}") from error
            self._input = interpreter.get_input_details()[0]
            self._output = interpreter.get_output_details()[0]
            if self._output["shape"][-1] not in (1000, 1001):
                raise FallbackUnavailable(f"{self.model_path} has {self._output['shape'][-1]} outputs, not ImageNet's 1000 (+ background).")
            self._interpreter = interpreter
        return self._interpreter

    @property
    def input_size(self):
        self._load()
        return int(self._input["shape"][1])

    def predict(self, images):
        """List of pictures (PIL images, paths, bytes, arrays) -> (n, 1000) probabilities."""
        interpreter = self._load()
        rows = []
        for image in images:
            pixels = central_crop(image, self.input_size, self.crop_fraction)[None]
            interpreter.set_tensor(self._input["index"], self._to_input(pixels))
            interpreter.invoke()
            rows.append(self._to_probabilities(interpreter.get_tensor(self._output["index"])[0]))
        return np.stack(rows) if rows else np.zeros((0, 1000), np.float32)

    def _to_input(self, pixels):
        if self._input["dtype"] == np.uint8:
            return pixels
        # Float MobileNets take [-1, 1].
        return (pixels.astype(np.float32) / 127.5 - 1.0).astype(self._input["dtype"])

    def _to_probabilities(self, raw):
        scores = dequantized(raw, self._output)
        if scores.min() < 0 or scores.sum() > 1.5:  # logits, not a softmax
            scores = np.exp(scores - scores.max())
        if len(scores) == 1001:
            scores = scores[1:]  # drop "background"
        total = scores.sum()
        # A uint8 softmax can round every class to 0; then the model has no opinion at all.
        return (scores / total if total > 0 else np.full(1000, 1e-3)).astype(np.float32)


class KerasResNet50:
    """keras.applications.ResNet50 with ImageNet weights: for users who are online.

    Construction fails at once with FallbackUnavailable when the weights are not cached and the
    download server cannot be reached, instead of letting Keras wait on the network.
    """

    WEIGHTS_HOST = "storage.googleapis.com"
    WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"

    def __init__(self, connect_timeout=3.0):
        cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / self.WEIGHTS_FILE
        if not cached.exists() and not reachable(self.WEIGHTS_HOST, 443, connect_timeout):
            raise FallbackUnavailable(
                "ResNet50's ImageNet weights must be downloaded and this machine is offline; "
                "use the bundled MobileNetV2 (TFLiteImageNetClassifier) instead."
            )
        try:
            import keras
        except ImportError:
            raise FallbackUnavailable(
                "ResNet50 runs on Keras and TensorFlow, which the server does not install; "
                "pip install -r requirements-build.txt, or use the bundled MobileNetV2 (TFLiteImageNetClassifier)."
            ) from None
        try:
            self.model = keras.applications.ResNet50(weights="imagenet")
        except Exception as error:  # urllib, SSL, socket, truncated file: all mean "no weights"
            raise FallbackUnavailable(
                f"ResNet50's ImageNet weights could not be downloaded ({type(error).__name__}: {error}); "
                "use the bundled MobileNetV2 (TFLiteImageNetClassifier) instead."
            ) from error
        self.name = "resnet50"

    def predict(self, images):
        from keras.applications.resnet50 import preprocess_input

        batch = np.stack([central_crop(image, 224) for image in images]).astype(np.float32)
        return np.asarray(self.model.predict(preprocess_input(batch), verbose=0), dtype=np.float32)


def read_imagenet_labels(path):
    """imagenet_labels.txt (background first) -> the 1000 class names in ImageNet-1k order."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    return tuple(lines[1:] if len(lines) == 1001 else lines)


def check_label_order(labels, dataset_class_info):
    """Raise FallbackUnavailable unless the model's labels are ImageNet-1k's, in the same order."""
    expected = [row[2] for row in json.loads(Path(dataset_class_info).read_text())]
    mismatches = [index for index, (a, b) in enumerate(zip(labels, expected)) if a != b]
    if len(labels) != len(expected) or mismatches:
        raise FallbackUnavailable(f"The model's labels are not in ImageNet-1k order (first differences at {mismatches[:5]}).")

