import numpy as np
import pytest
from PIL import Image

from classifier.readers import load_mnist
from bundle.images import Preprocessing, to_uint8
from monitoring import DriftConfig, PredictionLog, detect_drift, upload_metrics


def answered_by_cnn(image, probability, reference):
    """A log record of an upload the CNN answered: told its own class."""
    values = upload_metrics(image, probability, reference)
    return {**values, "answer": values["predicted_class"]}


def log_uploads(log, images, probabilities, reference):
    for image, probability in zip(images, probabilities):
        log.append({**answered_by_cnn(image, probability, reference), "image": image})


def test_same_distribution_window_raises_no_alarm(tmp_path, real_reference):
    reference, images, probabilities = real_reference
    with PredictionLog(tmp_path / "log.sqlite") as log:
        log_uploads(log, images[:100], probabilities[:100], reference)
        report = detect_drift(log, reference)
    assert report.judged and report.window_size == 100
    assert not report.alarm, report.message
    assert all(p >= report.level for p in report.p_values.values())
    assert report.message.startswith("No drift")
    # Every upload here was answered by the CNN with its own class: the answers table counts them.
    told = [reference.class_names[i] for i in np.argmax(probabilities[:100], axis=1)]
    assert report.answers == {name: told.count(name) for name in set(told)}
    assert list(report.answers.values()) == sorted(report.answers.values(), reverse=True)  # most frequent first
    assert "| answer given | uploads |" in report.to_markdown() and report.refused_fraction == 0.0


def test_darkened_uploads_raise_the_alarm(tmp_path, real_reference, predict):
    reference, images, _ = real_reference
    dark = np.round(images[:100] * 0.5).astype(np.uint8)
    with PredictionLog(tmp_path / "log.sqlite") as log:
        log_uploads(log, dark, predict(dark), reference)
        report = detect_drift(log, reference)
    assert report.alarm
    assert report.verdicts["entropy"] == "drift" and report.verdicts["histogram_distance"] == "drift"
    assert "Drift alarm" in report.message and "| intensity entropy |" in report.to_markdown()


def test_mnist_digits_raise_the_alarm(tmp_path, real_reference, predict, data_path):
    reference = real_reference[0]
    digits, _ = load_mnist(data_path("mnist"))
    images = np.stack([to_uint8(Image.fromarray(digit[..., 0]), Preprocessing()) for digit in digits[:100]])
    with PredictionLog(tmp_path / "log.sqlite") as log:
        log_uploads(log, images, predict(images), reference)
        report = detect_drift(log, reference)
    assert report.alarm and min(report.p_values.values()) < 1e-6


def test_nothing_is_judged_before_the_minimum_window(real_reference):
    reference, images, probabilities = real_reference
    window = [upload_metrics(image, p, reference) for image, p in zip(images[:10], probabilities[:10])]
    columns = {name: np.array([row[name] for row in window]) for name in ("confidence", "entropy", "histogram_distance", "predicted_class")}
    report = detect_drift(columns, reference)
    assert not report.judged and not report.alarm
    assert set(report.verdicts.values()) == {"not judged"} and "Not enough uploads" in report.message


def test_level_and_time_window(tmp_path, real_reference):
    reference, images, probabilities = real_reference
    assert detect_drift({"confidence": [], "entropy": [], "histogram_distance": [], "predicted_class": []},
                        reference, DriftConfig(bonferroni=False)).level == pytest.approx(0.01)
    with PredictionLog(tmp_path / "log.sqlite") as log:
        for i, (image, probability) in enumerate(zip(images[:60], probabilities[:60])):
            # 40 uploads two days ago, 20 in the last hour
            log.append({**answered_by_cnn(image, probability, reference), "time": 1e6 - (2 * 86400 if i < 40 else 60)})
        report = detect_drift(log, reference, DriftConfig(window_hours=24, min_window=10), now=1e6)
    assert report.window_size == 20 and report.judged


def test_a_bundle_without_reference_gets_a_clear_error():
    with pytest.raises(ValueError, match="No monitoring reference"):
        detect_drift({"confidence": []}, None)
