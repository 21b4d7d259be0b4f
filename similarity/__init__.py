"""Nearest training images ("Give us another chance") and users' corrections.

    from similarity import NearestTrainingImages, FeedbackStore, gallery_for

Importing this package loads numpy only; Pillow and Keras are imported where they are used.
"""

from similarity.feedback import FeedbackError, FeedbackRecord, FeedbackStore
from similarity.gallery import Neighbour, gallery_for
from similarity.index import NearestTrainingImages

__all__ = ["FeedbackError", "FeedbackRecord", "FeedbackStore", "NearestTrainingImages", "Neighbour", "gallery_for"]
