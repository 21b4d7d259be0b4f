"""FallbackPolicy's branches, fed with real photos through the real CNN and the real MobileNetV2."""

import numpy as np
import pytest

from classifier.labels import CLASS_NAMES
from fallback.policy import CNN, FALLBACK, REFUSED, FallbackPolicy
from fallback.tuning import cnn_outputs

DOG, TENCH = "n02088364_beagle", "n01440764_tench"


@pytest.fixture(scope="module")
def cnn_probabilities(cnn_bundle, photo):
    probabilities, _ = cnn_outputs(cnn_bundle, [photo(DOG), photo(TENCH)])
    return {DOG: probabilities[0], TENCH: probabilities[1]}


def test_a_sure_cnn_answers_without_consulting(cnn_probabilities, fallback_v2, photo):
    probabilities = cnn_probabilities[DOG]
    policy = FallbackPolicy(cnn_confidence_threshold=float(probabilities.max()))
    consult = fallback_v2.consult(photo(DOG))
    decision = policy.decide(probabilities, ood_inlier=True, consult=consult)
    assert decision.answered_by == CNN and decision.class_index == int(probabilities.argmax())
    assert consult.result is None and decision.class_masses is None  # never consulted


def test_an_unsure_cnn_hands_a_dog_photo_to_the_fallback(cnn_probabilities, fallback_v2, photo):
    probabilities = cnn_probabilities[DOG]
    policy = FallbackPolicy(cnn_confidence_threshold=float(probabilities.max()) + 1e-6, fallback_mass_threshold=0.5)
    consult = fallback_v2.consult(photo(DOG))
    decision = policy.decide(probabilities, ood_inlier=True, consult=consult)
    assert consult.result is not None and consult.result.top[0]["our_class"] == "dog"
    assert decision.answered_by == FALLBACK and CLASS_NAMES[decision.class_index] == "dog"
    assert decision.confidence >= 0.5 and "ImageNet model answered" in decision.detail


def test_an_ood_refusal_overrules_a_sure_cnn_and_a_tench_is_refused(cnn_probabilities, fallback_v2, photo):
    probabilities = cnn_probabilities[TENCH]
    policy = FallbackPolicy(cnn_confidence_threshold=0.0, fallback_mass_threshold=0.5)
    consult = fallback_v2.consult(photo(TENCH))
    decision = policy.decide(probabilities, ood_inlier=-1, consult=consult)
    assert consult.result is not None and consult.result.top[0]["our_class"] is None
    assert decision.answered_by == REFUSED and decision.class_index is None and decision.refused
    assert decision.confidence < 0.5 and "unlike anything" in decision.detail


def test_an_ood_refusal_can_still_be_answered_by_the_fallback(cnn_probabilities, fallback_v2, photo):
    decision = FallbackPolicy(0.0, 0.5).decide(cnn_probabilities[DOG], False, fallback_v2.consult(photo(DOG)))
    assert decision.answered_by == FALLBACK and CLASS_NAMES[decision.class_index] == "dog"


def test_no_fallback_means_refusing_when_unsure(cnn_probabilities):
    decision = FallbackPolicy(1.0, 0.5).decide(cnn_probabilities[DOG] * 0.99, True, consult=None)
    assert decision.answered_by == REFUSED and "no fallback" in decision.detail


def test_ood_verdict_conventions():
    sure = np.eye(len(CLASS_NAMES))[5]
    policy = FallbackPolicy(0.5, 0.5)
    for inlier in (True, 1, np.int64(1), np.bool_(True), None):
        assert policy.decide(sure, inlier, consult=None).answered_by == CNN
    for outlier in (False, -1, np.int64(-1)):
        assert policy.decide(sure, outlier, consult=None).answered_by == REFUSED
    with pytest.raises(ValueError, match="ood_inlier"):
        policy.decide(sure, 0.5, consult=None)


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="cnn_confidence_threshold"):
        FallbackPolicy(cnn_confidence_threshold=1.5)
    policy = FallbackPolicy()
    with pytest.raises(ValueError, match="13 values"):
        policy.decide(np.ones(10) / 10, True)
    with pytest.raises(ValueError, match="NaN"):
        policy.decide(np.full(13, np.nan), True)
    with pytest.raises(ValueError, match="class masses"):
        policy.decide(np.ones(13) / 13, True, consult=lambda: np.ones(5))


def test_round_trip_through_a_dict():
    policy = FallbackPolicy(0.8, 0.4)
    assert FallbackPolicy.from_dict(policy.to_dict()) == policy


def test_a_thumbnail_is_the_cnns_alone_and_never_consults(cnn_probabilities, fallback_v2, photo):
    probabilities = cnn_probabilities[DOG]
    sure = FallbackPolicy(cnn_confidence_threshold=1.0, thumbnail_cnn_threshold=float(probabilities.max()))
    consult = fallback_v2.consult(photo(DOG))
    decision = sure.decide(probabilities, True, consult, thumbnail=True)
    assert decision.answered_by == CNN and decision.class_index == int(probabilities.argmax())
    # Unsure, or called an outlier by the detector: refused, still without asking the fallback.
    unsure = FallbackPolicy(cnn_confidence_threshold=0.0, thumbnail_cnn_threshold=float(probabilities.max()) + 1e-6)
    for policy, inlier in ((unsure, True), (sure, False)):
        decision = policy.decide(probabilities, inlier, consult, thumbnail=True)
        assert decision.answered_by == REFUSED and "picture this small" in decision.detail
    assert consult.result is None


def test_bundles_from_before_the_thumbnail_rule_load_with_its_default():
    assert FallbackPolicy.from_dict({"cnn_confidence_threshold": 0.9, "fallback_mass_threshold": 0.4}) == FallbackPolicy(0.9, 0.4)
    assert FallbackPolicy(0.9, 0.4).thumbnail_cnn_threshold == 0.5
    with pytest.raises(ValueError, match="thumbnail_cnn_threshold"):
        FallbackPolicy(thumbnail_cnn_threshold=1.5)
