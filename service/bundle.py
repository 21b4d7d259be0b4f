"""The bundle: every trained artefact the app needs, in one folder, loaded once.

    bundle = Bundle.load("assets")              # or a Hugging Face Hub repo id, for users online
    out = bundle.embed(bundle.preprocess(["photo.jpg"]))   # features, logits, probabilities

Layout of a bundle folder (each optional artefact is read by its own package's loader):

    bundle.json               class names, preprocessing, file names, versions
    model.keras               the CNN (layers "features", "logits", "probabilities")
    extractor.json, *.tflite  a transfer bundle's frozen TFLite feature extractor; model.keras is
                              then the head on its features (classifier.transfer)
    answer_rule.json          the answer rule's tuned thresholds (service.answer)
    config.json, metrics.json, history.json, figures/*.png, reports/
    ood_detector.joblib       the detector the OOD table chose (pipeline.ood_stage; its `reads` names
                              the CNN output it scores: features or ood_features)
    noise_gate.json           ood.NoiseGate: pictures of pure noise are refused before the CNN
    gallery.npz               similarity.NearestTrainingImages
    monitoring_reference.json monitoring.MonitoringReference (class mean histograms, baselines)
    fallback/                 the ImageNet fallback model and its label map (fallback)
"""

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from classifier.atomic import write_json_atomic
from classifier.embedding import embed, feature_model
from classifier.images import Preprocessing, to_model_input
from service.answer import AnswerRule

MANIFEST = "bundle.json"
MODEL_FILE = "model.keras"
OOD_FILE = "ood_detector.joblib"
NOISE_GATE_FILE = "noise_gate.json"
GALLERY_FILE = "gallery.npz"
MONITORING_FILE = "monitoring_reference.json"
FALLBACK_DIR = "fallback"
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class BundleUnavailable(RuntimeError):
    """A bundle that cannot be loaded: missing folder, or a Hub repo while offline."""


@dataclass
class Bundle:
    directory: Path
    model: object
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
        import keras

        from monitoring import MonitoringReference
        from ood import NoiseGate, load_detector
        from similarity import NearestTrainingImages

        directory = _resolve(source)
        manifest = json.loads((directory / MANIFEST).read_text())
        answer_rule = _answer_rule(directory)  # an old bundle is refused before its model loads
        bundle = cls(
            directory=directory,
            model=keras.saving.load_model(directory / MODEL_FILE, compile=False),
            class_names=tuple(manifest["class_names"]),
            preprocessing=Preprocessing.from_dict(manifest["preprocessing"]),
            manifest=manifest,
            metrics=_read_json(directory / "metrics.json", {}),
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
    def input_shape(self):
        p = self.preprocessing
        return (p.height, p.width, p.channels)

    def preprocess(self, sources):
        """Pictures (paths, bytes, PIL images, arrays) -> float32 batch in [0, 1]."""
        return np.stack([to_model_input(source, self.preprocessing) for source in sources])

    def embed(self, x, batch_size=512):
        """A float batch in [0, 1] (or a uint8 batch) -> classifier.embedding.Embedding."""
        if getattr(self, "_extractor", None) is None:
            # A transfer bundle on TFLite features (classifier.transfer) runs its .tflite, then model.keras.
            self._extractor = feature_model(self.model, self.directory)
        return embed(self._extractor, x, batch_size)


def write_manifest(directory, class_names, preprocessing, extra=None):
    import keras
    import sklearn

    manifest = {
        "class_names": list(class_names),
        "preprocessing": preprocessing.to_dict(),
        "model": MODEL_FILE,
        "feature_layer": "features",
        "versions": {"keras": keras.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__},
        **(extra or {}),
    }
    write_json_atomic(Path(directory) / MANIFEST, manifest)
    return manifest


def recorded_data_config(directory):
    """The DataConfig a bundle folder was trained on, from its config.json (to rebuild its splits)."""
    path = Path(directory) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: its train.data says which data the bundle was trained on.")
    return data_config_from_json(json.loads(path.read_text())["train"]["data"])


def data_config_from_json(values):
    """The DataConfig a bundle's config.json recorded (JSON turned its tuples into lists)."""
    from classifier.dataset import DataConfig

    unknown = sorted(set(values) - {f.name for f in fields(DataConfig)})
    if unknown:
        raise ValueError(f"config.json's train.data has settings that DataConfig does not know: {unknown}. "
                         "The bundle was built by another version of classifier.dataset; rebuild it with python -m pipeline.build.")
    values = {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
    if "preprocessing" in values:
        values["preprocessing"] = Preprocessing(**values["preprocessing"])
    return DataConfig(**values)


def push_to_hub(directory, repo_id, token=None):
    """Upload a bundle folder to a Hub model repository (needs network and a token)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        return api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model")
    except Exception as error:
        raise BundleUnavailable(f"Could not push to the Hugging Face Hub repo {repo_id!r}: {error}") from error


def _resolve(source):
    path = Path(source)
    if path.is_dir():
        if not (path / MANIFEST).exists():
            raise BundleUnavailable(f"{path} is not a bundle folder (no {MANIFEST}). Build one with: python -m pipeline.build")
        return path
    if HUB_REPO_ID.match(str(source)) and not path.exists():
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id=str(source), repo_type="model"))
        except Exception as error:
            raise BundleUnavailable(
                f"Could not download the bundle {source!r} from the Hugging Face Hub "
                f"({type(error).__name__}); this machine may be offline. Use a local folder such as assets/."
            ) from error
    raise BundleUnavailable(f"No bundle at {source!r}: give a bundle folder or a Hub repo id (owner/name).")


def _answer_rule(directory):
    try:
        return AnswerRule.load(directory)
    except ValueError as error:
        raise BundleUnavailable(str(error)) from None


def _read_json(path, default):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default
