"""NearestTrainingImages on the real CNN's features of real training images."""

import numpy as np
import pytest

from similarity import NearestTrainingImages, gallery_for
from pipeline.gallery_stage import nearest_class_agreement
from bundle.arrays import balanced_sample


@pytest.fixture(scope="module")
def gallery_rows(embedded):
    dataset = embedded.dataset
    return balanced_sample(dataset.y_train, 25, ~dataset.train_augmented, seed=0)


@pytest.fixture(scope="module")
def gallery(embedded, gallery_rows):
    dataset = embedded.dataset
    return NearestTrainingImages(class_names=dataset.class_names).fit(
        embedded.train.features[gallery_rows], dataset.y_train[gallery_rows], dataset.x_train[gallery_rows]
    )


def brute_force(gallery, query, rows):
    """Cosine distances computed the long way, independently of the index."""
    g = gallery.features_[rows].astype(np.float64)
    q = np.asarray(query, dtype=np.float64)
    return 1.0 - (g @ q) / (np.linalg.norm(g, axis=1) * np.linalg.norm(q))


def test_estimator_contract(tmp_path, embedded, gallery_rows):
    from sklearn.base import BaseEstimator, clone
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    dataset = embedded.dataset
    estimator = NearestTrainingImages(feature_dtype="float32")
    assert isinstance(estimator, BaseEstimator)
    assert estimator.get_params() == {"metric": "cosine", "feature_dtype": "float32", "class_names": None}
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)
    for call in (lambda: estimator.query(embedded.test.features[0]),
                 lambda: estimator.nearest_per_class(embedded.test.features[0], [0]),
                 lambda: estimator.save(tmp_path / "gallery.npz")):
        with pytest.raises(NotFittedError):
            call()
    assert not any(tmp_path.iterdir())
    assert estimator.fit(embedded.train.features[gallery_rows], dataset.y_train[gallery_rows]) is estimator
    check_is_fitted(estimator)
    assert estimator.features_.shape == (len(gallery_rows), embedded.train.features.shape[1])
    assert np.allclose(np.linalg.norm(estimator.features_, axis=1), 1.0, atol=1e-5)  # L2-normalised
    assert estimator.n_features_in_ == embedded.train.features.shape[1]
    assert estimator.thumbnails_ is None
    assert estimator.classes_.tolist() == list(range(len(dataset.class_names)))
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params() and not hasattr(copy, "features_")
    with pytest.raises(NotFittedError):
        copy.query(embedded.test.features[0])
    # set_params changes what the next fit does; an unknown parameter is refused.
    assert copy.set_params(metric="l1-pixels") is copy and copy.metric == "l1-pixels"
    with pytest.raises(ValueError, match="Invalid parameter"):
        copy.set_params(k=4)
    assert "feature_dtype='float32'" in repr(estimator)


def test_a_loaded_gallery_is_a_fitted_estimator(cnn_bundle):
    """On the shipped gallery (assets/gallery.npz, as the app loads it): no data folder needed."""
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    shipped = cnn_bundle.gallery
    check_is_fitted(shipped)
    assert shipped.class_names == tuple(cnn_bundle.class_names)
    assert shipped.n_features_in_ == shipped.features_.shape[1] and len(shipped.labels_) == len(shipped.features_)
    assert shipped.classes_.tolist() == list(range(len(cnn_bundle.class_names)))
    assert shipped.thumbnails_.shape == (len(shipped.labels_), 32, 32, 3) and shipped.thumbnails_.dtype == np.uint8
    # A clone is a fresh, unfitted estimator with the same parameters ...
    fresh = clone(shipped)
    assert fresh.get_params() == shipped.get_params()
    assert not [name for name in vars(fresh) if name.endswith("_")]
    with pytest.raises(NotFittedError):
        fresh.query(shipped.features_[0])
    # ... which, fitted on the same images, answers as the loaded one.
    fresh.fit(shipped.features_, shipped.labels_, shipped.thumbnails_)
    queries = shipped.features_[::97]
    (before, near), (after, far) = shipped.query(queries, classes=[0, 4, 12], k=3), fresh.query(queries, classes=[0, 4, 12], k=3)
    assert np.array_equal(before, after) and np.allclose(near, far, atol=1e-3)


def test_a_gallery_image_is_its_own_nearest_neighbour(embedded, gallery, gallery_rows):
    for position in (0, 7, len(gallery_rows) - 1):
        indices, distances = gallery.query(embedded.train.features[gallery_rows[position]], k=4)
        assert indices[0] == position
        assert distances[0] == pytest.approx(0.0, abs=1e-3)
        assert np.all(np.diff(distances) >= 0)


def test_query_matches_brute_force_and_honours_class_restriction(embedded, gallery):
    rng = np.random.default_rng(1)
    for query in embedded.test.features[rng.choice(len(embedded.test.features), 20, replace=False)]:
        classes = rng.choice(13, 4, replace=False)
        indices, distances = gallery.query(query, classes=classes, k=4)
        assert set(gallery.labels_[indices]) <= set(classes.tolist())
        rows = np.flatnonzero(np.isin(gallery.labels_, classes))
        expected = brute_force(gallery, query, rows)
        # The index keeps unit vectors rounded to float16: their length is 1 to about 5e-4.
        assert np.allclose(np.sort(expected)[:4], distances, atol=1e-3)
        # Without the restriction the nearest overall can be nearer, never farther.
        _, unrestricted = gallery.query(query, k=4)
        assert unrestricted[0] <= distances[0] + 1e-6


def test_class_names_batches_and_small_classes(embedded, gallery):
    queries = embedded.test.features[:5]
    indices, distances = gallery.query(queries, classes=["ship", "cat"], k=3)
    assert indices.shape == distances.shape == (5, 3)
    assert set(gallery.labels_[indices].ravel()) <= {3, 8}
    for i in range(5):
        single, _ = gallery.query(queries[i], classes=[8, 3], k=3)
        assert single.tolist() == indices[i].tolist()
    few, _ = gallery.query(queries[0], classes=[8], k=1000)
    assert len(few) == np.sum(gallery.labels_ == 8)


def test_bad_queries_get_clear_errors(embedded, gallery):
    query = embedded.test.features[0]
    with pytest.raises(ValueError, match="values"):
        gallery.query(query[:10])
    with pytest.raises(ValueError, match="no images"):
        gallery.query(query, classes=[42])
    with pytest.raises(ValueError, match="Unknown class name"):
        gallery.query(query, classes=["unicorn"])
    with pytest.raises(ValueError, match="k must be"):
        gallery.query(query, k=0)
    with pytest.raises(ValueError, match="uint8 pixels"):
        NearestTrainingImages("l1-pixels").fit(embedded.dataset.x_train[:10] / 255.0, embedded.dataset.y_train[:10])
    with pytest.raises(ValueError, match="Unknown metric"):
        NearestTrainingImages(metric="euclid").fit(embedded.train.features[:10], embedded.dataset.y_train[:10])


def test_save_load_round_trip(tmp_path, embedded, gallery):
    queries = embedded.test.features[:50]
    before = gallery.query(queries, classes=[0, 1, 2, 9], k=4)
    lossless = NearestTrainingImages.load(gallery.save(tmp_path / "lossless.npz", thumbnail_quality=None))
    for loaded in (lossless, NearestTrainingImages.load(gallery.save(tmp_path / "gallery.npz"))):
        assert loaded.get_params() == gallery.get_params()
        assert np.array_equal(loaded.features_, gallery.features_)
        assert np.array_equal(loaded.labels_, gallery.labels_)
        after = loaded.query(queries, classes=[0, 1, 2, 9], k=4)
        assert np.array_equal(after[0], before[0]) and np.array_equal(after[1], before[1])
    assert np.array_equal(lossless.thumbnails_, gallery.thumbnails_)
    # The default JPEG mosaic is for display: close to the originals, not bit-identical.
    jpeg = NearestTrainingImages.load(tmp_path / "gallery.npz").thumbnails_
    assert jpeg.shape == gallery.thumbnails_.shape and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - gallery.thumbnails_).mean() < 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.npz", "lossless.npz"]  # no temporary left
    with np.load(tmp_path / "gallery.npz", allow_pickle=False) as stored:
        assert stored["features"].dtype == np.float16


def test_cosine_features_find_the_right_class_far_more_often_than_pixels(embedded, gallery):
    dataset = embedded.dataset
    pixels = NearestTrainingImages("l1-pixels").fit(gallery.thumbnails_, gallery.labels_)
    own, _ = pixels.query(gallery.thumbnails_[3], k=1)
    assert own[0] == 3
    cosine = nearest_class_agreement(gallery, embedded.test.features, dataset.y_test)
    raw = nearest_class_agreement(pixels, dataset.x_test, dataset.y_test)
    assert cosine > 0.3 > 1 / 13
    assert cosine > raw + 0.1


def test_gallery_for_shows_one_image_per_top_class(embedded, gallery):
    probabilities, features = embedded.test.probabilities[0], embedded.test.features[0]
    top4 = np.argsort(-probabilities)[:4].tolist()
    shown = gallery_for(gallery, probabilities, features)
    assert [n.label for n in shown] == top4
    assert [n.class_name for n in shown] == [embedded.dataset.class_names[c] for c in top4]
    assert all(n.thumbnail.shape == (32, 32, 3) for n in shown)
    for neighbour in shown:
        best, distance = gallery.query(features, classes=[neighbour.label], k=1)
        assert best[0] == neighbour.index and distance[0] == pytest.approx(neighbour.distance)
    nearest = gallery_for(gallery, probabilities, features, mode="nearest")
    assert len(nearest) == 4 and {n.label for n in nearest} <= set(top4)
    assert [n.distance for n in nearest] == sorted(n.distance for n in nearest)


def test_gallery_for_breaks_ties_by_the_second_score(cnn_bundle):
    """The fallback's masses often tie (several classes at 0): the CNN's probabilities then decide."""
    shipped = cnn_bundle.gallery
    query = shipped.features_[5]
    masses = np.zeros(13)
    masses[9] = 0.6  # one class clearly first, the other twelve tied
    cnn = np.linspace(0.01, 0.13, 13)  # the CNN prefers the last classes
    shown = gallery_for(shipped, masses, query, tie_breaker=cnn)
    assert [n.label for n in shown] == [9, 12, 11, 10]
    assert [n.probability for n in shown] == [0.6, 0.0, 0.0, 0.0]  # the scores the ranking used
    # Without a second score, full ties keep class order.
    assert [n.label for n in gallery_for(shipped, masses, query)] == [9, 0, 1, 2]
