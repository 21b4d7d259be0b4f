"""The one answer rule: which stage answers an upload, or why none does. Every threshold it uses
and every sentence a person reads about a decision live here.

    rule = AnswerRule.load(bundle_dir)      # answer_rule.json, tuned by the build
    decision = rule.decide(cnn_probabilities, ood_inlier, consult, class_names, thumbnail=False)
    decision = rule.refuse_noise(correlation, gate.natural_min_)   # the noise gate refused the pixels

The rule, in order:
1. The noise gate (ood.noise), on pixels alone, before any model: a picture of pure static is
   refused; the CNN is not asked.
2. A thumbnail (an upload no larger than the CNN's own input, like the CIFAR-10 pictures it
   trained on) gives the 224-pixel ImageNet model almost nothing to see, so the CNN and the OOD
   detector decide alone: the CNN answers when the detector calls the picture an inlier and the
   CNN is at least thumbnail_cnn_threshold sure; otherwise the app refuses.
3. The CNN answers when its top probability is at least cnn_confidence_threshold and the OOD
   detector calls the picture an inlier (no detector counts as inlier).
4. Otherwise the ImageNet fallback is consulted (only now: it costs a second model). It spreads
   its probability over our classes through the WordNet label map; if our best class holds at
   least fallback_mass_threshold of it, the fallback answers, and says so.
5. Otherwise (or with no fallback to consult) the app refuses, in one of two sentences:
   - UNKNOWN, the seed's "not in our training set", when the picture looks like none of our
     classes: static; a thumbnail the OOD detector calls unknown; a photo on which the ImageNet
     model puts less than unsure_mass_threshold on all our classes together (or, with no fallback,
     that the detector calls unknown);
   - UNSURE, "Not sure enough to answer.", when it looks like ours but the models disagree or
     are unsure between our classes: the detector accepts a thumbnail the CNN is not sure of; the
     ImageNet model puts much on our classes, but not enough on any one. The verdict names no
     class; the detail line and the gallery show the candidates.

The build (pipeline.fallback_stage) tunes the thresholds for each new CNN and writes them to the
bundle's answer_rule.json. The defaults are untuned middle values for a bundle that has none.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bundle.atomic import write_json_atomic

CNN, FALLBACK, REFUSED = "cnn", "fallback", "refused"
RULE_FILE = "answer_rule.json"
# Where bundles built before the rule had a file of its own kept its thresholds: such a bundle is
# refused with a plain "rebuild it", not read.
OLD_RULE_FILE = "fallback/fallback_config.json"
REFUSAL = "Sorry, your image label is not in our training set"
UNSURE = "Not sure enough to answer."
# The two refusals (Decision.refusal): the picture looks like none of our classes, or like ours
# but not surely one of them.
UNKNOWN_KIND, UNSURE_KIND = "unknown", "unsure"


@dataclass(frozen=True)
class Decision:
    class_index: int | None  # None when refused
    answered_by: str  # CNN, FALLBACK or REFUSED
    confidence: float  # the CNN's top probability, or the fallback's mass on its best class
    detail: str  # one sentence for the person who uploaded the picture
    class_masses: tuple | None = None  # the fallback's mass per class, when it was consulted
    refused_by: str | None = None  # "noise_gate", "thumbnail", "no_fallback" or "fallback" when refused
    refusal: str | None = None  # UNKNOWN_KIND or UNSURE_KIND when refused

    @property
    def refused(self):
        return self.answered_by == REFUSED


@dataclass(frozen=True)
class AnswerRule:
    cnn_confidence_threshold: float = 0.6
    fallback_mass_threshold: float = 0.5
    thumbnail_cnn_threshold: float = 0.5
    # A refused photo on which the ImageNet model puts at least this much on all our classes
    # together looks like ours: "not sure", not "not in our training set" (rule 5).
    unsure_mass_threshold: float = 0.5
    # An upload the fallback answers with at least this mass on its class is kept as learning
    # material (service.corrections: source "fallback"), for review; 1.0 keeps none.
    teach_mass_threshold: float = 1.0

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], not {value}.")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        # Rules from before the thumbnail rule lack its threshold and get the default.
        return cls(**{name: float(values[name]) for name in asdict(cls()) if name in values})

    def save(self, bundle_dir, tuning=None):
        write_json_atomic(Path(bundle_dir) / RULE_FILE, {**self.to_dict(), "tuning": tuning})

    @classmethod
    def load(cls, bundle_dir):
        """The bundle's tuned rule; the defaults when it has none. ValueError for a bundle of the
        old layout, whose thresholds sit in its fallback's config."""
        path = Path(bundle_dir) / RULE_FILE
        if path.is_file():
            return cls.from_dict(json.loads(path.read_text()))
        old = Path(bundle_dir) / OLD_RULE_FILE
        if old.is_file() and "policy" in json.loads(old.read_text()):
            raise ValueError(f"{bundle_dir} was built by an older version (its answer rule is in {OLD_RULE_FILE}); "
                             "rebuild it with: python -m pipeline.build")
        return cls()

    def teaches(self, answered_by, confidence):
        """Whether an answer becomes learning material: the fallback's, at least teach_mass_threshold
        sure (1.0: none)."""
        return answered_by == FALLBACK and self.teach_mass_threshold < 1.0 and confidence >= self.teach_mass_threshold

    def decide(self, cnn_probabilities, ood_inlier=True, consult=None, class_names=None, thumbnail=False):
        """cnn_probabilities: (classes,); ood_inlier: True/False, +1/-1 or None (no detector);
        consult: a callable returning the fallback's (classes,) masses, or None when there is no
        fallback; thumbnail: the upload is no larger than the CNN's input (never consults)."""
        class_names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(len(cnn_probabilities)))
        probabilities = _as_vector(cnn_probabilities, len(class_names), "cnn_probabilities")
        best = int(np.argmax(probabilities))
        confidence = float(probabilities[best])
        outlier = _is_outlier(ood_inlier)
        threshold = self.thumbnail_cnn_threshold if thumbnail else self.cnn_confidence_threshold
        if not outlier and confidence >= threshold:
            return Decision(best, CNN, confidence, f"The classifier is {confidence:.0%} sure: {_name(class_names, best)}.")
        why = (
            "The picture looks unlike anything the classifier was trained on"
            if outlier
            else f"The classifier was unsure ({confidence:.0%} for {_name(class_names, best)})"
        )
        kind = UNKNOWN_KIND if outlier else UNSURE_KIND
        if thumbnail:
            return Decision(None, REFUSED, confidence, f"{why}, and a picture this small is the classifier's alone to judge "
                            "(the ImageNet model needs a larger photo), so it will not guess.", refused_by="thumbnail",
                            refusal=kind)
        if consult is None:
            return Decision(None, REFUSED, confidence, f"{why}, and no fallback model is available, so it will not guess.",
                            refused_by="no_fallback", refusal=kind)
        masses = _as_vector(consult(), len(class_names), "the fallback's class masses")
        fallback_best = int(np.argmax(masses))
        mass = float(masses[fallback_best])
        kept = tuple(float(m) for m in masses)
        if mass >= self.fallback_mass_threshold:
            detail = f"{why}; the ImageNet model answered: {mass:.0%} of its probability falls on {_name(class_names, fallback_best)}."
            return Decision(fallback_best, FALLBACK, mass, detail, kept)
        total = float(masses.sum())
        if total >= self.unsure_mass_threshold:
            runner_up = int(np.argsort(-masses)[1])
            detail = (f"{why}, and the ImageNet model puts {total:.0%} on our classes, but only {mass:.0%} on the most "
                      f"likely one ({_name(class_names, fallback_best)}; then {_name(class_names, runner_up)} "
                      f"{masses[runner_up]:.0%}): probably one of ours, but not surely which.")
            return Decision(None, REFUSED, mass, detail, kept, refused_by="fallback", refusal=UNSURE_KIND)
        # A best class holding nothing is no best class: name it only when it holds a share.
        best_named = f" (best: {_name(class_names, fallback_best)})" if mass >= 0.005 else ""
        detail = (
            f"{why}, and the ImageNet model puts only {mass:.0%} on any one of our classes"
            f"{best_named}, so this is probably none of them."
        )
        return Decision(None, REFUSED, mass, detail, kept, refused_by="fallback", refusal=UNKNOWN_KIND)

    @staticmethod
    def refuse_noise(correlation, natural_min):
        """Rule 1: the noise gate found the neighbouring pixels unrelated."""
        return Decision(None, REFUSED, 0.0, (
            f"The picture looks like random noise: its neighbouring pixels are unrelated (correlation {correlation:.2f}; "
            f"every training picture is above {natural_min:.2f}), so the classifier will not guess."), refused_by="noise_gate",
            refusal=UNKNOWN_KIND)


def verdict(decision, class_names):
    """The big line on the page."""
    if decision.answered_by == REFUSED:
        return UNSURE if decision.refusal == UNSURE_KIND else REFUSAL
    name = _name(class_names, decision.class_index)
    if decision.answered_by == FALLBACK:
        return f"This looks like: {name} (answered by the ImageNet fallback model, {decision.confidence:.0%})"
    return f"This looks like: {name} ({decision.confidence:.0%})"


def under_the_hood(decision, class_names, cnn_top, noise=None, ood=None, imagenet_top=None, thumbnail=False):
    """What each stage said, in plain words, one line each, in the order they ran.

    noise: (correlation, threshold) or None when the gate did not judge; ood: (inlier, score) or
    None without a detector; imagenet_top: the fallback's [{imagenet_class, probability,
    our_class}] when it was consulted; cnn_top: the CNN's [(class, probability)], best first."""
    lines = []
    if noise is None:
        lines.append("**Noise gate**: did not judge (the picture is too small to tell static from a picture).")
    else:
        correlation, threshold = noise
        verdict_ = "static: refused before any model was asked" if correlation < threshold else "a real picture"
        lines.append(f"**Noise gate**: neighbouring pixels correlate {correlation:.2f} (static is below {threshold:.2f}): {verdict_}.")
    seen = ", ".join(f"{_name(class_names, class_names.index(name))} {p:.0%}" for name, p in cnn_top)
    used = "its answer" if decision.answered_by == CNN else "not used for the answer"
    lines.append(f"**The small CNN** (trained on our {len(class_names)} classes; {used}): {seen}.")
    best = cnn_top[0][0].replace("_", " ")
    if ood is None:
        lines.append("**Unknown-picture check**: this bundle has no OOD detector.")
    else:
        inlier, score = ood
        meaning = (f"like the training pictures of {best}: the CNN may be trusted" if inlier
                   else f"unlike the training pictures of {best}: the CNN's guess is not trusted")
        lines.append(f"**Unknown-picture check** on the CNN's class, {best}: score {score:+.2f} "
                     f"(0 is the line that keeps 95% of our own validation pictures; above it is normal): {meaning}.")
    if imagenet_top:
        shown = "; ".join(
            f"{item['imagenet_class']} {item['probability']:.0%} → "
            + (item["our_class"].replace("_", " ") if item["our_class"] else "none of our classes")
            for item in imagenet_top)
        lines.append(f"**The ImageNet model** (1,000 classes, mapped onto ours through WordNet): {shown}.")
    elif decision.refused_by == "noise_gate":
        lines.append("**The ImageNet model**: not asked (the noise gate refused the picture).")
    elif thumbnail:
        lines.append("**The ImageNet model**: not asked (a picture this small is the CNN's alone to judge).")
    elif decision.answered_by == CNN:
        lines.append("**The ImageNet model**: not asked (the CNN was sure enough, and the picture looks familiar).")
    else:
        lines.append("**The ImageNet model**: none in this bundle.")
    return lines


def relabel_message(label):
    return f"Based on the image you selected, your label is {label.replace('_', ' ')}"


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
