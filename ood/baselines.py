"""The OOD table's other candidates, with the same interface as the per-class forests, so that the
build can ship whichever wins the table (pipeline.ood_stage).

- MaxSoftmax: maximum softmax probability (Hendrycks & Gimpel, 2017).
- EnergyScore: logsumexp of the logits (Liu et al., 2020).
- Mahalanobis: class means and one shared covariance on the features (Lee et al., 2018).
- KNearestNeighbours: distance to the k-th nearest L2-normalized training feature (Sun et al., 2022;
  k = 50 as in OpenOOD).
- ActivationShaping: energy of the logits after ASH-S (Djurisic et al., 2023): each sample's
  features below their own percentile are zeroed, the rest rescaled by exp(sum before / sum after).
- FeatureNorm: the length of the feature vector. Our features are global max-pools of the last
  convolutions, so the length says how strongly any learned pattern fires: weakly for what the
  CNN was never trained on.

MaxSoftmax and EnergyScore take the model's "logits" layer weights, so that they too score
penultimate-layer features: logits = features @ weights + bias.
"""

import numpy as np

from bundle.arrays import l2_normalize
from ood.detectors import OODDetector, nearest_similarities


def logit_weights(model):
    """(weights, bias) of a Keras model's "logits" Dense layer, as float64 numpy arrays."""
    weights, bias = model.get_layer("logits").get_weights()
    return np.asarray(weights, np.float64), np.asarray(bias, np.float64)


class _LogitDetector(OODDetector):
    def __init__(self, weights, bias, n_classes=None):
        self.weights = weights
        self.bias = bias
        self.n_classes = n_classes

    def fit(self, features, labels):
        features, labels = self._start_fit(features, labels)
        if np.shape(self.weights)[0] != self.n_features_in_:
            raise ValueError(f"weights have {np.shape(self.weights)[0]} rows for {self.n_features_in_} features.")
        return self._finish_fit(features, labels)

    def _logits(self, features):
        return features.astype(np.float64) @ np.asarray(self.weights) + np.asarray(self.bias)


def _logsumexp(logits):
    top = logits.max(axis=1)
    return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))


class MaxSoftmax(_LogitDetector):
    def _score(self, features, classes):
        logits = self._logits(features)
        return np.exp(logits.max(axis=1) - _logsumexp(logits))


class EnergyScore(_LogitDetector):
    """Negative free energy, T * logsumexp(logits / T): higher for in-distribution images."""

    def __init__(self, weights, bias, temperature=1.0, n_classes=None):
        super().__init__(weights, bias, n_classes)
        self.temperature = temperature

    def _score(self, features, classes):
        return self.temperature * _logsumexp(self._logits(features) / self.temperature)


class ActivationShaping(_LogitDetector):
    """Energy score of ASH-S-shaped features: higher for in-distribution images."""

    per_class_thresholds = False

    def __init__(self, weights, bias, percentile=80, n_classes=None):
        super().__init__(weights, bias, n_classes)
        self.percentile = percentile

    def _score(self, features, classes):
        x = features.astype(np.float64)
        cut = np.percentile(x, self.percentile, axis=1, keepdims=True)
        kept = np.where(x >= cut, x, 0.0)
        before, after = x.sum(axis=1, keepdims=True), kept.sum(axis=1, keepdims=True)
        # The rescaling restores what pruning took; exponent clipped so no sample overflows.
        shaped = kept * np.exp(np.clip(before / np.maximum(after, 1e-12), None, 50.0))
        return _logsumexp(shaped @ np.asarray(self.weights) + np.asarray(self.bias))


class FeatureNorm(OODDetector):
    """The L2 length of the features (higher = more in-distribution). One threshold for all
    classes: per-class ones cut its near-OOD AUROC from 0.82 to 0.71 on the shipped model."""

    per_class_thresholds = False

    def __init__(self, n_classes=None):
        self.n_classes = n_classes

    def fit(self, features, labels):
        features, labels = self._start_fit(features, labels)
        return self._finish_fit(features, labels)

    def _score(self, features, classes):
        return np.linalg.norm(features.astype(np.float64), axis=1)


class Mahalanobis(OODDetector):
    """Minus the smallest Mahalanobis distance (squared) to a class mean, shared covariance:
    Lee et al. (2018) as written (class means and one covariance of the training features).

    On the raw airbench features it does worse than a coin (the build's table: 0.47 near-OOD,
    0.44 far), and not through a sign or covariance error: unknown pictures have shorter features
    (mean length 22.7 near-OOD, 19.6 MNIST, 27.0 our test pictures), so they sit nearer the mean of
    all classes, where a distance to the nearest class mean is small. With `normalize` (the
    features at unit length first, the OOD table's "mahalanobis_unit") the length is out of it:
    near-OOD 0.54 -> 0.72, MNIST 0.45 -> 0.87 (python bench/ood_table.py --per-class 1000)."""

    def __init__(self, normalize=False, n_classes=None):
        self.normalize = normalize
        self.n_classes = n_classes

    def fit(self, features, labels):
        features, labels = self._start_fit(features, labels)
        x = self._prepare(features)
        present = np.unique(labels)
        self.means_ = np.zeros((self.n_classes_, x.shape[1]))
        for label in present:
            self.means_[label] = x[labels == label].mean(axis=0)
        centred = x - self.means_[labels]
        covariance = centred.T @ centred / len(x)
        self.precision_ = np.linalg.pinv(covariance, hermitian=True)
        # Classes without training samples have no mean; they must never be the nearest.
        self.present_ = np.isin(self.classes_, present)
        return self._finish_fit(features, labels)

    def _prepare(self, features):
        x = l2_normalize(features) if self.normalize else features
        return x.astype(np.float64)

    def _score(self, features, classes):
        x = self._prepare(features)
        projected = x @ self.precision_
        distances = (
            (projected * x).sum(axis=1)[:, None]
            - 2.0 * projected @ self.means_.T
            + ((self.means_ @ self.precision_) * self.means_).sum(axis=1)[None, :]
        )
        distances[:, ~self.present_] = np.inf
        return -distances.min(axis=1)


class KNearestNeighbours(OODDetector):
    """Minus the distance to the k-th nearest training feature, all on the unit sphere."""

    def __init__(self, k=50, n_classes=None):
        self.k = k
        self.n_classes = n_classes

    def fit(self, features, labels):
        features, labels = self._start_fit(features, labels)
        if self.k < 1:
            raise ValueError(f"k must be at least 1, not {self.k}.")
        self.k_ = min(self.k, len(features))  # tiny smoke-test data may have fewer than k samples
        self.bank_ = l2_normalize(features)
        return self._finish_fit(features, labels)

    def _score(self, features, classes):
        # The k-th largest cosine similarity is the k-th smallest distance.
        kth = nearest_similarities(l2_normalize(features), self.bank_, self.k_).min(axis=1)
        return -np.sqrt(np.maximum(2.0 - 2.0 * kth.astype(np.float64), 0.0))
