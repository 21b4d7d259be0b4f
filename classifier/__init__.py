"""The small CNN: data, models, training, evaluation and the bundle that ships them.

Importing this package loads nothing heavy; each module imports Keras only where it needs it.
"""
