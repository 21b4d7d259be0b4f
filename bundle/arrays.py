"""Two small array helpers both sides use: unit-length rows, and a fixed per-class sample."""

import numpy as np


def l2_normalize(rows):
    """Each row scaled to length 1 (a zero row stays zero), float32."""
    rows = np.asarray(rows)
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def balanced_sample(labels, per_class, eligible=None, seed=0):
    """Row indices: up to `per_class` rows of each class drawn at random among `eligible` rows
    (e.g. not rotated copies), sorted. Fixed by `seed`, so a rebuild picks the same images."""
    labels = np.asarray(labels)
    eligible = np.ones(len(labels), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    rng = np.random.default_rng(seed)
    rows = []
    for label in np.unique(labels):
        candidates = np.flatnonzero((labels == label) & eligible)
        rows.append(rng.permutation(candidates)[:per_class])
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)
