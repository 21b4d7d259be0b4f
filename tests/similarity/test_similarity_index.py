"""NearestTrainingImages on the real CNN's features of real training images."""

import numpy as np
import pytest

from similarity import NearestTrainingImages, gallery_for
from similarity.build import nearest_class_agreement
from similarity.gallery import balanced_sample


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


def test_estimator_contract(embedded, gallery_rows):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    dataset = embedded.dataset
    estimator = NearestTrainingImages(feature_dtype="float32")
    with pytest.raises(NotFittedError):
        estimator.query(embedded.test.features[0])
    assert estimator.fit(embedded.train.features[gallery_rows], dataset.y_train[gallery_rows]) is estimator
    assert estimator.features_.shape == (len(gallery_rows), embedded.train.features.shape[1])
    assert np.allclose(np.linalg.norm(estimator.features_, axis=1), 1.0, atol=1e-5)  # L2-normalised
    assert estimator.n_features_in_ == embedded.train.features.shape[1]
    assert estimator.thumbnails_ is None
    assert estimator.classes_.tolist() == list(range(len(dataset.class_names)))
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params() and not hasattr(copy, "features_")


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
        assert np.allclose(np.sort(expected)[:4], distances, atol=1e-4)
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
