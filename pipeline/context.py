"""What every build stage is given.

    metrics = stage.run(context[, stage_config])   # ood, gallery, monitoring, fallback, errors (pipeline.build.STAGES)
    examples_stage.run(dataset, context, folder)   # the example photos: it reads the dataset, returns nothing

The stages write into context.out_dir and return their figures for metrics.json.
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass
class BuildContext:
    bundle: object  # service.bundle.Bundle being built (its detector is set once the OOD stage ran)
    dataset: object  # classifier.dataset.Dataset
    embeddings: dict  # {"train", "val", "test"}: bundle.embedding.Embedding of each split
    out_dir: Path  # the bundle folder being written
    data_config: object  # classifier.dataset.DataConfig the CNN was trained on
    data_dir: str | None = None  # the data folder for the evaluation sets (OOD sets, photos); None: none
    model: object = None  # the Keras model model.tflite was exported from (float32); None: read from model.keras

    def keras_model(self):
        """The CNN in Keras (its layers' weights, its feature maps), as the bundle folder saved it."""
        if self.model is None:
            import keras

            from bundle.files import MODEL_FILE

            self.model = keras.saving.load_model(self.bundle.directory / MODEL_FILE, compile=False)
        return self.model

    def data_path(self, *parts):
        """A path in the data folder, or None when there is no data folder or nothing there."""
        if not self.data_dir:
            return None
        path = Path(self.data_dir, *parts)
        return path if path.exists() else None
