"""The ImageNet fallback: a large ImageNet-1k classifier whose 1000 classes are mapped onto ours.

    fallback = load_fallback("assets/fallback")
    masses = fallback.class_masses([pil_image])         # (1, classes): ImageNet probability per our class
    consultation = fallback.consult(pil_image)           # the model runs only when called
    consultation.result                                  # FallbackResult once called, else None

When it is asked, and what its answer counts for, is the answer rule's business (service.answer).
Importing this package loads nothing heavy; the TFLite interpreter starts on first use.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.label_map import LabelMapError, load_label_map, mapping_matrix
from classifier.labels import CLASS_NAMES
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

    def consult(self, image, k=3):
        """A Consultation for the answer rule: the model runs only if the rule calls it."""
        return Consultation(self, image, k)


class Consultation:
    """Zero-argument callable returning the fallback's class masses for one picture; keeps the
    whole FallbackResult (with the top-k ImageNet classes, for display) in .result once called."""

    def __init__(self, fallback, image, k=3):
        self.fallback, self.image, self.k = fallback, image, k
        self.result = None

    def __call__(self):
        self.result = self.fallback.analyse(self.image, self.k)
        return self.result.class_masses


def load_fallback(directory):
    """A bundle's fallback/ folder (written by pipeline.fallback_stage) -> Fallback."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FallbackUnavailable(f"{directory} is not a fallback folder (no {CONFIG_FILE}). Build one with python -m pipeline.build.")
    config = json.loads(config_path.read_text())
    class_names = tuple(config.get("class_names", CLASS_NAMES))
    classifier = TFLiteImageNetClassifier(
        directory / config["model"], num_threads=config.get("num_threads", 1), crop_fraction=config.get("crop_fraction", 0.875)
    )
    return Fallback(
        classifier,
        load_label_map(directory / config.get("label_map", "label_map.json"), class_names),
        read_imagenet_labels(directory / config["labels"]),
        class_names,
    )
