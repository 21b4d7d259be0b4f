"""The interface every OOD detector shares: scores on the CNN's penultimate-layer features, a
threshold per predicted class, +1 / -1 predictions, calibration and saving.

    detector = ClassIsolationForests().fit(train_features, train_labels)   # true positives only
    detector.calibrate(val_features, val_predicted, tpr=0.95)              # held-out thresholds
    detector.predict(features, predicted)      # +1 in-distribution, -1 "not in our training set"
    detector.save("assets/ood_detector.joblib"); load_detector(path)

Every detector has the same interface (OODDetector): score_samples(features, classes), higher is
more normal; decision_function = score minus the predicted class's threshold; predict = +1 / -1.
They take two arrays (features and the predicted classes), so scikit-learn's Pipeline and
check_estimator do not apply; get_params, set_params and clone do (BaseEstimator).
"""

from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from bundle.atomic import atomic_path

# A class with fewer held-out samples than this gets the threshold of all classes together.
MIN_CALIBRATION_SAMPLES = 20


class OODDetector(BaseEstimator):
    """The shared half: per-class thresholds, predict, calibrate, save. Subclasses define
    fit(features, labels) and _score(features, classes) on checked float32 arrays, and take
    their settings (n_classes among them) as constructor arguments, as scikit-learn asks."""

    # A detector whose score means the same for every class (feature length, say) sets this
    # False and gets one threshold for all: per-class bars would only move some classes' cut.
    per_class_thresholds = True
    # Which of the CNN's outputs (bundle.embedding.Embedding) the detector scores.
    reads = "features"

    def score_samples(self, features, classes):
        """Normality score of each sample (higher = more like the training images of its class)."""
        features, classes = self._check(features, classes)
        return self._score(features, classes)

    def decision_function(self, features, classes):
        """Score minus the threshold of each sample's (predicted) class: < 0 means outlier."""
        features, classes = self._check(features, classes)
        return self._score(features, classes) - self.thresholds_[classes]

    def predict(self, features, classes):
        return np.where(self.decision_function(features, classes) >= 0, 1, -1)

    def calibrate(self, features, classes, tpr=0.95):
        """Set each class's threshold so that a fraction `tpr` of these held-out samples (validation
        images, by their predicted class) stays in-distribution; one threshold for all classes
        if per_class_thresholds is False."""
        if not 0.0 < tpr <= 1.0:
            raise ValueError(f"tpr must be in (0, 1], not {tpr}.")
        features, classes = self._check(features, classes)
        if len(classes) == 0:
            raise ValueError("calibrate needs at least one sample.")
        scores = self._score(features, classes)
        thresholds = np.full(self.n_classes_, np.quantile(scores, 1.0 - tpr))
        if self.per_class_thresholds:
            for label in range(self.n_classes_):
                mine = scores[classes == label]
                if len(mine) >= MIN_CALIBRATION_SAMPLES:
                    thresholds[label] = np.quantile(mine, 1.0 - tpr)
        self.thresholds_ = thresholds
        self.tpr_ = float(tpr)
        return self

    def save(self, path):
        """Write with joblib, whole or not at all (bundle.atomic)."""
        import joblib

        with atomic_path(path) as temporary:
            joblib.dump(self, temporary, compress=3)
        return Path(path)

    def _start_fit(self, features, labels):
        features = _as_features(features)
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(features):
            raise ValueError(f"labels must be 1-D with one entry per row of features ({len(features)}), not {labels.shape}.")
        if len(labels) == 0:
            raise ValueError("fit needs at least one sample.")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError("labels must be class indices (non-negative integers).")
        self.n_classes_ = int(self.n_classes or labels.max() + 1)
        if labels.max() >= self.n_classes_:
            raise ValueError(f"labels go up to {labels.max()} but n_classes is {self.n_classes_}.")
        self.classes_ = np.arange(self.n_classes_)
        self.n_features_in_ = features.shape[1]
        return features, labels.astype(np.int64)

    def _finish_fit(self, features, labels, sample=2000):
        # Thresholds from (a sample of) the training data, so that predict works at once;
        # calibrate() on held-out data replaces them: training scores are optimistic.
        if len(labels) > sample:
            keep = np.random.default_rng(0).choice(len(labels), sample, replace=False)  # fixed: thresholds are replaced anyway
            features, labels = features[keep], labels[keep]
        self.thresholds_ = np.zeros(self.n_classes_)
        return self.calibrate(features, labels, 0.95)

    def _check(self, features, classes):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "thresholds_")
        features = _as_features(features)
        if features.shape[1] != self.n_features_in_:
            raise ValueError(f"Expected {self.n_features_in_} features per sample, got {features.shape[1]}.")
        classes = np.asarray(classes)
        if classes.ndim == 0:
            classes = np.full(len(features), classes)
        if classes.shape != (len(features),) or not np.issubdtype(classes.dtype, np.integer):
            raise ValueError(f"classes must be {len(features)} integer class indices, got shape {classes.shape}.")
        if len(classes) and (classes.min() < 0 or classes.max() >= self.n_classes_):
            raise ValueError(f"classes must be in [0, {self.n_classes_}).")
        return features, classes.astype(np.int64)


def _as_features(features):
    features = np.asarray(features, dtype=np.float32)
    if features.ndim == 1:
        features = features[None, :]
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array (samples, features), not {features.ndim}-D.")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values.")
    return features


def nearest_similarities(x, bank, k, chunk=1024):
    """(n, k): the k largest dot products of each row of `x` with the rows of `bank`, in no
    order (cosine similarities when both are at unit length); `chunk` rows at a time."""
    top = np.empty((len(x), k), dtype=np.float32)
    cut = len(bank) - k
    for start in range(0, len(x), chunk):
        top[start:start + chunk] = np.partition(x[start:start + chunk] @ bank.T, cut, axis=1)[:, cut:]
    return top


def load_detector(path):
    """Load a detector written by OODDetector.save (joblib: load only bundles you trust)."""
    import joblib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No OOD detector at {path}. Build one with: python -m pipeline.build")
    detector = joblib.load(path)
    if not isinstance(detector, OODDetector):
        raise TypeError(f"{path} holds a {type(detector).__name__}, not an OOD detector.")
    try:  # a detector pickled by an older version can load and still lack what scoring needs
        detector.decision_function(np.zeros((1, detector.n_features_in_), dtype=np.float32), np.zeros(1, dtype=np.int64))
    except (AttributeError, ValueError, TypeError) as error:
        raise ValueError(f"{path} was saved by an older version ({type(error).__name__}); "
                         "rebuild it with: python -m pipeline.build") from None
    return detector
