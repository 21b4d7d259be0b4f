import json

import numpy as np
import pytest

from monitoring import metrics
from monitoring.reference import MonitoringReference, ReferenceConfig, as_reference, build_reference, upload_metrics
from bundle.files import MONITORING_FILE


def test_class_histograms_are_the_class_means(small_dataset):
    d = small_dataset
    probabilities = np.eye(len(d.class_names))[d.y_val] * 0.9 + 0.1 / len(d.class_names)
    kept = len(d.y_val) // 2  # fewer than the validation images: the baseline is a sample of them
    reference = build_reference(d.x_train, d.y_train, d.x_val, probabilities, d.class_names, ReferenceConfig(baseline_size=kept))
    assert reference.class_histograms.shape == (13, 3, metrics.BINS)
    np.testing.assert_allclose(reference.class_histograms.sum(axis=-1), 1.0)
    cats = d.x_train[d.y_train == d.class_names.index("cat")]
    np.testing.assert_allclose(reference.class_histograms[3], metrics.colour_histograms(cats).mean(axis=0))
    assert kept > 0 and all(len(values) == kept for values in reference.baseline.values())
    assert reference.class_confidence["cat"]["count"] == np.sum(d.y_val == 3)


def test_json_round_trip_and_bundle_dict(tmp_path, real_reference):
    reference = real_reference[0]
    path = reference.save(tmp_path / MONITORING_FILE)
    for loaded in (MonitoringReference.load(path), as_reference(json.loads(path.read_text())), as_reference(str(path))):
        assert loaded.class_names == reference.class_names
        np.testing.assert_allclose(loaded.class_histograms, reference.class_histograms, atol=1e-6)
        np.testing.assert_allclose(loaded.baseline["entropy"], reference.baseline["entropy"], atol=1e-6)
    with pytest.raises(ValueError, match="monitoring reference"):
        as_reference({"format_version": 1, "class_names": ["cat"]})


def test_upload_metrics_of_a_real_upload(real_reference):
    reference, images, probabilities = real_reference
    values = upload_metrics(images[0], probabilities[0], reference)
    predicted = int(np.argmax(probabilities[0]))
    assert values["predicted_class"] == reference.class_names[predicted]
    assert values["confidence"] == pytest.approx(probabilities[0].max())
    assert values["entropy"] == pytest.approx(metrics.intensity_entropy(images[0]))
    assert values["histogram_distance"] == pytest.approx(
        metrics.hellinger_distance(metrics.colour_histogram(images[0]), reference.class_histograms[predicted]))
    # The same from the dict that Bundle.load gives, and without any reference.
    assert upload_metrics(images[0], probabilities[0], reference.to_dict())["histogram_distance"] == pytest.approx(values["histogram_distance"], abs=1e-5)
    bare = upload_metrics(images[0], probabilities[0], None, reference.class_names)
    assert np.isnan(bare["histogram_distance"]) and bare["predicted_class"] == values["predicted_class"]
    with pytest.raises(ValueError, match="probabilities"):
        upload_metrics(images[0], probabilities[0][:5], reference)

