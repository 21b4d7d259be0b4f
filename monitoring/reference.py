"""The monitoring reference: what "normal" looks like, measured once when the bundle is built.

- class mean colour histograms, from the training images (without the rotated copies that balancing
  adds), by true class: the yardstick for each upload's histogram distance;
- baseline samples of confidence, intensity entropy and histogram distance, from the validation
  images, with the model's own predictions (as uploads will be measured): what the drift tests
  compare a window of uploads with;
- per-class mean confidence on the validation images, by predicted class.

Saved as JSON in the bundle (service.bundle.MONITORING_FILE), which Bundle.load reads back.
"""

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bundle.atomic import write_text_atomic
from monitoring import metrics

FORMAT_VERSION = 1
BASELINE_NAMES = ("confidence", "entropy", "histogram_distance")


@dataclass(frozen=True)
class ReferenceConfig:
    bins: int = metrics.BINS
    baseline_size: int = 2000  # values kept per baseline; ample for a KS test against 100 uploads
    seed: int = 0


@dataclass
class MonitoringReference:
    class_names: tuple
    class_histograms: np.ndarray  # (classes, channels, bins), each channel sums to 1
    baseline: dict  # name -> 1-D float array, for each of BASELINE_NAMES
    class_confidence: dict  # class name -> {"mean", "std", "count"} on validation, by predicted class
    config: ReferenceConfig = field(default_factory=ReferenceConfig)
    counts: dict = field(default_factory=dict)  # images each part was measured on

    def to_dict(self):
        return {
            "format_version": FORMAT_VERSION,
            "class_names": list(self.class_names),
            "class_histograms": np.round(self.class_histograms, 6).tolist(),
            "baseline": {name: np.round(values, 6).tolist() for name, values in self.baseline.items()},
            "class_confidence": self.class_confidence,
            "config": asdict(self.config),
            "counts": self.counts,
        }

    @classmethod
    def from_dict(cls, values):
        try:
            if values.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format version {values.get('format_version')!r}, expected {FORMAT_VERSION}")
            return cls(
                class_names=tuple(values["class_names"]),
                class_histograms=np.asarray(values["class_histograms"], dtype=np.float64),
                baseline={name: np.asarray(values["baseline"][name], dtype=np.float64) for name in BASELINE_NAMES},
                class_confidence=dict(values["class_confidence"]),
                config=ReferenceConfig(**values.get("config", {})),
                counts=dict(values.get("counts", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"Not a usable monitoring reference ({type(error).__name__}: {error}).") from None

    def save(self, path):
        return write_text_atomic(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path):
        return cls.from_dict(json.loads(Path(path).read_text()))


def as_reference(reference):
    """A MonitoringReference from itself, its dict (as Bundle.load gives it) or a JSON path."""
    if reference is None or isinstance(reference, MonitoringReference):
        return reference
    if isinstance(reference, dict):
        return MonitoringReference.from_dict(reference)
    if isinstance(reference, (str, os.PathLike)):
        return MonitoringReference.load(reference)
    raise TypeError(f"Cannot use a {type(reference).__name__} as a monitoring reference.")


def build_reference(train_images, train_labels, val_images, val_probabilities, class_names, config=ReferenceConfig()):
    """Measure the reference from training images (true labels) and validation predictions."""
    class_names = tuple(class_names)
    if len(val_images) != len(val_probabilities):
        raise ValueError(f"{len(val_images)} validation images but {len(val_probabilities)} rows of probabilities.")
    if np.shape(val_probabilities)[1] != len(class_names):
        raise ValueError(f"Probabilities have {np.shape(val_probabilities)[1]} classes; expected {len(class_names)}.")
    class_histograms = class_mean_histograms(train_images, train_labels, len(class_names), config.bins)
    val_confidence = metrics.confidences(val_probabilities)
    predicted = np.argmax(val_probabilities, axis=1)
    val_entropy = metrics.intensity_entropies(val_images)
    val_distance = metrics.hellinger_distances(metrics.colour_histograms(val_images, config.bins), class_histograms[predicted])

    rng = np.random.default_rng(config.seed)
    keep = rng.permutation(len(val_images))[: config.baseline_size]
    baseline = {
        "confidence": val_confidence[keep],
        "entropy": val_entropy[keep],
        "histogram_distance": val_distance[keep],
    }
    class_confidence = {}
    for index, name in enumerate(class_names):
        values = val_confidence[predicted == index]
        class_confidence[name] = {
            "mean": round(float(values.mean()), 6) if len(values) else None,
            "std": round(float(values.std()), 6) if len(values) else None,
            "count": int(len(values)),
        }
    return MonitoringReference(
        class_names=class_names,
        class_histograms=class_histograms,
        baseline=baseline,
        class_confidence=class_confidence,
        config=config,
        counts={"train_images": int(len(train_images)), "val_images": int(len(val_images)), "baseline": int(len(keep))},
    )


def class_mean_histograms(images, labels, num_classes, bins=metrics.BINS, batch_size=4096):
    """Mean colour histogram of each class, (classes, channels, bins); batched to bound memory."""
    labels = np.asarray(labels)
    channels = images.shape[-1]
    sums = np.zeros((num_classes, channels, bins))
    for start in range(0, len(images), batch_size):
        histograms = metrics.colour_histograms(images[start:start + batch_size], bins)
        np.add.at(sums, labels[start:start + batch_size], histograms)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes].astype(np.float64)
    overall = sums.sum(axis=0) / max(counts.sum(), 1.0)
    # A class without training images (never in practice) is measured against all images.
    return np.where(counts[:, None, None] > 0, sums / np.maximum(counts, 1.0)[:, None, None], overall)


def upload_metrics(image, probabilities, reference, class_names=None):
    """The metrics of one upload, for PredictionLog.append: called by the service per prediction.

    `image` is the model-input uint8 image, `probabilities` the CNN's class probabilities. Returns
    {confidence, entropy, histogram_distance, predicted_class, colour_histogram}; without a
    reference the histogram distance is NaN (logged as unknown) and the class is named from
    `class_names` (the bundle's).
    """
    reference = as_reference(reference)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    bins = reference.config.bins if reference is not None else metrics.BINS
    histogram = metrics.colour_histogram(image, bins)
    predicted = int(np.argmax(probabilities))
    if reference is None:
        distance = float("nan")
        name = str(class_names[predicted]) if class_names is not None else str(predicted)
    else:
        if len(probabilities) != len(reference.class_names):
            raise ValueError(f"{len(probabilities)} probabilities for {len(reference.class_names)} classes.")
        if histogram.shape != reference.class_histograms.shape[1:]:
            raise ValueError(f"Image histogram {histogram.shape} does not match the reference {reference.class_histograms.shape[1:]}.")
        # Against the training histogram of the CNN's class, as the validation baseline was measured:
        # a drift statistic of the pictures and the CNN, whatever the answer was.
        distance, name = metrics.hellinger_distance(histogram, reference.class_histograms[predicted]), reference.class_names[predicted]
    return {
        "confidence": metrics.confidence(probabilities),
        "entropy": metrics.intensity_entropy(image),
        "histogram_distance": distance,
        "predicted_class": name,
        "colour_histogram": histogram,
    }
