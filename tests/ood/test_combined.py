"""The combined detector (forests + ASH-S energy + feature length) and its two new parts, on real
features of the dev (or committed) model."""

import numpy as np
import pytest

from ood import ClassIsolationForests, load_detector
from ood.baselines import ActivationShaping, EnergyScore, FeatureNorm, logit_weights
from ood.combined import CombinedScore
from pipeline.ood_evaluation import predicted, true_positives

N_CLASSES = 13


@pytest.fixture(scope="module")
def head(model_path):
    import keras

    return logit_weights(keras.saving.load_model(model_path, compile=False))


@pytest.fixture(scope="module")
def combined(real_features, head):
    detector = CombinedScore([
        ("forests", ClassIsolationForests(n_estimators=50)),
        ("ash", ActivationShaping(*head)),
        ("norm", FeatureNorm()),
    ], n_classes=N_CLASSES)
    val = real_features["val"]
    return detector.fit(*true_positives(real_features["train"])).calibrate(val["features"], predicted(val))


def test_fit_clones_its_parts_and_keeps_state_in_underscore_attributes(combined):
    assert [name for name, _ in combined.estimators_] == ["forests", "ash", "norm"]
    assert all(fitted is not given for (_, fitted), (_, given) in zip(combined.estimators_, combined.estimators))
    assert not hasattr(combined.estimators[0][1], "forests_")  # the constructor's detectors stay unfitted
    assert combined.means_.shape == combined.scales_.shape == (3,)


def test_score_is_the_sum_of_the_standardized_parts(combined, real_features):
    test = real_features["test"]
    parts = combined.component_scores(test["features"], predicted(test))
    np.testing.assert_allclose(sum(parts.values()), combined.score_samples(test["features"], predicted(test)), rtol=1e-9)
    # Standardized on the calibration images: mean 0 and spread 1 there.
    val = real_features["val"]
    for name, values in combined.component_scores(val["features"], predicted(val)).items():
        assert abs(values.mean()) < 1e-6 and abs(values.std() - 1) < 1e-6, name


def test_one_threshold_for_all_classes_keeps_its_rate_on_held_back_data(combined, real_features):
    assert np.all(combined.thresholds_ == combined.thresholds_[0])
    test = real_features["test"]  # never used to fit or calibrate
    kept = np.mean(combined.predict(test["features"], predicted(test)) == 1)
    assert 0.92 <= kept <= 0.98, kept


def test_it_refuses_digits_and_survives_a_save_and_load(combined, real_features, tmp_path):
    mnist, test = real_features["mnist"], real_features["test"]
    # Far more often than our own test pictures (about 5%): on the outlier-exposed CNN about a
    # quarter of the digits (its energy part is what outlier exposure flattened for them).
    assert np.mean(combined.predict(mnist["features"], predicted(mnist)) == -1) > 3 * np.mean(
        combined.predict(test["features"], predicted(test)) == -1)
    loaded = load_detector(combined.save(tmp_path / "combined.joblib"))
    np.testing.assert_array_equal(loaded.decision_function(mnist["features"], predicted(mnist)),
                                  combined.decision_function(mnist["features"], predicted(mnist)))


def test_ash_without_pruning_is_the_energy_of_features_scaled_by_e(real_features, head):
    train, test = true_positives(real_features["train"]), real_features["test"]
    ash = ActivationShaping(*head, percentile=0, n_classes=N_CLASSES).fit(*train)
    weights, bias = head
    energy = EnergyScore(weights * np.e, bias, n_classes=N_CLASSES).fit(*train)
    # ASH-S rescales by the features' sum before and after pruning, which needs a positive sum
    # (ReLU features); a few of these GELU features sum to zero or less, and ASH leaves them nothing.
    positive = test["features"].astype(np.float64).sum(axis=1) > 0
    assert positive.mean() > 0.99
    np.testing.assert_allclose(ash.score_samples(test["features"][positive], predicted(test)[positive]),
                               energy.score_samples(test["features"][positive], predicted(test)[positive]), rtol=1e-9)


def test_feature_norm_is_the_length_of_the_features(real_features):
    test = real_features["test"]
    detector = FeatureNorm(n_classes=N_CLASSES).fit(*true_positives(real_features["train"]))
    np.testing.assert_allclose(detector.score_samples(test["features"], predicted(test)),
                               np.linalg.norm(test["features"].astype(np.float64), axis=1), rtol=1e-6)


def test_a_combination_of_nothing_is_refused(real_features):
    with pytest.raises(ValueError, match="at least one"):
        CombinedScore([], n_classes=N_CLASSES).fit(*true_positives(real_features["train"]))
