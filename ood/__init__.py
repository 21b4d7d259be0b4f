"""Honest refusal: detectors that say "not in our training set" for uploads of unknown classes.

    from ood import ClassIsolationForests, load_detector

Importing this package loads numpy and scikit-learn's base module, no TensorFlow.
"""

from ood.detectors import OODDetector, load_detector
from ood.combined import CombinedScore
from ood.forests import ClassIsolationForests, GlobalIsolationForest

__all__ = ["ClassIsolationForests", "CombinedScore", "GlobalIsolationForest", "OODDetector", "load_detector"]
