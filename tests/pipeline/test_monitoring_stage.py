"""The monitoring build stage: the drift reference from real images and the real CNN's probabilities."""

import json
from dataclasses import replace

import numpy as np
import pytest

from classifier.dataset import DataConfig, prepare_dataset
from monitoring import MonitoringReference, ReferenceConfig, as_reference
from pipeline.context import BuildContext
from pipeline.monitoring_stage import run
from bundle.files import MONITORING_FILE


@pytest.fixture(scope="module")
def context_parts(cnn_bundle, shared_data):
    """40 real images per class (the smoke build's data) and the committed CNN's embeddings of them."""
    data_config = DataConfig(data_dir=str(shared_data), limit_per_class=40)
    dataset = prepare_dataset(data_config)
    embeddings = {split: cnn_bundle.embed(getattr(dataset, f"x_{split}")) for split in ("val", "test")}
    return dataset, embeddings, data_config


def test_run_writes_the_reference(tmp_path, cnn_bundle, context_parts):
    d, embeddings, data_config = context_parts
    # A copy of the committed bundle: the stage sets its reference, and the session's bundle stays as loaded.
    context = BuildContext(replace(cnn_bundle), d, embeddings, tmp_path, data_config)
    result = run(context)
    reference = as_reference(tmp_path / MONITORING_FILE)
    assert reference.class_names == tuple(cnn_bundle.class_names)
    assert reference.counts["train_images"] == int(np.sum(~d.train_augmented))  # rotated copies left out
    assert result["file"] == MONITORING_FILE and result["counts"] == reference.counts
    assert result["test_windows"] == len(d.x_test) // 100 and 0 <= result["test_false_alarm_rate"] <= 1
    # The confidence baseline is drawn from the CNN's top probabilities on the validation split.
    baseline, validation = reference.baseline["confidence"], embeddings["val"].probabilities.max(axis=1)
    assert len(baseline) == reference.counts["baseline"] == min(ReferenceConfig().baseline_size, len(d.y_val))
    assert np.abs(baseline[:, None] - validation[None, :]).min(axis=1).max() < 1e-6
    # The bundle being built holds the reference as saved, for the stages after this one.
    assert isinstance(context.bundle.monitoring_reference, MonitoringReference)
    np.testing.assert_allclose(context.bundle.monitoring_reference.class_histograms, reference.class_histograms, atol=1e-6)
    json.dumps(result)  # the pipeline writes it as JSON


def test_pictures_of_another_size_than_the_model_input_are_refused(tmp_path, cnn_bundle, context_parts):
    d, embeddings, data_config = context_parts
    small = replace(d, x_val=d.x_val[:, :16, :16])
    with pytest.raises(ValueError, match="model input"):
        run(BuildContext(replace(cnn_bundle), small, embeddings, tmp_path, data_config))
    assert not (tmp_path / MONITORING_FILE).exists()
