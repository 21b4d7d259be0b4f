"""NeighbourhoodScore on real pooled features of the dev (or committed) model: the estimator
contract, its k, what the saved file holds, and that it tells digits and other pictures from ours."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from ood import NeighbourhoodScore, load_detector
from pipeline.ood_evaluation import auroc, predicted, true_positives

N_CLASSES = 13


@pytest.fixture(scope="module")
def train(real_features):
    return true_positives(real_features["train"], "ood_features")


@pytest.fixture(scope="module")
def detector(train, real_features):
    val = real_features["val"]
    return NeighbourhoodScore(n_classes=N_CLASSES).fit(*train).calibrate(val["ood_features"], predicted(val))


def test_the_pooled_features_hold_the_earlier_layers_beside_the_features_and_their_length(real_features):
    test = real_features["test"]
    ood_features, features = test["ood_features"], test["features"]
    assert ood_features.shape[1] > features.shape[1] + 1
    # The last column is the features' length; before it, the features' direction; every part has length 1.
    length = np.linalg.norm(features, axis=1)
    np.testing.assert_allclose(ood_features[:, -1], length, rtol=1e-5)
    np.testing.assert_allclose(ood_features[:, -1 - features.shape[1]:-1], features / length[:, None], atol=1e-5)
    parts = round(float(np.mean(np.sum(ood_features[:, :-1] ** 2, axis=1))))
    assert parts == 5, parts


def test_fit_returns_self_and_keeps_a_balanced_bank(train):
    detector = NeighbourhoodScore(bank_per_class=50, k=10, n_classes=N_CLASSES)
    assert not [name for name in vars(detector) if name.endswith("_")]
    assert detector.fit(*train) is detector
    assert detector.bank_.dtype == np.float16 and detector.bank_.shape == (50 * N_CLASSES, train[0].shape[1] - 1)
    assert np.bincount(detector.bank_labels_).tolist() == [50] * N_CLASSES
    assert detector.k_ == 10 and detector.means_.shape == detector.scales_.shape == (2,)
    copy = clone(detector)
    assert copy.get_params() == detector.get_params() and not [name for name in vars(copy) if name.endswith("_")]
    with pytest.raises(NotFittedError):
        copy.score_samples(train[0][:3], train[1][:3])
    with pytest.raises(ValueError, match="at least 1"):
        NeighbourhoodScore(k=0).fit(*train)


def test_a_small_class_caps_k(train):
    features, labels = train
    keep = np.r_[np.flatnonzero(labels == 0)[:8], np.flatnonzero(labels != 0)]
    detector = NeighbourhoodScore(bank_per_class=100, k=20, n_classes=N_CLASSES).fit(features[keep], labels[keep])
    assert detector.k_ == 8 and np.bincount(detector.bank_labels_)[0] == 8


def test_both_parts_count_after_calibration(detector, real_features):
    val = real_features["val"]
    parts = (detector._parts(val["ood_features"]) - detector.means_) / detector.scales_
    np.testing.assert_allclose(parts.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(parts.std(axis=0), 1.0, atol=1e-6)


def test_it_tells_digits_and_refuses_about_five_percent_of_our_test_pictures(detector, real_features):
    test, mnist = real_features["test"], real_features["mnist"]
    id_scores = detector.decision_function(test["ood_features"], predicted(test))
    digit_scores = detector.decision_function(mnist["ood_features"], predicted(mnist))
    assert auroc(id_scores, digit_scores) > 0.92  # 0.93 on these 1,000 digits with the committed CNN
    assert 0.02 <= np.mean(id_scores < 0) <= 0.09
    assert np.mean(digit_scores < 0) > 0.5  # 0.60 with the committed CNN
    # One threshold for every class: the score means the same for each.
    assert len(set(detector.thresholds_.tolist())) == 1


def test_it_tells_other_classes_better_than_plain_knn_on_the_features(detector, real_features):
    from ood.baselines import KNearestNeighbours

    test, near = real_features["test"], real_features["near_ood"]
    knn = KNearestNeighbours(k=50, n_classes=N_CLASSES).fit(*true_positives(real_features["train"]))
    plain = auroc(knn.score_samples(test["features"], predicted(test)), knn.score_samples(near["features"], predicted(near)))
    ours = auroc(detector.score_samples(test["ood_features"], predicted(test)),
                 detector.score_samples(near["ood_features"], predicted(near)))
    assert ours > plain + 0.01 and ours > 0.84, (ours, plain)


def test_saved_and_loaded_it_scores_alike_and_keeps_the_bank_small(detector, real_features, tmp_path):
    test = real_features["test"]
    path = detector.save(tmp_path / "detector.joblib")
    import joblib

    assert "_bank32" not in vars(joblib.load(path))  # the float32 working copy is rebuilt, never saved
    loaded = load_detector(path)
    np.testing.assert_array_equal(loaded.decision_function(test["ood_features"], predicted(test)),
                                  detector.decision_function(test["ood_features"], predicted(test)))
    assert path.stat().st_size < 1.2 * detector.bank_.nbytes
