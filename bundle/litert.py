"""The model runtime both sides share: LiteRT (TFLite) interpreters, no TensorFlow.

    cnn = CNNRuntime.load("assets")        # model.tflite (and a transfer bundle's extractor first)
    outputs = cnn.predict_on_batch(x)      # {"features", "logits", "probabilities", "<layer>_pooled"...}

The build exports the CNN to model.tflite in float32 (classifier.export), with every output that
serving reads as a named output of one signature; the server runs that file and nothing of Keras.
A transfer bundle (classifier.transfer) keeps the frozen ImageNet extractor as its own .tflite
(extractor.json names it and the tensor its features are read from); the head's model.tflite
then takes those features.
"""

import json
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

LITERT_FILE = "model.tflite"
EXTRACTOR_FILE = "extractor.json"  # beside the head, for a transfer bundle on TFLite features


class ModelUnavailable(RuntimeError):
    """A model file that is missing or that LiteRT cannot run."""


def open_interpreter(model_path, num_threads=1, preserve_all_tensors=False):
    """A LiteRT (TFLite) interpreter with its tensors allocated; ValueError/RuntimeError if unusable."""
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():
        # It warns that keeping every tensor costs memory: MobileNetV2's come to a few MB.
        warnings.simplefilter("ignore", UserWarning)
        interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads,
                                  experimental_preserve_all_tensors=preserve_all_tensors)
    interpreter.allocate_tensors()
    return interpreter


def dequantized(raw, details):
    """A LiteRT output tensor as float32: (raw - zero point) * scale for a quantized one (its
    `details` from get_output_details), unchanged otherwise."""
    scale, zero_point = details["quantization"]
    raw = np.asarray(raw).astype(np.float32)
    return (raw - zero_point) * scale if scale else raw


class CNNRuntime:
    """The exported CNN: pictures in [0, 1] -> {output name: float32 array}, one batch at a time.
    One interpreter, used by one thread at a time (LiteRT interpreters are not thread-safe)."""

    def __init__(self, model_path, extractor=None, num_threads=2):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelUnavailable(f"No {model_path.name} in {model_path.parent}: this bundle was made before the server ran "
                                   "LiteRT; rebuild it with python -m pipeline.build.")
        try:
            self._interpreter = open_interpreter(model_path, num_threads)
            self._runner = self._interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as error:
            raise ModelUnavailable(f"{model_path} is not a usable LiteRT model: {error}") from error
        self._input_name = next(iter(self._runner.get_input_details()))
        self.output_names = tuple(sorted(self._runner.get_output_details()))
        self.extractor = extractor
        self._lock = threading.Lock()

    @classmethod
    def load(cls, directory, num_threads=2):
        directory = Path(directory)
        extractor = TFLiteFeatures.load_beside(directory) if (directory / EXTRACTOR_FILE).exists() else None
        return cls(directory / LITERT_FILE, extractor, num_threads)

    def predict_on_batch(self, x):
        x = np.asarray(x, np.float32)
        with self._lock:
            if self.extractor is not None:
                x = self.extractor.features(x)
            if not len(x):
                return {name: np.zeros((0,) + tuple(d["shape"][1:]), np.float32)
                        for name, d in self._runner.get_output_details().items()}
            outputs = self._runner(**{self._input_name: x})
        return {name: np.asarray(value, np.float32) for name, value in outputs.items()}


class TFLiteFeatures:
    """A TFLite ImageNet model's average-pool tensor as features of [0, 1] pictures of any size.

    Each picture is enlarged (bilinear) to the model's input size; grayscale is repeated to RGB.
    The tensor is an intermediate one, so the interpreter keeps all tensors after invoke.
    """

    def __init__(self, model_path, tensor_name=None, num_threads=2):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelUnavailable(f"No TFLite model at {self.model_path}.")
        try:
            self._interpreter = open_interpreter(self.model_path, num_threads, preserve_all_tensors=True)
        except (ValueError, RuntimeError) as error:
            raise ModelUnavailable(f"{self.model_path} is not a usable TFLite model: {error}") from error
        self._input = self._interpreter.get_input_details()[0]
        self.input_size = int(self._input["shape"][1])
        pooled = [d for d in self._interpreter.get_tensor_details()
                  if (d["name"] == tensor_name if tensor_name else "avgpool" in d["name"].lower()) and len(d["shape"]) == 4]
        if not pooled:
            raise ModelUnavailable(f"{self.model_path} has no average-pool tensor to take features from.")
        self._pooled = pooled[0]
        self.tensor_name = self._pooled["name"]
        self.width = int(self._pooled["shape"][-1])

    @classmethod
    def load_beside(cls, directory):
        """The extractor a run or bundle folder names in extractor.json (its own copy of the .tflite)."""
        spec = json.loads((Path(directory) / EXTRACTOR_FILE).read_text())
        return cls(Path(directory) / spec["file"], spec["tensor"])

    def save_beside(self, directory):
        """Copy the .tflite into `directory` and say there which tensor is the features."""
        shutil.copyfile(self.model_path, Path(directory) / self.model_path.name)
        spec = {"kind": "tflite", "file": self.model_path.name, "tensor": self.tensor_name, "width": self.width,
                "input_size": self.input_size, "description": self.description()}
        (Path(directory) / EXTRACTOR_FILE).write_text(json.dumps(spec, indent=2) + "\n")

    def description(self):
        return (f"the {self.width}-wide average pool of {self.model_path.name} (ImageNet-pretrained, frozen; pictures "
                f"enlarged to {self.input_size}x{self.input_size})")

    def features(self, x):
        """(n, h, w, c) pictures in [0, 1] (or uint8) -> (n, width) float32."""
        x = np.asarray(x)
        pixels = x if x.dtype == np.uint8 else np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
        out = np.empty((len(pixels), self.width), np.float32)
        for row, picture in enumerate(pixels):
            self._interpreter.set_tensor(self._input["index"], self._to_input(picture)[None])
            self._interpreter.invoke()
            out[row] = dequantized(self._interpreter.get_tensor(self._pooled["index"]).reshape(-1), self._pooled)
        return out

    def _to_input(self, picture):
        if picture.shape[-1] == 1:
            picture = np.repeat(picture, 3, axis=-1)
        size = self.input_size
        if picture.shape[:2] != (size, size):
            picture = np.asarray(Image.fromarray(picture).resize((size, size), Image.Resampling.BILINEAR))
        if self._input["dtype"] == np.uint8:
            return picture
        return (picture.astype(np.float32) / 127.5 - 1.0).astype(self._input["dtype"])  # float MobileNets take [-1, 1]


