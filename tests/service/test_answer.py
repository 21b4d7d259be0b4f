"""The answer rule (service.answer): its branches, fed with the shipped photos through the real
CNN, the real OOD detector and the real ImageNet fallback of assets/; the words a person reads;
and where the thresholds are stored."""

import json

import numpy as np
import pytest
from PIL import Image

from bundle.images import open_image
from bundle.labels import CLASS_NAMES
from fallback import load_fallback
from ood import NoiseGate
from pipeline.answer_tuning import cnn_outputs
from service.answer import (
    CNN, FALLBACK, OLD_RULE_FILE, REFUSAL, REFUSED, RULE_FILE, UNSURE, AnswerRule, under_the_hood, verdict,
)
from tests.conftest import REPO

DOG, NONE = "pug", "wall_clock"  # a dog, and a picture of none of our classes


@pytest.fixture(scope="module")
def pictures(example_photos):
    return {name: open_image(example_photos[name]) for name in (DOG, NONE)}


@pytest.fixture(scope="module")
def cnn_probabilities(cnn_bundle, pictures):
    probabilities, _ = cnn_outputs(cnn_bundle, [pictures[DOG], pictures[NONE]])
    return {DOG: probabilities[0], NONE: probabilities[1]}


@pytest.fixture(scope="module")
def fallback():
    return load_fallback(REPO / "assets" / "fallback")


def unsure_of(probabilities):
    """A CNN threshold just above this picture's top probability."""
    return min(1.0, float(probabilities.max()) + 1e-6)


def test_a_sure_cnn_answers_without_consulting(cnn_probabilities, fallback, pictures):
    probabilities = cnn_probabilities[DOG]
    rule = AnswerRule(cnn_confidence_threshold=float(probabilities.max()))
    consult = fallback.consult(pictures[DOG])
    decision = rule.decide(probabilities, ood_inlier=True, consult=consult, class_names=CLASS_NAMES)
    assert decision.answered_by == CNN and decision.class_index == int(probabilities.argmax())
    assert consult.result is None and decision.class_masses is None  # never consulted
    assert decision.refused_by is None and not decision.refused


def test_an_unsure_cnn_hands_a_dog_photo_to_the_fallback(cnn_probabilities, fallback, pictures):
    probabilities = cnn_probabilities[DOG]
    rule = AnswerRule(cnn_confidence_threshold=unsure_of(probabilities), fallback_mass_threshold=0.5)
    consult = fallback.consult(pictures[DOG])
    decision = rule.decide(probabilities, ood_inlier=True, consult=consult, class_names=CLASS_NAMES)
    assert consult.result is not None and consult.result.top[0]["our_class"] == "dog"
    assert decision.answered_by == FALLBACK and CLASS_NAMES[decision.class_index] == "dog"
    assert decision.confidence >= 0.5 and "ImageNet model answered" in decision.detail
    assert decision.class_masses == tuple(float(m) for m in consult.result.class_masses)


def test_an_ood_refusal_overrules_a_sure_cnn_and_a_clock_is_refused(cnn_probabilities, fallback, pictures):
    probabilities = cnn_probabilities[NONE]
    rule = AnswerRule(cnn_confidence_threshold=0.0, fallback_mass_threshold=0.5)
    consult = fallback.consult(pictures[NONE])
    decision = rule.decide(probabilities, ood_inlier=-1, consult=consult, class_names=CLASS_NAMES)
    assert consult.result is not None and consult.result.top[0]["our_class"] is None
    assert decision.answered_by == REFUSED and decision.class_index is None and decision.refused
    assert decision.confidence < 0.5 and "unlike anything" in decision.detail and decision.refused_by == "fallback"


def test_an_ood_refusal_can_still_be_answered_by_the_fallback(cnn_probabilities, fallback, pictures):
    decision = AnswerRule(0.0, 0.5).decide(cnn_probabilities[DOG], False, fallback.consult(pictures[DOG]), CLASS_NAMES)
    assert decision.answered_by == FALLBACK and CLASS_NAMES[decision.class_index] == "dog"


def test_no_fallback_means_refusing_when_unsure(cnn_probabilities):
    decision = AnswerRule(1.0, 0.5).decide(cnn_probabilities[DOG] * 0.99, True, consult=None, class_names=CLASS_NAMES)
    assert decision.answered_by == REFUSED and "no fallback" in decision.detail and decision.refused_by == "no_fallback"


def test_ood_verdict_conventions():
    sure = np.eye(len(CLASS_NAMES))[5]
    rule = AnswerRule(0.5, 0.5)
    for inlier in (True, 1, np.int64(1), np.bool_(True), np.array(True), None):
        assert rule.decide(sure, inlier, consult=None, class_names=CLASS_NAMES).answered_by == CNN
    for outlier in (False, -1, np.int64(-1), np.array(-1)):
        assert rule.decide(sure, outlier, consult=None, class_names=CLASS_NAMES).answered_by == REFUSED
    with pytest.raises(ValueError, match="ood_inlier"):
        rule.decide(sure, 0.5, consult=None, class_names=CLASS_NAMES)


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="cnn_confidence_threshold"):
        AnswerRule(cnn_confidence_threshold=1.5)
    rule = AnswerRule()
    with pytest.raises(ValueError, match="13 values"):
        rule.decide(np.ones(10) / 10, True, class_names=CLASS_NAMES)
    with pytest.raises(ValueError, match="NaN"):
        rule.decide(np.full(13, np.nan), True, class_names=CLASS_NAMES)
    with pytest.raises(ValueError, match="class masses"):
        rule.decide(np.ones(13) / 13, True, consult=lambda: np.ones(5), class_names=CLASS_NAMES)


def test_a_thumbnail_is_the_cnns_alone_and_never_consults(cnn_probabilities, fallback, pictures):
    probabilities = cnn_probabilities[DOG]
    sure = AnswerRule(cnn_confidence_threshold=1.0, thumbnail_cnn_threshold=float(probabilities.max()))
    consult = fallback.consult(pictures[DOG])
    decision = sure.decide(probabilities, True, consult, CLASS_NAMES, thumbnail=True)
    assert decision.answered_by == CNN and decision.class_index == int(probabilities.argmax())
    # Unsure, or called an outlier by the detector: refused, still without asking the fallback.
    unsure = AnswerRule(cnn_confidence_threshold=0.0, thumbnail_cnn_threshold=unsure_of(probabilities))
    for rule, inlier in ((unsure, True), (sure, False)):
        decision = rule.decide(probabilities, inlier, consult, CLASS_NAMES, thumbnail=True)
        assert decision.answered_by == REFUSED and "picture this small" in decision.detail
        assert decision.refused_by == "thumbnail"
    assert consult.result is None


def test_static_is_refused_by_the_noise_gate_in_words_a_person_reads():
    gate = NoiseGate.load(REPO / "assets" / "noise_gate.json")
    static = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    correlation = gate.judge(static)
    assert correlation < gate.threshold_
    decision = AnswerRule.refuse_noise(correlation, gate.natural_min_)
    assert decision.answered_by == REFUSED and decision.refused_by == "noise_gate" and decision.class_index is None
    assert "random noise" in decision.detail and f"{correlation:.2f}" in decision.detail
    assert f"{gate.natural_min_:.2f}" in decision.detail
    assert verdict(decision, CLASS_NAMES) == REFUSAL


def test_the_verdict_names_the_class_and_who_answered(cnn_probabilities, fallback, pictures):
    probabilities = cnn_probabilities[DOG]
    by_cnn = AnswerRule(float(probabilities.max())).decide(probabilities, True, None, CLASS_NAMES)
    name = CLASS_NAMES[by_cnn.class_index].replace("_", " ")
    assert verdict(by_cnn, CLASS_NAMES) == f"This looks like: {name} ({by_cnn.confidence:.0%})"
    by_fallback = AnswerRule(unsure_of(probabilities), 0.5).decide(probabilities, True, fallback.consult(pictures[DOG]), CLASS_NAMES)
    assert verdict(by_fallback, CLASS_NAMES).startswith("This looks like: dog (answered by the ImageNet fallback model")
    unknown = AnswerRule(1.0, 0.5).decide(probabilities * 0.99, False, None, CLASS_NAMES)
    assert verdict(unknown, CLASS_NAMES) == REFUSAL and unknown.refusal == "unknown"
    unsure = AnswerRule(1.0, 0.5).decide(probabilities * 0.99, True, None, CLASS_NAMES)
    assert verdict(unsure, CLASS_NAMES) == UNSURE and unsure.refusal == "unsure"


def test_a_refusal_says_none_of_ours_or_not_sure_and_names_no_class_in_the_verdict(cnn_probabilities):
    probabilities = cnn_probabilities[DOG] * 0.5
    rule = AnswerRule(1.0, 0.6, 0.9, unsure_mass_threshold=0.5)

    def decide(masses, inlier=False, thumbnail=False):
        masses = np.asarray(masses + [0.0] * (len(CLASS_NAMES) - len(masses)))
        return rule.decide(probabilities, inlier, lambda: masses, CLASS_NAMES, thumbnail=thumbnail)

    # The ImageNet model puts 75% on our classes, split between two: probably ours, not surely which.
    split = decide([0.40, 0.35])
    assert (split.refusal, verdict(split, CLASS_NAMES)) == ("unsure", UNSURE)
    assert "75% on our classes" in split.detail and "airplane" in split.detail and "automobile 35%" in split.detail
    # It puts 20% on all of ours together: none of them.
    elsewhere = decide([0.15, 0.05])
    assert (elsewhere.refusal, verdict(elsewhere, CLASS_NAMES)) == ("unknown", REFUSAL)
    # A thumbnail: the OOD detector's call decides which refusal.
    assert decide([], inlier=True, thumbnail=True).refusal == "unsure"
    assert decide([], inlier=False, thumbnail=True).refusal == "unknown"
    # Static is none of our classes.
    assert AnswerRule.refuse_noise(0.05, 0.3).refusal == "unknown"
    for decision in (split, elsewhere):
        assert not any(name.replace("_", " ") in verdict(decision, CLASS_NAMES) for name in CLASS_NAMES)
    assert decide([0.7]).refusal is None  # answered


def test_under_the_hood_says_what_each_stage_said_in_order(cnn_probabilities, fallback, pictures):
    probabilities = cnn_probabilities[NONE]
    cnn_top = [(CLASS_NAMES[i], float(probabilities[i])) for i in np.argsort(probabilities)[::-1][:3]]
    consult = fallback.consult(pictures[NONE])
    decision = AnswerRule(1.0, 0.5).decide(probabilities, False, consult, CLASS_NAMES)
    lines = under_the_hood(decision, CLASS_NAMES, cnn_top, noise=(0.8, 0.23), ood=(False, -1.5), imagenet_top=consult.result.top)
    assert [line.split("**")[1] for line in lines] == ["Noise gate", "The small CNN", "Unknown-picture check", "The ImageNet model"]
    assert "a real picture" in lines[0] and "0.80" in lines[0]
    assert "not used for the answer" in lines[1] and cnn_top[0][0].replace("_", " ") in lines[1]
    assert "score -1.50" in lines[2] and "not trusted" in lines[2]
    assert consult.result.top[0]["imagenet_class"] in lines[3] and "none of our classes" in lines[3]


def test_under_the_hood_says_why_a_stage_did_not_run(cnn_probabilities):
    probabilities = cnn_probabilities[DOG]
    cnn_top = [(CLASS_NAMES[int(probabilities.argmax())], float(probabilities.max()))]
    by_cnn = AnswerRule(0.0).decide(probabilities, True, None, CLASS_NAMES)
    lines = under_the_hood(by_cnn, CLASS_NAMES, cnn_top, noise=None, ood=(True, 0.4))
    assert "did not judge" in lines[0] and "its answer" in lines[1] and "may be trusted" in lines[2]
    assert "not asked (the CNN was sure enough" in lines[3]
    static = AnswerRule.refuse_noise(0.05, 0.34)
    lines = under_the_hood(static, CLASS_NAMES, cnn_top, noise=(0.05, 0.23))
    assert "static: refused" in lines[0] and "no OOD detector" in lines[2] and "noise gate refused" in lines[3]
    thumbnail = AnswerRule(0.0, 0.5, 1.0).decide(probabilities * 0.99, True, None, CLASS_NAMES, thumbnail=True)
    assert "a picture this small" in under_the_hood(thumbnail, CLASS_NAMES, cnn_top, thumbnail=True)[3]
    no_fallback = AnswerRule(1.0).decide(probabilities * 0.99, True, None, CLASS_NAMES)
    assert "none in this bundle" in under_the_hood(no_fallback, CLASS_NAMES, cnn_top)[3]


def test_round_trip_through_a_dict():
    rule = AnswerRule(0.8, 0.4, 0.3)
    assert AnswerRule.from_dict(rule.to_dict()) == rule


def test_rules_from_before_the_thumbnail_rule_load_with_its_default():
    assert AnswerRule.from_dict({"cnn_confidence_threshold": 0.9, "fallback_mass_threshold": 0.4}) == AnswerRule(0.9, 0.4)
    assert AnswerRule(0.9, 0.4).thumbnail_cnn_threshold == 0.5
    with pytest.raises(ValueError, match="thumbnail_cnn_threshold"):
        AnswerRule(thumbnail_cnn_threshold=1.5)


def test_saved_to_the_bundle_root_and_loaded_back(tmp_path):
    assert AnswerRule.load(tmp_path) == AnswerRule()  # a bundle without a rule: the defaults
    rule = AnswerRule(0.8, 0.4, 0.3)
    rule.save(tmp_path, tuning={"tuned": True})
    saved = json.loads((tmp_path / RULE_FILE).read_text())
    assert saved["tuning"] == {"tuned": True} and AnswerRule.from_dict(saved) == rule
    assert AnswerRule.load(tmp_path) == rule


def test_a_bundle_of_the_old_layout_is_refused_with_a_plain_rebuild(tmp_path):
    # Bundles built before answer_rule.json kept the thresholds in fallback/fallback_config.json.
    (tmp_path / "fallback").mkdir()
    old = {"model": "mobilenet_v2_1.0_224_quant.tflite", "labels": "imagenet_labels.txt", "num_threads": 1,
           "policy": {"cnn_confidence_threshold": 0.99, "fallback_mass_threshold": 0.6}}
    (tmp_path / OLD_RULE_FILE).write_text(json.dumps(old))
    with pytest.raises(ValueError, match="rebuild it"):
        AnswerRule.load(tmp_path)
    # Once the bundle has a rule file of its own, that one counts.
    AnswerRule(0.7, 0.3).save(tmp_path)
    assert AnswerRule.load(tmp_path) == AnswerRule(0.7, 0.3)
