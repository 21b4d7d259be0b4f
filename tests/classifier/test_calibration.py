"""classifier.calibration: temperature scaling finds the temperature that labels were drawn with,
and the calibrated confidence matches how often the top class is right."""

import numpy as np

from classifier.calibration import expected_calibration_error, fit_temperature


def drawn(temperature, count=20000, classes=13, seed=0):
    """Logits, and labels drawn from softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (count, classes))
    scaled = np.exp(logits / temperature - (logits / temperature).max(axis=1, keepdims=True))
    probabilities = scaled / scaled.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in probabilities])
    return logits, labels


def test_the_temperature_the_labels_were_drawn_with_is_found():
    for true_temperature in (0.5, 2.0):
        logits, labels = drawn(true_temperature)
        temperature, report = fit_temperature(logits, labels)
        assert abs(np.log(temperature / true_temperature)) < 0.08, (temperature, true_temperature)
        assert report["nll_after"] <= report["nll_before"] and report["ece_after"] < 0.02


def test_a_calibrated_model_has_no_calibration_error_and_a_confident_wrong_one_has():
    labels = np.array([0, 1] * 500)
    certain_and_right = np.eye(2)[labels]
    assert expected_calibration_error(certain_and_right, labels) == 0.0
    certain_and_wrong = np.eye(2)[1 - labels]
    assert expected_calibration_error(certain_and_wrong, labels) == 1.0
