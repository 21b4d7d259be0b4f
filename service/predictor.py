"""The service layer: one upload in, one honest answer out. No Gradio here.

    predictor = Predictor(Bundle.load("assets"), log=PredictionLog(path), feedback=FeedbackStore(dir))
    prediction = predictor.predict("photo.jpg")     # raises ImageError with a plain message
    predictor.relabel(prediction, "ship")           # "Based on the image you selected, your label is ship"

One prediction: decode the upload (EXIF, first frame, any mode) -> Lanczos to the model's input ->
CNN features and probabilities -> OOD detector on the predicted class -> the noise gate (pictures of
pure noise are refused whatever the CNN says) -> fallback policy (the
ImageNet model runs only when the CNN is unsure or the detector refuses, and never for a thumbnail
no larger than the CNN's input) -> the gallery of
nearest training images from the top classes -> one row in the monitoring log.
"""

import threading
from dataclasses import dataclass, field

import numpy as np

from classifier.images import ImageError, open_image, to_mode, to_uint8

REFUSAL = "Sorry, your image label is not in our training set"


@dataclass(frozen=True)
class PredictorConfig:
    top_k: int = 3
    gallery_size: int = 4
    gallery_mode: str = "per_class"  # one nearest image from each of the top classes


@dataclass
class Prediction:
    answered_by: str  # "cnn", "fallback" or "refused"
    label: str | None  # None when refused
    confidence: float  # the CNN's top probability, or the fallback's mass on its class
    message: str  # the verdict line
    detail: str  # one sentence on why
    top_classes: list  # the CNN's [(class name, probability)], best first
    ood_inlier: bool | None  # None: the bundle has no detector
    ood_score: float | None  # decision function: below 0 means "unlike our training images"
    imagenet_top: list | None  # the fallback's top ImageNet classes, when it was consulted
    gallery: list = field(default_factory=list)  # similarity.Neighbour items
    model_input: np.ndarray = None  # uint8 picture the CNN saw
    image: object = None  # the decoded upload (PIL), kept so a correction can be saved
    log_id: int | None = None


class Predictor:
    def __init__(self, bundle, log=None, feedback=None, config=PredictorConfig()):
        self.bundle = bundle
        self.log = log
        self.feedback = feedback
        self.config = config
        self.reference = None
        if bundle.monitoring_reference is not None:
            from monitoring import as_reference

            self.reference = as_reference(bundle.monitoring_reference)
        # TensorFlow serialises model calls anyway; one lock keeps the TFLite interpreter and
        # the Keras model from being entered by two request threads at once.
        self._model_lock = threading.Lock()

    @property
    def class_names(self):
        return self.bundle.class_names

    def predict(self, source):
        image = open_image(source)
        pixels = to_uint8(image, self.bundle.preprocessing)
        x = pixels[None].astype(np.float32) * np.float32(self.bundle.preprocessing.scale)
        with self._model_lock:
            embedding = self.bundle.embed(x)
        probabilities = embedding.probabilities[0]
        predicted = int(np.argmax(probabilities))
        ood_inlier, ood_score = self._ood(embedding.features, predicted)
        noise = self._noise(image, pixels, probabilities)
        decision, imagenet_top = (noise, None) if noise is not None else self._decide(image, probabilities, ood_inlier)

        label = None if decision.class_index is None else self.class_names[decision.class_index]
        prediction = Prediction(
            answered_by=decision.answered_by,
            label=label,
            confidence=float(decision.confidence),
            message=_verdict(decision.answered_by, label, decision.confidence),
            detail=decision.detail,
            top_classes=[(self.class_names[i], float(probabilities[i])) for i in np.argsort(-probabilities)[: self.config.top_k]],
            ood_inlier=ood_inlier,
            ood_score=ood_score,
            imagenet_top=imagenet_top,
            gallery=self._gallery(probabilities, embedding.features[0], pixels),
            model_input=pixels,
            image=image,
        )
        prediction.log_id = self._log(prediction, probabilities)
        return prediction

    def relabel(self, prediction, label):
        """Save the upload with the label the user chose; tag its log row. Returns the answer line."""
        if label not in self.class_names:
            raise ValueError(f"{label!r} is not one of our classes.")
        if self.feedback is not None:
            self.feedback.save(prediction.image, label, source="gallery", predicted=prediction.label)
        if self.log is not None and prediction.log_id is not None:
            self.log.tag(prediction.log_id, label)
        return f"Based on the image you selected, your label is {label.replace('_', ' ')}"

    def dashboard(self):
        from monitoring import render

        if self.log is None or self.reference is None:
            return None
        return render(self.log, self.reference)

    def _ood(self, features, predicted):
        detector = self.bundle.ood_detector
        if detector is None:
            return None, None
        classes = np.array([predicted])
        score = float(detector.decision_function(features, classes)[0])
        return bool(score >= 0), score

    def _noise(self, image, pixels, probabilities):
        """A refusal Decision if the noise gate takes the upload for noise, else None."""
        from fallback.policy import REFUSED, Decision

        gate = self.bundle.noise_gate
        view = None if gate is None else gate.view(image, pixels)
        if view is None:
            return None
        correlation = float(gate.score_samples(view)[0])
        if correlation >= gate.threshold_:
            return None
        return Decision(None, REFUSED, float(np.max(probabilities)), (
            f"The picture looks like random noise: its neighbouring pixels are unrelated (correlation {correlation:.2f}; "
            f"every training picture is above {gate.natural_min_:.2f}), so the classifier will not guess."))

    def _decide(self, image, probabilities, ood_inlier):
        from fallback import FallbackPolicy

        preprocessing = self.bundle.preprocessing
        thumbnail = image.width <= preprocessing.width and image.height <= preprocessing.height
        fallback = self.bundle.fallback
        if fallback is None:
            return FallbackPolicy().decide(probabilities, ood_inlier, None, self.class_names, thumbnail), None
        # The ImageNet model runs only if the policy consults it.
        consultation = fallback.consult(to_mode(image, 3))
        with self._model_lock:
            decision = fallback.policy.decide(probabilities, ood_inlier, consultation, self.class_names, thumbnail)
        return decision, (consultation.result.top if consultation.result is not None else None)

    def _gallery(self, probabilities, features, pixels):
        from similarity import gallery_for

        gallery = self.bundle.gallery
        if gallery is None:
            return []
        query = pixels if getattr(gallery, "metric", "cosine") == "l1-pixels" else features
        neighbours = gallery_for(gallery, probabilities, query, k=self.config.gallery_size, mode=self.config.gallery_mode)
        # A gallery saved without pictures has nothing to show a person.
        return [neighbour for neighbour in neighbours if neighbour.thumbnail is not None]

    def _log(self, prediction, probabilities):
        if self.log is None:
            return None
        from monitoring import upload_metrics

        metrics = upload_metrics(prediction.model_input, probabilities, self.reference, self.class_names)
        return self.log.append({
            **metrics,
            "answered_by": prediction.answered_by,
            "ood": prediction.ood_inlier is False,
            "image": prediction.model_input,
        })


def _verdict(answered_by, label, confidence):
    if answered_by == "refused":
        return REFUSAL
    name = label.replace("_", " ")
    if answered_by == "fallback":
        return f"This looks like: {name} (answered by the ImageNet fallback model, {confidence:.0%})"
    return f"This looks like: {name} ({confidence:.0%})"


__all__ = ["ImageError", "Prediction", "Predictor", "PredictorConfig", "REFUSAL"]
