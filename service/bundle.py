"""The bundle, as the server loads it: every trained artefact the app needs, in one folder, loaded once.

    bundle = Bundle.load("assets")              # or a Hugging Face Hub repo id, for users online
    out = bundle.embed(bundle.preprocess(["photo.jpg"]))   # features, logits, probabilities

The folder's layout and file names are bundle.files'; the CNN runs from model.tflite with LiteRT
(bundle.litert), so loading a bundle needs no TensorFlow and no Keras.
"""

from dataclasses import dataclass, field

import numpy as np

from bundle.embedding import embed, with_temperature
from bundle.files import (
    FALLBACK_DIR, GALLERY_FILE, MONITORING_FILE, NOISE_GATE_FILE, OOD_FILE, BundleUnavailable, read_json, read_manifest, resolve,
)
from bundle.images import Preprocessing, to_model_input
from bundle.litert import CNNRuntime, ModelUnavailable
from service.answer import AnswerRule


@dataclass
class Bundle:
    directory: object  # pathlib.Path
    cnn: object  # bundle.litert.CNNRuntime
    class_names: tuple
    preprocessing: Preprocessing
    manifest: dict
    metrics: dict = field(default_factory=dict)
    answer_rule: AnswerRule = field(default_factory=AnswerRule)
    ood_detector: object = None
    noise_gate: object = None
    gallery: object = None
    monitoring_reference: object = None
    fallback: object = None

    @classmethod
    def load(cls, source="assets", with_fallback=True):
        """Load a bundle folder, or download one from the Hugging Face Hub (`owner/name`)."""
        from monitoring import MonitoringReference
        from ood import NoiseGate, load_detector
        from similarity import NearestTrainingImages

        directory = resolve(source)
        manifest = read_manifest(directory)
        answer_rule = _answer_rule(directory)  # an old bundle is refused before its model loads
        try:
            cnn = CNNRuntime.load(directory)
        except ModelUnavailable as error:
            raise BundleUnavailable(str(error)) from None
        bundle = cls(
            directory=directory,
            cnn=cnn,
            class_names=tuple(manifest["class_names"]),
            preprocessing=Preprocessing.from_dict(manifest["preprocessing"]),
            manifest=manifest,
            metrics=read_json(directory / "metrics.json", {}),
            answer_rule=answer_rule,
        )
        if (directory / OOD_FILE).exists():
            bundle.ood_detector = load_detector(directory / OOD_FILE)
        if (directory / NOISE_GATE_FILE).exists():
            bundle.noise_gate = NoiseGate.load(directory / NOISE_GATE_FILE)
        if (directory / GALLERY_FILE).exists():
            bundle.gallery = NearestTrainingImages.load(directory / GALLERY_FILE)
        if (directory / MONITORING_FILE).exists():
            bundle.monitoring_reference = MonitoringReference.load(directory / MONITORING_FILE)
        if with_fallback and (directory / FALLBACK_DIR).exists():
            from fallback import load_fallback

            bundle.fallback = load_fallback(directory / FALLBACK_DIR)
        return bundle

    @property
    def version(self):
        """The bundle's version: the one the learning step wrote into its manifest, else the
        first 12 hex digits of its model file's sha256 (a bundle from pipeline.build)."""
        if "version" not in self.manifest:
            import hashlib

            from bundle.litert import LITERT_FILE

            self.manifest["version"] = "build-" + hashlib.sha256((self.directory / LITERT_FILE).read_bytes()).hexdigest()[:12]
        return self.manifest["version"]

    @property
    def input_shape(self):
        p = self.preprocessing
        return (p.height, p.width, p.channels)

    def preprocess(self, sources):
        """Pictures (paths, bytes, PIL images, arrays) -> float32 batch in [0, 1]."""
        return np.stack([to_model_input(source, self.preprocessing) for source in sources])

    def embed(self, x, batch_size=512):
        """A float batch in [0, 1] (or a uint8 batch) -> bundle.embedding.Embedding, its
        probabilities calibrated with the bundle's temperature (fitted by the build)."""
        return with_temperature(embed(self.cnn, x, batch_size), self.manifest.get("temperature", 1.0))


def _answer_rule(directory):
    try:
        return AnswerRule.load(directory)
    except ValueError as error:
        raise BundleUnavailable(str(error)) from None
