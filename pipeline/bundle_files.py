"""What the build writes into a bundle folder beside the fitted stages: the exported CNN, the
manifest, and what the bundle was trained on; and sharing a bundle on the Hugging Face Hub.

    export_model(keras_model, work_dir)            # model.keras (float32) and model.tflite
    write_manifest(work_dir, class_names, preprocessing, extra)
    data_config = recorded_data_config("assets")   # the DataConfig a bundle was trained on
"""

import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from bundle.atomic import write_json_atomic
from bundle.files import MANIFEST, MODEL_FILE, BundleUnavailable
from bundle.images import Preprocessing
from bundle.litert import LITERT_FILE


def export_model(model, directory):
    """Save the CNN as the server runs it: float32 model.keras (without the optimizer's state) and
    model.tflite exported from it (classifier.export). Returns the float32 Keras model."""
    from classifier.export import export_litert, float32_model

    model = float32_model(model)
    model.save(Path(directory) / MODEL_FILE)
    export_litert(model, Path(directory) / LITERT_FILE)
    return model


def write_manifest(directory, class_names, preprocessing, extra=None):
    import keras
    import sklearn

    manifest = {
        "class_names": list(class_names),
        "preprocessing": preprocessing.to_dict(),
        "model": LITERT_FILE,
        "keras_model": MODEL_FILE,
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
