"""The training images nearest to an upload, for "Give us another chance".

    gallery = NearestTrainingImages().fit(train_features, train_labels, thumbnails=train_pixels)
    indices, distances = gallery.query(upload_features, classes=[3, 5, 2, 4], k=4)
    gallery.thumbnails_[indices]          # the 32x32 pictures to show

Two metrics:
- "cosine" (default): cosine distance between penultimate CNN features. Features are L2-normalised
  at fit, so a query is one matrix product.
- "l1-pixels": the seed app's mean absolute difference of raw 32x32 pixels (fit on the pixels,
  queried with the upload's pixels). Kept as the baseline the bench compares against.

Saved as a plain .npz (no pickle): features as float16 by default (they are rounded to it at fit,
so a reloaded gallery answers exactly as the fitted one), thumbnails as one JPEG mosaic.
"""

import io
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from bundle.atomic import atomic_path
from bundle.arrays import l2_normalize

METRICS = ("cosine", "l1-pixels")
FORMAT_VERSION = 1


class NearestTrainingImages(BaseEstimator):
    """k nearest gallery images to a query, optionally among a set of classes only.

    Parameters are stored as given (scikit-learn contract); fitted state ends in `_`:
    features_ (n, d), labels_ (n,) int, thumbnails_ (n, h, w, c) uint8 or None, classes_ (sorted
    labels present), n_features_in_.
    """

    def __init__(self, metric="cosine", feature_dtype="float16", class_names=None):
        self.metric = metric
        self.feature_dtype = feature_dtype
        self.class_names = class_names

    def fit(self, features, labels, thumbnails=None):
        """Index `features` (cosine: CNN features (n, d); l1-pixels: uint8 pixels (n, h, w, c)
        or flattened) with integer class `labels`; `thumbnails` are the pictures to show."""
        if self.metric not in METRICS:
            raise ValueError(f"Unknown metric {self.metric!r}; choose from {METRICS}.")
        features = np.asarray(features)
        labels = np.asarray(labels)
        if len(features) == 0:
            raise ValueError("Cannot fit a gallery on zero images.")
        if labels.shape != (len(features),):
            raise ValueError(f"labels must have shape ({len(features)},), not {labels.shape}.")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError("labels must be integer class indices.")
        if self.metric == "l1-pixels":
            if features.dtype != np.uint8:
                raise ValueError("The l1-pixels metric is fitted on uint8 pixels (n, height, width, channels).")
            if thumbnails is None and features.ndim == 4:
                thumbnails = features
            # int16 so that differences of uint8 values neither wrap nor need a cast per query.
            self.features_ = np.ascontiguousarray(features.reshape(len(features), -1), dtype=np.int16)
        else:
            if features.ndim != 2:
                raise ValueError(f"features must be 2-dimensional (n, d), not {features.shape}.")
            # Rounded to the stored precision now, so a fitted and a reloaded gallery answer alike.
            self.features_ = l2_normalize(features.astype(np.float32)).astype(self.feature_dtype).astype(np.float32)
        if thumbnails is not None:
            thumbnails = np.asarray(thumbnails)
            if thumbnails.dtype != np.uint8 or thumbnails.ndim != 4 or len(thumbnails) != len(features):
                raise ValueError(f"thumbnails must be uint8 (n, height, width, channels) with n={len(features)}.")
        self.labels_ = labels.astype(np.int64)
        self.thumbnails_ = thumbnails
        self.n_features_in_ = self.features_.shape[1]
        self._index_classes()
        return self

    # ------------------------------------------------------------------ queries

    def query(self, features, classes=None, k=4):
        """The k nearest gallery images, nearest first, among `classes` (indices or names) only.

        One query vector -> (indices (k,), distances (k,)); a batch (m, d) -> (m, k) arrays.
        Fewer than k come back when the chosen classes hold fewer images.
        """
        self._check_fitted()
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, not {k}.")
        queries, single = self._as_queries(features)
        rows = self._candidate_rows(classes)
        k = min(int(k), len(rows))
        distances = self._distances(queries, rows)
        if k < distances.shape[1]:
            nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]
        else:
            nearest = np.broadcast_to(np.arange(distances.shape[1]), (len(queries), distances.shape[1]))
        nearest_distances = np.take_along_axis(distances, nearest, axis=1)
        order = np.argsort(nearest_distances, axis=1, kind="stable")
        nearest = np.take_along_axis(nearest, order, axis=1)
        indices, distances = rows[nearest], np.take_along_axis(nearest_distances, order, axis=1)
        return (indices[0], distances[0]) if single else (indices, distances)

    def nearest_per_class(self, features, classes):
        """For one query: the nearest gallery image of each class in `classes`, in that order.

        Returns (indices, distances), one per class; distances are computed once for all classes.
        """
        self._check_fitted()
        queries, single = self._as_queries(features)
        if not single:
            raise ValueError("nearest_per_class takes one query; call it once per upload.")
        labels = [self._label_of(c) for c in classes]
        rows = self._candidate_rows(labels)
        distances = self._distances(queries, rows)[0]
        row_labels = self.labels_[rows]
        indices, nearest = [], []
        for label in labels:
            positions = np.flatnonzero(row_labels == label)
            best = positions[np.argmin(distances[positions])]
            indices.append(rows[best])
            nearest.append(distances[best])
        return np.array(indices, dtype=np.int64), np.array(nearest, dtype=np.float32)

    def class_name(self, label):
        return self.class_names[label] if self.class_names is not None else str(label)

    # ------------------------------------------------------------------ persistence

    def save(self, path, thumbnail_quality=90):
        """Write an .npz (no pickle) atomically: a reader never sees a half-written file.

        Thumbnails are stored as one mosaic picture: JPEG at `thumbnail_quality` (4:4:4, so each
        32x32 tile is encoded on its own; 90 keeps them within ~2/255 of the originals at a
        fifth of the size), or lossless PNG when `thumbnail_quality` is None.
        """
        self._check_fitted()
        path = Path(path)
        arrays = {
            "format_version": np.array(FORMAT_VERSION),
            "metric": np.array(self.metric),
            "feature_dtype": np.array(self.feature_dtype),
            "labels": self.labels_.astype(np.int16 if self.labels_.max() < 2**15 else np.int64),
            "features": self.features_.astype(np.uint8 if self.metric == "l1-pixels" else self.feature_dtype),
        }
        if self.class_names is not None:
            arrays["class_names"] = np.array([str(name) for name in self.class_names])
        if self.thumbnails_ is not None:
            arrays["thumbnails_image"] = _encode_mosaic(self.thumbnails_, thumbnail_quality)
            arrays["thumbnails_shape"] = np.array(self.thumbnails_.shape, dtype=np.int64)
        with atomic_path(path) as temporary:
            with open(temporary, "wb") as handle:  # a handle: savez would add ".npz" to a name
                np.savez_compressed(handle, **arrays)
        return path

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as stored:
            if int(stored["format_version"]) > FORMAT_VERSION:
                raise ValueError(f"{path} was written by a newer version of similarity (format {int(stored['format_version'])}).")
            class_names = tuple(str(name) for name in stored["class_names"]) if "class_names" in stored.files else None
            gallery = cls(metric=str(stored["metric"]), feature_dtype=str(stored["feature_dtype"]), class_names=class_names)
            features = stored["features"]
            gallery.features_ = features.astype(np.int16 if gallery.metric == "l1-pixels" else np.float32)
            gallery.labels_ = stored["labels"].astype(np.int64)
            gallery.thumbnails_ = None
            if "thumbnails_image" in stored.files:
                gallery.thumbnails_ = _decode_mosaic(stored["thumbnails_image"], tuple(stored["thumbnails_shape"]))
        gallery.n_features_in_ = gallery.features_.shape[1]
        gallery._index_classes()
        return gallery

    # ------------------------------------------------------------------ internals

    def _index_classes(self):
        self.classes_ = np.unique(self.labels_)
        order = np.argsort(self.labels_, kind="stable")
        bounds = np.searchsorted(self.labels_[order], self.classes_, side="left")
        ends = np.searchsorted(self.labels_[order], self.classes_, side="right")
        self._rows_by_class = {int(c): order[b:e] for c, b, e in zip(self.classes_, bounds, ends)}
        self._all_rows = np.arange(len(self.labels_))

    def _candidate_rows(self, classes):
        if classes is None:
            return self._all_rows
        labels = [self._label_of(c) for c in classes]
        if not labels:
            raise ValueError("classes is empty: give at least one class to search.")
        return np.sort(np.concatenate([self._rows_by_class[label] for label in dict.fromkeys(labels)]))

    def _label_of(self, value):
        if isinstance(value, str):
            if self.class_names is None or value not in self.class_names:
                raise ValueError(f"Unknown class name {value!r}.")
            value = list(self.class_names).index(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"A class must be an integer index or a class name, not {value!r}.")
        if int(value) not in self._rows_by_class:
            raise ValueError(f"Class {int(value)} has no images in this gallery (it holds {self.classes_.tolist()}).")
        return int(value)

    def _as_queries(self, features):
        queries = np.asarray(features)
        single = queries.ndim == 1 or (self.metric == "l1-pixels" and queries.ndim == 3)
        queries = queries.reshape(1 if single else len(queries), -1)
        if queries.shape[1] != self.n_features_in_:
            raise ValueError(f"A query must have {self.n_features_in_} values, not {queries.shape[1]}.")
        if self.metric == "l1-pixels":
            if queries.dtype != np.uint8:
                raise ValueError("The l1-pixels metric is queried with the upload's uint8 pixels (bundle.images.to_uint8).")
            return queries.astype(np.int16), single
        return l2_normalize(queries.astype(np.float32)), single

    def _distances(self, queries, rows):
        restricted = len(rows) < len(self.labels_)
        if self.metric == "l1-pixels":
            # Mean absolute difference per pixel value (0..255): the seed's L1, on a readable scale.
            # Only the candidate rows are compared: L1 costs a pass over every pixel.
            gallery = self.features_[rows] if restricted else self.features_
            out = np.empty((len(queries), len(gallery)), dtype=np.float32)
            for i, query in enumerate(queries):
                out[i] = np.abs(gallery - query).sum(axis=1, dtype=np.int32) / np.float32(gallery.shape[1])
            return out
        # One query (the app's case): einsum's own loop, on this thread. A BLAS product of this
        # size wakes OpenBLAS's thread pool, and on a busy CPU waiting for those threads to be
        # scheduled took ~8 ms per query, against 0.1 ms of arithmetic.
        if len(queries) == 1:
            similarities = np.einsum("ij,j->i", self.features_, queries[0])[None, :]
        else:
            similarities = queries @ self.features_.T
        return 1.0 - (similarities[:, rows] if restricted else similarities)

    def _check_fitted(self):
        if not hasattr(self, "features_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This NearestTrainingImages is not fitted yet; call fit(features, labels) first.")


def _encode_mosaic(thumbnails, quality):
    """(n, h, w, c) uint8 -> the bytes of one near-square picture holding them row by row."""
    from PIL import Image

    count, height, width, channels = thumbnails.shape
    columns = max(1, int(np.ceil(np.sqrt(count))))
    rows = -(-count // columns)
    tiles = np.zeros((rows * columns, height, width, channels), dtype=np.uint8)
    tiles[:count] = thumbnails
    mosaic = tiles.reshape(rows, columns, height, width, channels).transpose(0, 2, 1, 3, 4)
    mosaic = mosaic.reshape(rows * height, columns * width, channels)
    picture = Image.fromarray(mosaic[:, :, 0] if channels == 1 else mosaic)
    buffer = io.BytesIO()
    if quality is None:
        picture.save(buffer, format="PNG")
    else:
        picture.save(buffer, format="JPEG", quality=int(quality), subsampling=0)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def _decode_mosaic(data, shape):
    from PIL import Image

    count, height, width, channels = (int(v) for v in shape)
    with Image.open(io.BytesIO(data.tobytes())) as picture:
        mosaic = np.asarray(picture.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    columns = mosaic.shape[1] // width
    rows = mosaic.shape[0] // height
    tiles = mosaic.reshape(rows, height, columns, width, channels).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(tiles.reshape(rows * columns, height, width, channels)[:count])
