"""The service layer on the committed bundle, without Gradio."""

import sqlite3

import numpy as np
import pytest
from PIL import Image

from classifier.bundle import Bundle
from classifier.data import load_mnist
from classifier.images import ImageError
from monitoring import PredictionLog
from service.predictor import REFUSAL, Predictor
from similarity import FeedbackStore
from tests.bad_inputs import unusable_files


@pytest.fixture(scope="module")
def bundle():
    from tests.app.conftest import ASSETS

    return Bundle.load(ASSETS)


@pytest.fixture()
def predictor(bundle, tmp_path):
    log = PredictionLog(tmp_path / "log.sqlite")
    feedback = FeedbackStore(tmp_path / "feedback", class_names=bundle.class_names)
    return Predictor(bundle, log=log, feedback=feedback)


def test_a_prediction_is_complete_and_logged(predictor, photo_paths, tmp_path):
    prediction = predictor.predict(photo_paths[10])
    assert prediction.answered_by in ("cnn", "fallback", "refused")
    assert (prediction.label is None) == (prediction.answered_by == "refused")
    assert prediction.message == REFUSAL or prediction.label.replace("_", " ") in prediction.message
    names = [name for name, _ in prediction.top_classes]
    assert len(names) == 3 and all(name in predictor.class_names for name in names)
    assert [n.class_name for n in prediction.gallery][:3] == names, "one gallery image per top class, in order"
    assert prediction.model_input.shape == (32, 32, 3) and prediction.model_input.dtype == np.uint8
    assert prediction.log_id is not None and predictor.log.count() == 1


def test_the_fallback_is_consulted_only_when_the_policy_asks(predictor, photo_paths):
    for path in photo_paths[:20]:
        prediction = predictor.predict(path)
        confident = max(p for _, p in prediction.top_classes) >= predictor.bundle.fallback.policy.cnn_confidence_threshold
        if confident and prediction.ood_inlier:
            assert prediction.answered_by == "cnn" and prediction.imagenet_top is None
        else:
            assert prediction.imagenet_top is not None and prediction.answered_by in ("fallback", "refused")


def test_mnist_digits_are_refused(predictor, shared_data):
    digits, _ = load_mnist(shared_data / "mnist")
    verdicts = [predictor.predict(Image.fromarray(digit[..., 0])).answered_by for digit in digits[:10]]
    assert verdicts.count("refused") >= 8, verdicts


def test_relabel_saves_the_picture_and_tags_the_log(predictor, photo_paths, tmp_path):
    prediction = predictor.predict(photo_paths[20])
    label = prediction.gallery[1].class_name
    message = predictor.relabel(prediction, label)
    assert message == f"Based on the image you selected, your label is {label.replace('_', ' ')}"
    assert len(list((tmp_path / "feedback" / label).glob("*.png"))) == 1
    with sqlite3.connect(tmp_path / "log.sqlite") as database:
        assert database.execute("SELECT tag FROM predictions WHERE id = ?", (prediction.log_id,)).fetchone()[0] == label
    with pytest.raises(ValueError, match="not one of our classes"):
        predictor.relabel(prediction, "../../etc")


def test_unusable_files_raise_a_plain_error_and_log_nothing(predictor, photo_paths, tmp_path):
    photo = Image.open(photo_paths[0]).convert("RGB")
    for name, (data, message) in unusable_files(photo).items():
        with pytest.raises(ImageError, match=message):
            predictor.predict(data)
    assert predictor.log.count() == 0
