"""Honest refusal: detectors that say "not in our training set" for uploads of unknown classes,
and the noise gate in front of them.

    from ood import ClassIsolationForests, CombinedScore, NeighbourhoodScore, NoiseGate, load_detector

Importing this package loads numpy and scikit-learn's base module, no TensorFlow.
"""

from ood.combined import CombinedScore
from ood.detectors import OODDetector, load_detector
from ood.forests import ClassIsolationForests, GlobalIsolationForest
from ood.neighbourhood import NeighbourhoodScore
from ood.noise import NoiseGate

__all__ = ["ClassIsolationForests", "CombinedScore", "GlobalIsolationForest", "NeighbourhoodScore", "NoiseGate", "OODDetector", "load_detector"]
