"""Nearest training images ("Give us another chance").

    from similarity import NearestTrainingImages, gallery_for

Importing this package loads numpy and scikit-learn's base module; Pillow where it is used.
"""

from similarity.gallery import Neighbour, gallery_for
from similarity.index import NearestTrainingImages

__all__ = ["NearestTrainingImages", "Neighbour", "gallery_for"]
