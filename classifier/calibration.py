"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017): one number
T, fitted on the validation split, so that softmax(logits / T) says how often the CNN is right.

    temperature, report = fit_temperature(val_logits, val_labels)

Label smoothing (0.2 here) trains the CNN to under-state its confidence; T < 1 sharpens it back.
The ranking of pictures by confidence does not change, so no accuracy or risk-coverage curve
does either: what changes is what "90% sure" on the page means.
"""

import numpy as np


def fit_temperature(logits, labels, bins=15):
    """(T minimising the validation negative log-likelihood, {nll and expected calibration error
    before and after}). A search over log-spaced T, then a finer one around the best."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    best = min(grid, key=lambda t: _nll(logits / t, labels))
    fine = best * np.exp(np.linspace(-0.06, 0.06, 61))
    best = float(min(fine, key=lambda t: _nll(logits / t, labels)))
    return best, {
        "temperature": best, "fitted_on": f"the validation split ({len(labels)} pictures)",
        "nll_before": _nll(logits, labels), "nll_after": _nll(logits / best, labels),
        "ece_before": expected_calibration_error(_softmax(logits), labels, bins),
        "ece_after": expected_calibration_error(_softmax(logits / best), labels, bins),
    }


def expected_calibration_error(probabilities, labels, bins=15):
    """The gap between confidence and accuracy, averaged over equal-width confidence bins."""
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    right = predicted == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(right[inside].mean() - confidence[inside].mean())
    return float(total)


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _nll(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())
