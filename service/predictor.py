"""The service layer: one upload in, one honest answer out. No Gradio here.

    predictor = Predictor(Bundle.load("assets"), log=PredictionLog(path))
    # tracker=monitoring.tracking.UploadTracker("state"): each upload's metrics also go to MLflow
    prediction = predictor.predict("photo.jpg")     # raises ImageError with a plain message

Corrections, limits and what a session keeps are service.public's (the page and the JSON API use it).

One upload goes down the floors once: decode (EXIF, first frame, any mode) -> Lanczos to the
model's input -> the noise gate on the pixels -> CNN features and probabilities -> the OOD
detector on the predicted class -> the answer rule (service.answer: static the gate refused is
refused whatever the models say; the ImageNet fallback answers only when the rule consults it, never
for a thumbnail; for a photo it starts beside the CNN, since the rule asks about nearly every
photo) -> the gallery of nearest training images -> one row in the monitoring log.
The CNN measures every upload, refused static included: the log's drift statistics must see
every upload, or a flood of static would never raise the drift alarm.
"""

import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from bundle.images import DecodeBudget, ImageError, is_thumbnail, open_image, read_upload, to_float, to_mode, to_uint8
from service.answer import CNN, REFUSAL, under_the_hood, verdict
from similarity import gallery_for

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictorConfig:
    top_k: int = 3
    gallery_size: int = 4
    gallery_mode: str = "per_class"  # one nearest image from each of the top classes
    # "answer": the gallery's classes are the top classes of the stage that answered (after a
    # refusal: of the stage that judged last), so the page never contradicts its verdict;
    # "cnn": the CNN's own top classes, as before the answer rule owned the page (for comparisons).
    gallery_from: str = "answer"
    # Uploads larger than twice this a side are decoded at a reduced scale (JPEG) or reduced at
    # once after decoding (bundle.images.open_image).
    draft_side: int = 1024
    # The process-wide decode budget (bundle.images.DecodeBudget): uploads read and decoded at
    # once, and megapixels they hold together; None sizes each from the machine (cores, memory).
    # Every route into the models (the page's queue, the JSON API) decodes through it, so peak
    # memory does not depend on which door a request came by (bench.public_link).
    decodes: int | None = None
    decode_megapixels: float | None = None
    decode_wait_s: float = 30.0
    # Start the ImageNet fallback beside the CNN for any upload that is not a thumbnail (the
    # rule asks about nearly every photo); False: only once the rule asks (bench.predict_latency
    # --compare measures both).
    fallback_alongside: bool = True
    # One upload needs only small matrix products from numpy (the OOD detector's bank, the
    # gallery); OpenBLAS's own threads then just fight TensorFlow's and TFLite's for the cores and
    # stretch the slowest uploads (p95 35 -> 27 ms on 2 cores, bench.predict_latency). Applies to
    # the whole process: a Predictor lives in a serving process. None: leave BLAS as it is.
    blas_threads: int | None = 1


@dataclass
class Prediction:
    answered_by: str  # service.answer.CNN, FALLBACK or REFUSED
    label: str | None  # None when refused
    confidence: float  # the CNN's top probability, or the fallback's mass on its class
    message: str  # the verdict line
    detail: str  # one sentence on why
    top_classes: list  # the CNN's [(class name, probability)], best first
    ood_inlier: bool | None  # None: the bundle has no detector
    ood_score: float | None  # decision function: below 0 means "unlike our training images"
    imagenet_top: list | None  # the fallback's top ImageNet classes, when it was consulted
    refused_by: str | None = None  # which rule refused (service.answer.Decision.refused_by)
    refusal: str | None = None  # which refusal: "unknown" (none of our classes) or "unsure" (service.answer)
    noise_correlation: float | None = None  # the noise gate's measure; None when it did not judge
    gallery: list = field(default_factory=list)  # similarity.Neighbour items
    model_input: np.ndarray = None  # uint8 picture the CNN saw
    image: object = None  # the decoded upload (PIL), kept so a correction can be saved
    cnn_probabilities: np.ndarray = None  # (classes,)
    # The answering stage's [(class, share)] over our classes, best first ([] when refused): the
    # CNN's probabilities, or the ImageNet model's mass on each of our classes.
    distribution: list = field(default_factory=list)
    under_the_hood: list = field(default_factory=list)  # one plain line per stage (service.answer)
    bundle_version: str | None = None  # the bundle that answered (service.registry: versions swap while serving)
    teaches: bool = False  # that bundle's rule makes this answer learning material (AnswerRule.teaches)
    picture_hash: str | None = None  # sha256 of the uploaded file's bytes (pixels for arrays), 32 hex digits
    log_id: int | None = None


class Predictor:
    def __init__(self, bundle, log=None, config=PredictorConfig(), tracker=None):
        self.log = log
        # Anything with record(metrics, answered class): monitoring.tracking.UploadTracker queues
        # each upload for MLflow and writes it off the request path.
        self.tracker = tracker
        self.config = config
        self.swap(bundle)
        # TensorFlow serialises model calls anyway; the lock keeps two request threads from
        # entering the Keras model at once. The ImageNet fallback runs on its own single thread
        # (the TFLite interpreter is not thread-safe), beside the CNN.
        self._model_lock = threading.Lock()
        self.decode_budget = DecodeBudget.for_machine(config.decodes, config.decode_megapixels, config.decode_wait_s)
        self._fallback_runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fallback")
        if config.blas_threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(config.blas_threads, user_api="blas")

    def swap(self, bundle):
        """Serve `bundle` from the next request on. A request reads the bundle once, at its start,
        and keeps it to the end: no answer mixes two bundles, and none fails for the swap."""
        reference = None
        if bundle.monitoring_reference is not None:
            from monitoring import as_reference

            reference = as_reference(bundle.monitoring_reference)
        bundle.version  # noqa: B018 (read now, off the request path: it may hash the model file)
        self._serving = (bundle, reference)  # one assignment: atomic between threads

    @property
    def bundle(self):
        return self._serving[0]

    @property
    def reference(self):
        return self._serving[1]

    @property
    def class_names(self):
        return self.bundle.class_names

    def predict(self, source):
        """One upload (bytes, a path, a file, a PIL image or an array) -> Prediction; ImageError
        with a plain message for a bad file, Busy when the decode budget stays full."""
        bundle, reference = self._serving
        with self.decode_budget.decode():
            data = read_upload(source)
            image = open_image(data if data is not None else source, self.config.draft_side, self.decode_budget)
            # The picture's identity, for corrections: the file as sent (two files that differ in
            # a few pixels are two pictures), or the pixels of a picture handed over decoded.
            picture_hash = hashlib.sha256(data if data is not None else np.asarray(image).tobytes()).hexdigest()[:32]
            del data  # the file's bytes leave the budget with its decode
        p, rule, gate = bundle.preprocessing, bundle.answer_rule, bundle.noise_gate
        pixels = to_uint8(image, p)
        thumbnail = is_thumbnail(image, p)
        correlation = None if gate is None else gate.judge(image, pixels)
        static = correlation is not None and correlation < gate.threshold_
        consultation = None
        if not static and bundle.fallback is not None:
            consultation = bundle.fallback.consult(to_mode(image, 3), runner=self._fallback_runner)
            if self.config.fallback_alongside and not thumbnail:
                # The rule asks the ImageNet model about nearly every photo (494 of 500 ImageNet
                # samples), so it starts now and runs beside the CNN: p50 23.6 -> 21.0 ms,
                # p95 30.3 -> 26.2 ms (bench.predict_latency --compare).
                consultation.start()
        with self._model_lock:
            embedding = bundle.embed(to_float(pixels[None], p.scale))
        probabilities, features = embedding.probabilities[0], embedding.features[0]
        ood_inlier, ood_score = _ood(bundle.ood_detector, embedding, int(np.argmax(probabilities)))
        if static:
            decision = rule.refuse_noise(correlation, gate.natural_min_)
        else:
            decision = rule.decide(probabilities, ood_inlier, consultation, bundle.class_names, thumbnail)
            if consultation is not None:
                consultation.cancel()  # a run the rule did not ask for, if it is still waiting
        imagenet_top = None if consultation is None or consultation.result is None else consultation.result.top
        cnn_top = [(name, float(probabilities[i])) for i, name in _top(probabilities, self.config.top_k, bundle.class_names)]
        # Everything the rule says, in one visit: the verdict line and what each stage said.
        message = verdict(decision, bundle.class_names)
        hood = under_the_hood(decision, bundle.class_names, cnn_top, None if correlation is None else (correlation, gate.threshold_),
                              None if ood_inlier is None else (ood_inlier, ood_score), imagenet_top, thumbnail)
        # The answering stage's shares of our classes; after a refusal, those of the last stage
        # that judged (the fallback's masses when it was asked, else the CNN's probabilities).
        shares = probabilities if decision.class_masses is None or decision.answered_by == CNN else np.asarray(decision.class_masses)
        by_answer = self.config.gallery_from == "answer"
        gallery = bundle.gallery
        neighbours = [] if gallery is None else gallery_for(
            gallery, shares if by_answer else probabilities, pixels if gallery.metric == "l1-pixels" else features,
            k=self.config.gallery_size, mode=self.config.gallery_mode, tie_breaker=probabilities if by_answer else None)
        prediction = Prediction(
            answered_by=decision.answered_by,
            label=None if decision.class_index is None else bundle.class_names[decision.class_index],
            confidence=float(decision.confidence), message=message, detail=decision.detail,
            top_classes=cnn_top, ood_inlier=ood_inlier, ood_score=ood_score, imagenet_top=imagenet_top,
            refused_by=decision.refused_by, refusal=decision.refusal, noise_correlation=correlation,
            # A gallery saved without pictures has nothing to show a person.
            gallery=[neighbour for neighbour in neighbours if neighbour.thumbnail is not None],
            model_input=pixels, image=image, cnn_probabilities=probabilities, picture_hash=picture_hash,
            distribution=[] if decision.refused else [
                (name, float(shares[i])) for i, name in _top(shares, len(shares), bundle.class_names, probabilities)],
            under_the_hood=[*hood, f"Answered by model version {bundle.version}."], bundle_version=bundle.version,
            teaches=rule.teaches(decision.answered_by, decision.confidence),
        )
        prediction.log_id = self._log(prediction, reference, bundle.class_names)
        return prediction

    def dashboard(self):
        from monitoring import render

        if self.log is None or self.reference is None:
            return None
        return render(self.log, self.reference)

    def _log(self, prediction, reference, class_names):
        if self.log is None and self.tracker is None:
            return None
        from monitoring import LogError, upload_metrics

        metrics = upload_metrics(prediction.model_input, prediction.cnn_probabilities, reference, class_names)
        if self.tracker is not None:
            self.tracker.record(metrics, prediction.label)
        if self.log is None:
            return None
        try:
            return self.log.append({
                **metrics,
                "answer": prediction.label,
                "answered_by": prediction.answered_by,
                "refusal": prediction.refusal,
                "ood": prediction.ood_inlier is False,
                "image": prediction.model_input,
            })
        except LogError as error:
            # The visitor still gets the answer; the operator's log says the row is missing.
            LOGGER.warning("%s", error)
            return None


def _ood(detector, embedding, predicted):
    if detector is None:
        return None, None
    score = float(detector.decision_function(getattr(embedding, detector.reads), np.array([predicted]))[0])
    return bool(score >= 0), score


def _top(scores, k, class_names, tie_breaker=None):
    """[(index, class name)] of the k highest scores, best first; ties by `tie_breaker` (the CNN's
    probabilities, as the gallery breaks them), then class order."""
    keys = (-np.asarray(scores),) if tie_breaker is None else (-np.asarray(tie_breaker), -np.asarray(scores))
    return [(int(i), class_names[int(i)]) for i in np.lexsort(keys)[:k]]


__all__ = ["ImageError", "Prediction", "Predictor", "PredictorConfig", "REFUSAL"]
