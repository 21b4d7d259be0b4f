"""When the small CNN is unsure, ask the ImageNet model; when neither is sure, refuse.

    policy = FallbackPolicy()
    decision = policy.decide(cnn_probabilities, ood_inlier, consult=lambda: fallback.class_masses([image])[0])

The rule, in order:
0. A thumbnail (an upload no larger than the CNN's own input, like the CIFAR-10 pictures it
   trained on) gives the 224-pixel ImageNet model almost nothing to see, so the CNN and the OOD
   detector decide alone: the CNN answers when the detector calls the picture an inlier and the
   CNN is at least thumbnail_cnn_threshold sure; otherwise the system refuses.
1. The CNN answers when its top probability is at least cnn_confidence_threshold and the OOD
   detector calls the picture an inlier (no detector counts as inlier).
2. Otherwise the fallback is consulted (only now, since it costs a second model): it spreads its
   ImageNet probability over our classes through the label map. If our best class holds at least
   fallback_mass_threshold of it, the fallback answers, and says so.
3. Otherwise (or with no fallback to consult) the system refuses.

The build stage (fallback.build) tunes both thresholds for each new CNN on Tiny ImageNet val (never
on the photos the acceptance bench uses) and stores them in fallback_config.json, which
load_fallback reads into Fallback.policy; see fallback.tuning for the objective. The defaults
below are untuned middle values for code that has no built fallback folder: a CNN at least 60%
sure answers, and the fallback answers when most of its probability lies on one of our classes.
"""

from dataclasses import asdict, dataclass

import numpy as np

from classifier.labels import CLASS_NAMES

CNN, FALLBACK, REFUSED = "cnn", "fallback", "refused"


@dataclass(frozen=True)
class Decision:
    class_index: int | None  # None when refused
    answered_by: str  # "cnn", "fallback" or "refused"
    confidence: float  # the CNN's top probability, or the fallback's mass on its best class
    detail: str  # one sentence for the person who uploaded the picture
    class_masses: tuple | None = None  # the fallback's mass per class, when it was consulted

    @property
    def refused(self):
        return self.answered_by == REFUSED


@dataclass(frozen=True)
class FallbackPolicy:
    cnn_confidence_threshold: float = 0.6
    fallback_mass_threshold: float = 0.5
    thumbnail_cnn_threshold: float = 0.5

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], not {value}.")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        # Bundles from before the thumbnail rule lack its threshold and get the default.
        names = ("cnn_confidence_threshold", "fallback_mass_threshold", "thumbnail_cnn_threshold")
        return cls(**{name: float(values[name]) for name in names if name in values})

    def needs_fallback(self, cnn_probabilities, ood_inlier=True):
        return _is_outlier(ood_inlier) or float(np.max(cnn_probabilities)) < self.cnn_confidence_threshold

    def decide(self, cnn_probabilities, ood_inlier=True, consult=None, class_names=CLASS_NAMES, thumbnail=False):
        """cnn_probabilities: (classes,); ood_inlier: True/False, +1/-1 or None (no detector);
        consult: a callable returning the fallback's (classes,) masses, or None when there is none;
        thumbnail: the upload is no larger than the CNN's input (rule 0: never consults)."""
        probabilities = _as_vector(cnn_probabilities, len(class_names), "cnn_probabilities")
        best = int(np.argmax(probabilities))
        confidence = float(probabilities[best])
        outlier = _is_outlier(ood_inlier)
        # Rule 0: a thumbnail has its own CNN threshold and never reaches the fallback.
        threshold = self.thumbnail_cnn_threshold if thumbnail else self.cnn_confidence_threshold
        if not outlier and confidence >= threshold:
            return Decision(best, CNN, confidence, f"The classifier is {confidence:.0%} sure: {_name(class_names, best)}.")
        why = (
            "The picture looks unlike anything the classifier was trained on"
            if outlier
            else f"The classifier was unsure ({confidence:.0%} for {_name(class_names, best)})"
        )
        if thumbnail:
            return Decision(None, REFUSED, confidence, f"{why}, and a picture this small is the classifier's alone to judge "
                            "(the ImageNet model needs a larger photo), so it will not guess.")
        if consult is None:
            return Decision(None, REFUSED, confidence, f"{why}, and no fallback model is available, so it will not guess.")
        masses = _as_vector(consult(), len(class_names), "the fallback's class masses")
        fallback_best = int(np.argmax(masses))
        mass = float(masses[fallback_best])
        if mass >= self.fallback_mass_threshold:
            detail = f"{why}; the ImageNet model answered: {mass:.0%} of its probability falls on {_name(class_names, fallback_best)}."
            return Decision(fallback_best, FALLBACK, mass, detail, tuple(float(m) for m in masses))
        detail = (
            f"{why}, and the ImageNet model puts only {mass:.0%} on any one of our classes "
            f"(best: {_name(class_names, fallback_best)}), so this is probably none of them."
        )
        return Decision(None, REFUSED, mass, detail, tuple(float(m) for m in masses))


def _is_outlier(ood_inlier):
    if ood_inlier is None:
        return False
    value = ood_inlier.item() if isinstance(ood_inlier, np.ndarray) else ood_inlier
    if isinstance(value, (bool, np.bool_)):
        return not bool(value)
    if value in (1, -1):  # scikit-learn's outlier convention
        return value == -1
    raise ValueError(f"ood_inlier must be True/False, +1/-1 or None, not {ood_inlier!r}.")


def _as_vector(values, length, what):
    vector = np.asarray(values, dtype=np.float64).reshape(-1)
    if vector.shape != (length,):
        raise ValueError(f"{what} must hold {length} values, not {vector.size}.")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{what} contains NaN or infinite values.")
    return vector


def _name(class_names, index):
    return class_names[index].replace("_", " ")
