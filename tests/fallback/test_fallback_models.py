"""The ImageNet classifiers behind the fallback (fallback.models), on real photos."""

import time

import numpy as np
import pytest

from bundle.images import ImageError, open_image
from bundle.files import reachable
from classifier.wordnet import read_wordnet
from fallback.models import (
    IMAGENET_LABELS, FallbackUnavailable, KerasResNet50, TFLiteImageNetClassifier, central_crop,
    check_label_order, read_imagenet_labels,
)

PHOTOS = ["n02088364_beagle", "n02123159_tiger_cat", "n02690373_airliner", "n01440764_tench", "n07753592_banana"]


def test_mobilenet_v2_recognises_real_photos(mobilenet_v2, photo, data_path):
    wnids = read_wordnet(data_path("wordnet")).imagenet_wnids
    probabilities = mobilenet_v2.predict([photo(name) for name in PHOTOS])
    assert probabilities.shape == (len(PHOTOS), 1000)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    expected = [wnids.index(name.split("_")[0]) for name in PHOTOS]
    assert list(probabilities.argmax(axis=1)) == expected


def test_tiny_model_runs_with_its_own_input_size(tiny_model, photo):
    assert tiny_model.input_size == 128
    probabilities = tiny_model.predict([photo("n01440764_tench"), photo("n02088364_beagle")])
    assert probabilities.shape == (2, 1000) and (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert tiny_model.predict([]).shape == (0, 1000)


def test_central_crop_handles_grey_and_odd_shapes(example_photos):
    grey = open_image(example_photos["pug"]).convert("L")
    assert central_crop(grey, 224).shape == (224, 224, 3)
    wide = np.zeros((20, 300, 4), np.uint8)  # RGBA, very wide
    assert central_crop(wide, 128).shape == (128, 128, 3)


def test_unreadable_input_gets_a_clear_error(shipped_fallback):
    with pytest.raises(ImageError):
        shipped_fallback.classifier.predict([b"this is not a picture"])


def test_labels_are_in_imagenet_order(models_dir, data_path):
    labels = read_imagenet_labels(models_dir / IMAGENET_LABELS)
    class_info = data_path("wordnet", "dataset_class_info.json")
    assert len(labels) == 1000 and labels[1].startswith("goldfish")
    check_label_order(labels, class_info)
    swapped = (labels[1], labels[0]) + labels[2:]
    with pytest.raises(FallbackUnavailable, match="order"):
        check_label_order(swapped, class_info)


def test_missing_or_broken_model_file(tmp_path):
    with pytest.raises(FallbackUnavailable, match="No TFLite model"):
        TFLiteImageNetClassifier(tmp_path / "absent.tflite")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer" * 100)
    with pytest.raises(FallbackUnavailable, match="not a usable TFLite model"):
        TFLiteImageNetClassifier(broken).predict([np.zeros((8, 8, 3), np.uint8)])


def test_resnet50_offline_fails_fast_with_a_clear_message():
    if reachable(KerasResNet50.WEIGHTS_HOST, 443, 3.0):
        pytest.skip("this machine is online: ResNet50's weights could really be downloaded")
    start = time.perf_counter()
    with pytest.raises(FallbackUnavailable, match="offline") as raised:
        KerasResNet50()
    assert time.perf_counter() - start < 10
    assert "MobileNetV2" in str(raised.value)
