"""A bundle folder's file names, its manifest, and where a bundle comes from.

    directory = resolve("assets")        # a folder, or a Hugging Face Hub repo id for users online
    manifest = read_manifest(directory)

Layout of a bundle folder (each optional artefact is read by its own package's loader):

    bundle.json               class names, preprocessing, file names, versions
    model.tflite              the CNN, exported by the build (bundle.litert runs it): outputs
                              "features", "logits", "probabilities" and the pooled layers the OOD
                              detector reads
    model.keras               the same CNN in Keras, float32, for the build side and anyone's own loader
    extractor.json, *.tflite  a transfer bundle's frozen TFLite feature extractor; the model is then
                              the head on its features (classifier.transfer)
    answer_rule.json          the answer rule's tuned thresholds (service.answer)
    config.json, metrics.json, history.json, figures/*.png, reports/
    ood_detector.joblib       the detector the OOD table chose (pipeline.ood_stage)
    noise_gate.json           ood.NoiseGate: pictures of pure noise are refused before the CNN
    gallery.npz               similarity.NearestTrainingImages
    monitoring_reference.json monitoring.MonitoringReference (class mean histograms, baselines)
    fallback/                 the ImageNet fallback model and its label map (fallback)
"""

import json
import re
import socket
from pathlib import Path

MANIFEST = "bundle.json"
MODEL_FILE = "model.keras"
OOD_FILE = "ood_detector.joblib"
NOISE_GATE_FILE = "noise_gate.json"
GALLERY_FILE = "gallery.npz"
MONITORING_FILE = "monitoring_reference.json"
FALLBACK_DIR = "fallback"
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class BundleUnavailable(RuntimeError):
    """A bundle that cannot be loaded: missing folder, a Hub repo while offline, an old layout."""


def read_manifest(directory):
    return json.loads((Path(directory) / MANIFEST).read_text())


def read_json(path, default):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default


def resolve(source):
    """A bundle folder: `source` itself, or a Hub model repo (`owner/name`) downloaded to the cache."""
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


def reachable(host, port, timeout):
    """Whether a TCP connection to host:port opens within `timeout` seconds (online checks)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
