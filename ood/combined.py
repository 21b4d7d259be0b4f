"""Several detectors voting as one: the sum of their standardized scores.

    detector = CombinedScore([("forests", ClassIsolationForests()), ("ash", ActivationShaping(w, b)),
                              ("norm", FeatureNorm())], n_classes=13).fit(train_features, train_labels)
    detector.calibrate(val_features, val_predicted, tpr=0.95)

The detectors see different things: the per-class forests whether the direction of the features
is typical of the predicted class, ASH-S energy whether the logits' evidence is strong, the
feature length whether anything learned fires at all. Their errors overlap little, so the sum
ranks unknown images below known ones more often than any one of them (the OOD table in
metrics.json shows by how much).
"""

import numpy as np
from sklearn.base import clone

from ood.detectors import OODDetector


class CombinedScore(OODDetector):
    """Sum over `estimators` ((name, detector) pairs, as in scikit-learn's VotingClassifier) of
    (decision - mean) / std, where decision is each detector's decision_function (its score less
    its own threshold: per class for the forests) and mean and std are over the calibration
    samples: every detector weighs the same, whatever the unit of its score. The sum is on one
    scale for all classes, so one threshold serves them all."""

    per_class_thresholds = False

    def __init__(self, estimators, n_classes=None):
        self.estimators = estimators
        self.n_classes = n_classes

    def fit(self, features, labels):
        features, labels = self._start_fit(features, labels)
        if not self.estimators:
            raise ValueError("CombinedScore needs at least one (name, detector) pair.")
        self.estimators_ = [(name, clone(estimator).set_params(n_classes=self.n_classes_).fit(features, labels))
                            for name, estimator in self.estimators]
        self.means_ = np.zeros(len(self.estimators_))
        self.scales_ = np.ones(len(self.estimators_))
        return self._finish_fit(features, labels)

    def calibrate(self, features, classes, tpr=0.95):
        """Calibrate each detector on these held-out samples, standardize their decisions on
        them, then set the threshold of the sum."""
        checked_features, checked_classes = self._check(features, classes)
        for _, estimator in self.estimators_:
            estimator.calibrate(checked_features, checked_classes, tpr)
        raw = self._component_scores(checked_features, checked_classes)
        self.means_ = raw.mean(axis=0)
        self.scales_ = np.maximum(raw.std(axis=0), 1e-12)
        return super().calibrate(features, classes, tpr)

    def component_scores(self, features, classes):
        """{name: standardized score} of each detector, for explaining one decision."""
        features, classes = self._check(features, classes)
        standardized = (self._component_scores(features, classes) - self.means_) / self.scales_
        return {name: standardized[:, i] for i, (name, _) in enumerate(self.estimators_)}

    def _component_scores(self, features, classes):
        return np.stack([estimator._score(features, classes) - estimator.thresholds_[classes]
                         for _, estimator in self.estimators_], axis=1)

    def _score(self, features, classes):
        return ((self._component_scores(features, classes) - self.means_) / self.scales_).sum(axis=1)
