import numpy as np
import pytest
from PIL import Image

from monitoring import metrics


def test_flat_image_has_zero_entropy():
    for value in (0, 77, 255):
        assert metrics.intensity_entropy(np.full((32, 32, 3), value, np.uint8)) == 0.0


def test_two_equal_levels_have_one_bit_and_four_levels_two_bits():
    image = np.zeros((32, 32, 3), np.uint8)
    image[:16] = 255
    assert metrics.intensity_entropy(image) == pytest.approx(1.0)
    gray = np.repeat(np.array([0, 60, 120, 250], np.uint8), 256).reshape(32, 32, 1)
    assert metrics.intensity_entropy(gray) == pytest.approx(2.0)


def test_every_level_equally_often_gives_eight_bits():
    gray = np.repeat(np.arange(256, dtype=np.uint8), 4).reshape(32, 32, 1)
    assert metrics.intensity_entropy(gray) == pytest.approx(8.0)


def test_grayscale_is_pillows_luma(pictures):
    images = pictures
    expected = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in images])
    np.testing.assert_array_equal(metrics.grayscale(images), expected)


def test_batch_and_single_agree(pictures):
    images = pictures[:20]
    entropies = metrics.intensity_entropies(images)
    assert entropies == pytest.approx([metrics.intensity_entropy(image) for image in images])
    assert np.all((entropies > 3) & (entropies <= 10))  # real photos: varied, at most log2(1024)
    histograms = metrics.colour_histograms(images)
    np.testing.assert_allclose(histograms[3], metrics.colour_histogram(images[3]))


def test_colour_histogram_of_a_pure_red_image():
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 255
    histogram = metrics.colour_histogram(image)
    assert histogram.shape == (3, metrics.BINS)
    assert histogram[0, -1] == 1.0 and histogram[1, 0] == 1.0 and histogram[2, 0] == 1.0
    np.testing.assert_allclose(histogram.sum(axis=1), 1.0)


def test_hellinger_distance(pictures):
    histograms = metrics.colour_histograms(pictures[:10])
    assert metrics.hellinger_distance(histograms[0], histograms[0]) == pytest.approx(0.0, abs=1e-7)
    black = metrics.colour_histogram(np.zeros((4, 4, 3), np.uint8))
    white = metrics.colour_histogram(np.full((4, 4, 3), 255, np.uint8))
    assert metrics.hellinger_distance(black, white) == pytest.approx(1.0)  # disjoint: the maximum
    forward = metrics.hellinger_distances(histograms[:5], histograms[5:])
    np.testing.assert_allclose(forward, metrics.hellinger_distances(histograms[5:], histograms[:5]))
    assert np.all((forward > 0) & (forward < 1))


def test_confidence_is_the_top_probability():
    assert metrics.confidence([0.1, 0.7, 0.2]) == pytest.approx(0.7)
    np.testing.assert_allclose(metrics.confidences([[0.5, 0.5], [0.9, 0.1]]), [0.5, 0.9])


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="uint8"):
        metrics.intensity_entropy(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        metrics.colour_histogram(np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        metrics.confidence([np.nan, 0.5])
