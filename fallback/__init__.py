"""The ImageNet fallback: a large ImageNet-1k classifier whose 1000 classes are mapped onto ours.

    fallback = load_fallback("assets/fallback")
    masses = fallback.class_masses([pil_image])         # (1, classes): ImageNet probability per our class
    consultation = fallback.consult(pil_image)           # the model runs only when called
    consultation.result                                  # FallbackResult once called, else None
    fallback.consult(pil_image, runner=executor).start() # runs now on the executor; a call waits

When it is asked, and what its answer counts for, is the answer rule's business (service.answer).
Importing this package loads nothing heavy; the TFLite interpreter starts on first use.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fallback.label_map import LabelMapError, load_label_map, mapping_matrix
from bundle.labels import CLASS_NAMES
from fallback.models import FallbackUnavailable, KerasResNet50, TFLiteImageNetClassifier, read_imagenet_labels

CONFIG_FILE = "fallback_config.json"

__all__ = [
    "Consultation", "Fallback", "FallbackResult", "FallbackUnavailable", "KerasResNet50", "LabelMapError",
    "TFLiteImageNetClassifier", "load_fallback",
]


@dataclass
class FallbackResult:
    class_masses: np.ndarray  # (classes,): the ImageNet probability that falls on each of our classes
    top: list  # [{"imagenet_class", "probability", "our_class"}], best first


class Fallback:
    """An ImageNet classifier plus the label map that folds its 1000 classes into ours."""

    def __init__(self, classifier, label_map, imagenet_names, class_names=CLASS_NAMES):
        self.classifier = classifier
        self.label_map = dict(label_map)
        self.imagenet_names = tuple(imagenet_names)
        self.class_names = tuple(class_names)
        self._matrix = mapping_matrix(self.label_map, len(self.class_names), len(self.imagenet_names))

    def imagenet_probabilities(self, images):
        return self.classifier.predict(list(images))

    def class_masses(self, images):
        """Pictures -> (n, classes): for each of our classes, the summed probability of its ImageNet classes."""
        return self.masses_from_probabilities(self.imagenet_probabilities(images))

    def masses_from_probabilities(self, probabilities):
        return np.asarray(probabilities, dtype=np.float32) @ self._matrix

    def analyse(self, image, k=3):
        """One picture -> FallbackResult (masses and top-k ImageNet classes) from one model run."""
        probabilities = self.imagenet_probabilities([image])[0]
        return FallbackResult(self.masses_from_probabilities(probabilities[None])[0], self.top_from_probabilities(probabilities, k))

    def top_from_probabilities(self, probabilities, k=3):
        top = []
        for index in np.argsort(probabilities)[::-1][:k]:
            target = self.label_map.get(int(index))
            top.append({
                "imagenet_class": self.imagenet_names[index].split(",")[0],
                "probability": float(probabilities[index]),
                "our_class": None if target is None else self.class_names[target],
            })
        return top

    def consult(self, image, k=3, runner=None):
        """A Consultation for the answer rule: the model runs only if the rule calls it, or, with a
        runner (a concurrent.futures executor), as soon as start() is called."""
        return Consultation(self, image, k, runner)


class Consultation:
    """Zero-argument callable returning the fallback's class masses for one picture; keeps the
    whole FallbackResult (with the top-k ImageNet classes, for display) in .result once called.

    With a runner, start() sets the model going on it at once, so that it runs beside the CNN
    (both release the GIL: on 2 cores that saves most of the fallback's time); the rule's call
    then only waits. A started run the rule never asks for is dropped, result stays None. Every
    run of one fallback goes through its runner: a single-worker executor is the one thread that
    enters the TFLite interpreter, which is not thread-safe."""

    def __init__(self, fallback, image, k=3, runner=None):
        self.fallback, self.image, self.k, self.runner = fallback, image, k, runner
        self.result = None
        self._future = None

    def start(self):
        if self.runner is not None and self._future is None:
            self._future = self.runner.submit(self.fallback.analyse, self.image, self.k)
        return self

    def __call__(self):
        if self.runner is None:
            self.result = self.fallback.analyse(self.image, self.k)
        else:
            self.result = self.start()._future.result()
        return self.result.class_masses

    def cancel(self):
        """Drop a started run the rule did not ask for, if it has not begun yet."""
        if self._future is not None and self.result is None:
            self._future.cancel()


def load_fallback(directory):
    """A bundle's fallback/ folder (written by pipeline.fallback_stage) -> Fallback."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FallbackUnavailable(f"{directory} is not a fallback folder (no {CONFIG_FILE}). Build one with python -m pipeline.build.")
    config = json.loads(config_path.read_text())
    class_names = tuple(config.get("class_names", CLASS_NAMES))
    classifier = TFLiteImageNetClassifier(
        directory / config["model"], num_threads=config.get("num_threads", 0), crop_fraction=config.get("crop_fraction", 0.875)
    )
    return Fallback(
        classifier,
        load_label_map(directory / config.get("label_map", "label_map.json"), class_names),
        read_imagenet_labels(directory / config["labels"]),
        class_names,
    )
