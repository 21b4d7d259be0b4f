"""The noise gate on real pictures: it refuses static and lets real pictures through."""

import json

import numpy as np
import pytest
from PIL import Image

from classifier.readers import load_image_folder
from bundle.images import Preprocessing
from classifier.ood_sets import far_ood_images, imagenet_photo_paths, near_ood_images
from ood.noise import NoiseGate, neighbour_correlation

PREPROCESSING = Preprocessing(jpeg_quality=75)  # as the shipped bundle sees pictures


@pytest.fixture(scope="module")
def cifar10(shared_data):
    train, _, _ = load_image_folder(shared_data / "cifar10-jpeg.tgz", "cifar10/train", PREPROCESSING, limit_per_class=200)
    test, _, _ = load_image_folder(shared_data / "cifar10-jpeg.tgz", "cifar10/test", PREPROCESSING, limit_per_class=100)
    return train, test


@pytest.fixture(scope="module")
def gate(cifar10):
    return NoiseGate(PREPROCESSING, noise_per_size=20).fit(cifar10[0])


def static(size, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_the_threshold_lies_between_the_training_pictures_and_noise(gate, cifar10):
    assert gate.noise_max_ < gate.threshold_ < gate.natural_min_
    assert gate.natural_min_ == pytest.approx(neighbour_correlation(cifar10[0]).min())
    assert gate.threshold_ == pytest.approx((gate.natural_min_ + gate.noise_max_) / 2)


@pytest.mark.parametrize("size", [16, 24, 32, 48, 64])
def test_noise_from_half_to_twice_the_input_is_refused(gate, size):
    # Fresh noise: other seeds than the fit's.
    assert all(gate.is_noise(static(size, seed=1000 + size * 100 + i)) for i in range(20))


def test_too_small_to_judge_is_left_to_the_cnn(gate):
    for size in (1, 4, 15):
        assert gate.view(static(size, seed=size)) is None and not gate.is_noise(static(size, seed=size))


def test_small_uploads_are_judged_as_they_came_large_ones_as_the_model_input(gate):
    small = static(20, seed=1)
    np.testing.assert_array_equal(gate.view(small), np.asarray(small))
    grey = small.convert("L")
    assert gate.view(grey).shape == (20, 20, 3), "in the model's channels"
    large = static(100, seed=2)
    assert gate.view(large).shape == (32, 32, 3)
    given = np.zeros((32, 32, 3), np.uint8)
    assert gate.view(large, given) is given


def test_real_pictures_pass(gate, cifar10, shared_data):
    # As the model sees them, and real thumbnails at half and full input size as they came.
    real = {
        "cifar10 test": cifar10[1],
        "tiny imagenet": near_ood_images(shared_data, PREPROCESSING, limit=500),
        "mnist": far_ood_images(shared_data / "mnist", PREPROCESSING, 500),
    }
    for name, x in real.items():
        refused = np.mean(gate.predict(x) == -1)
        assert refused <= 0.002, f"{name}: {refused:.1%} refused"
    photos = imagenet_photo_paths(shared_data, "all")[:100]
    for side in (16, 32, 200):
        thumbnails = [Image.open(path).convert("RGB").resize((side, side), Image.Resampling.LANCZOS) for path in photos]
        refused = sum(gate.is_noise(picture) for picture in thumbnails)
        assert refused <= 1, f"{refused} of 100 real {side}-pixel photos refused"


def test_correlation_of_simple_pictures():
    ramp = np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 8, (32, 1, 3))
    assert neighbour_correlation(ramp)[0] == pytest.approx(1.0, abs=0.01)
    flat = np.full((1, 32, 32, 3), 77, np.uint8)
    assert neighbour_correlation(flat)[0] == 1.0
    checkerboard = ((np.indices((32, 32)).sum(axis=0) % 2) * 255).astype(np.uint8)[None, :, :, None]
    assert neighbour_correlation(checkerboard)[0] == pytest.approx(-1.0)


def test_saved_and_loaded_it_decides_the_same(gate, tmp_path):
    path = gate.save(tmp_path / "noise_gate.json")
    assert json.loads(path.read_text()) == gate.to_dict()
    loaded = NoiseGate.load(path)
    for size in (16, 32, 64, 300):
        picture = static(size, seed=size)
        view = gate.view(picture)
        np.testing.assert_array_equal(loaded.score_samples(loaded.view(picture)), gate.score_samples(view))
    assert loaded.threshold_ == gate.threshold_ and loaded.preprocessing == gate.preprocessing
    assert {name: getattr(loaded, name) for name in ("natural_min_", "noise_max_")} == {
        name: getattr(gate, name) for name in ("natural_min_", "noise_max_")}


def test_a_noisy_training_set_gets_no_gate():
    pictures = np.stack([np.asarray(static(32, seed)) for seed in range(20)])
    with pytest.raises(ValueError, match="as unlike its neighbours as noise"):
        NoiseGate(PREPROCESSING, noise_per_size=5).fit(pictures)
