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


def test_a_thumbnail_is_answered_by_the_cnn_without_the_fallback(predictor, shared_data):
    # CIFAR-10 test pictures are 32x32, the CNN's own input: rule 0 of the fallback policy.
    from classifier.data import load_image_folder

    x, y, names = load_image_folder(shared_data / "cifar10-jpeg.tgz", "cifar10/test", limit_per_class=3)
    predictions = [predictor.predict(Image.fromarray(image)) for image in x]
    assert all(p.imagenet_top is None and p.answered_by in ("cnn", "refused") for p in predictions)
    threshold = predictor.bundle.fallback.policy.thumbnail_cnn_threshold
    for p in predictions:
        sure = p.top_classes[0][1] >= threshold and p.ood_inlier
        assert (p.answered_by == "cnn") == sure
    right = sum(p.label == names[label] for p, label in zip(predictions, y))
    assert right >= len(x) // 2, f"only {right} of {len(x)} CIFAR-10 thumbnails answered right"
    # A photo twice as large on each side is not a thumbnail: the fallback is asked when the CNN is unsure.
    big = predictor.predict(Image.fromarray(x[0]).resize((64, 64)))
    assert big.answered_by == "cnn" or big.imagenet_top is not None


def test_noise_is_refused_before_the_cnn_can_guess(predictor):
    rng = np.random.default_rng(7)
    for size in (16, 32, 64):
        for _ in range(5):
            static = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            prediction = predictor.predict(static)
            assert prediction.answered_by == "refused" and prediction.message == REFUSAL
            assert "random noise" in prediction.detail and prediction.imagenet_top is None
    # Larger static is averaged into a faint blur by the downscaling; the fallback refuses it.
    large = predictor.predict(Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)))
    assert large.answered_by == "refused"
