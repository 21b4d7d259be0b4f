"""airbench94's recipe (classifier.airbench), part by part, on real pictures: each check takes
seconds; the one short fit needs the development data."""

import keras
import numpy as np
import pytest
from keras import ops

from classifier.airbench import AirbenchConfig, AirbenchSGD, AlternatingFlipLoader, TriangleSchedule, dirac, fit, make_net
from classifier.airbench import test_time_views as views_of  # renamed: pytest would collect a test_* name
from classifier.airbench import whitening_kernel
from classifier.dataset import Dataset
from bundle.images import to_float, to_uint8
from bundle.labels import CIFAR10_CLASSES
from classifier.readers import load_image_folder

# Small widths: the parts under test do not depend on them, and the net builds in a moment.
SMALL_WIDTHS = (8, 8, 8)


@pytest.fixture(scope="module")
def pictures(example_photos):
    """The repository's real example photos at the CNN's 32x32, uint8."""
    return np.stack([to_uint8(path) for path in example_photos.values()])


def second_moments(outputs):
    rows = np.asarray(outputs, np.float64).reshape(-1, outputs.shape[-1])
    return rows.T @ rows / len(rows)


def test_the_whitening_convolution_whitens_real_patches(pictures):
    config = AirbenchConfig()
    _, _, model = make_net(pictures.shape[1:], 10, SMALL_WIDTHS, config)
    whiten = model.get_layer("whiten")
    # Through the net's own layers (normalisation, then the convolution), as training sees it.
    before = second_moments(keras.Model(model.inputs[0], model.get_layer("normalize").output)(to_float(pictures)))
    whiten.kernel.assign(whitening_kernel(pictures, config))
    moments = second_moments(keras.Model(model.inputs[0], whiten.output)(to_float(pictures)))

    half = 2 * 2 * 3  # the eigenvectors, then their negation
    assert moments.shape == (2 * half, 2 * half)
    whitened = moments[:half, :half]
    assert np.abs(whitened - np.diag(np.diag(whitened))).max() < 1e-3, "decorrelated"
    # ~1 each; the smallest directions a little less, held back by whiten_eps.
    np.testing.assert_allclose(np.diag(whitened), 1.0, atol=0.3)
    np.testing.assert_allclose(moments[half:, half:], whitened, atol=1e-4)
    np.testing.assert_allclose(moments[:half, half:], -whitened, atol=1e-4)
    # Neighbouring pixels of a real photo are strongly correlated before: far from identity.
    assert before[0, 1] > 0.5


def test_dirac_makes_a_convolution_pass_its_first_channels_through(pictures):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
    identity = dirac(kernel)
    np.testing.assert_array_equal(identity[..., 3:], kernel[..., 3:])  # the other filters keep their values
    conv = keras.layers.Conv2D(5, 3, padding="same", use_bias=False)
    conv.build((None, 32, 32, 3))
    conv.kernel.assign(identity)
    x = to_float(pictures)
    out = np.asarray(conv(x))
    np.testing.assert_allclose(out[..., :3], x, atol=1e-6)
    assert np.abs(out[..., 3:]).max() > 0.1, "the others still convolve"
    # Fewer outputs than inputs: every output is one input channel.
    narrow = dirac(rng.normal(size=(3, 3, 3, 2)).astype(np.float32))
    np.testing.assert_array_equal(narrow[1, 1, :2, :], np.eye(2))
    assert np.count_nonzero(narrow) == 2


def test_test_time_views_of_level_two(pictures):
    x = to_float(pictures)
    views, weights = views_of(ops.convert_to_tensor(x), 2)
    views = [np.asarray(ops.convert_to_numpy(view)) for view in views]
    assert len(views) == 6 and len(weights) == 6
    assert sum(weights) == pytest.approx(1.0)
    assert weights[0] == weights[1] == 2 * weights[2], "unshifted views count twice"
    np.testing.assert_array_equal(views[0], x)
    np.testing.assert_array_equal(views[1], x[:, :, ::-1, :])
    # The two shifts are one pixel each way (edges reflected), each with its mirror image.
    np.testing.assert_array_equal(views[2][:, 1:, 1:], x[:, :-1, :-1])
    np.testing.assert_array_equal(views[4][:, :-1, :-1], x[:, 1:, 1:])
    np.testing.assert_array_equal(views[3], views[2][:, :, ::-1, :])
    np.testing.assert_array_equal(views[5], views[4][:, :, ::-1, :])
    assert all(view.shape == x.shape for view in views)
    assert len(views_of(x, 0)[0]) == 1 and views_of(x, 1)[1] == [0.5, 0.5]


def test_triangle_schedule_start_peak_and_end():
    config = AirbenchConfig()
    schedule = TriangleSchedule(peak=2.0, total_steps=100, config=config)

    def rate(step):
        return float(ops.convert_to_numpy(schedule(step)))

    assert schedule.warmup == 23
    assert rate(0) == pytest.approx(2.0 * config.schedule_start)
    assert rate(23) == pytest.approx(2.0)
    assert rate(100) == pytest.approx(2.0 * config.schedule_end)
    rates = [rate(step) for step in range(101)]
    assert max(rates) == pytest.approx(2.0)
    assert all(a < b for a, b in zip(rates[:23], rates[1:24])), "up to the peak"
    assert all(a > b for a, b in zip(rates[23:], rates[24:])), "then down"


def test_frozen_after_stops_a_variable_moving():
    frozen = keras.Variable(np.ones(4, np.float32), name="frozen")
    free = keras.Variable(np.ones(4, np.float32), name="free")
    optimizer = AirbenchSGD(TriangleSchedule(0.1, 10, AirbenchConfig()), momentum=0.85, decay_per_step=0.0,
                            multipliers={}, frozen_after={frozen.path: 2})
    gradient = ops.convert_to_tensor(np.full(4, 0.5, np.float32))
    history = []
    for _ in range(5):
        optimizer.apply_gradients([(gradient, frozen), (gradient, free)])
        history.append((np.asarray(frozen.numpy()).copy(), np.asarray(free.numpy()).copy()))
    assert (history[1][0] < history[0][0]).all(), "it moves for its first two steps"
    for before, after in zip(history[1:], history[2:]):
        np.testing.assert_array_equal(after[0], before[0])  # then not at all
        assert (after[1] < before[1]).all(), "while the other variable keeps moving"


def test_alternating_flips_show_every_picture_the_other_way_on_the_next_epoch(pictures):
    labels = np.arange(len(pictures)) % 3
    loader = AlternatingFlipLoader(pictures, labels, 3, batch_size=len(pictures), flip=True, translate=0, seed=0)
    assert len(loader) == 1
    seen = []
    for _ in range(3):
        x, targets = loader[0]
        order = loader.order.copy()
        np.testing.assert_array_equal(targets.argmax(axis=1), labels[order])
        by_picture = np.empty_like(x)
        by_picture[order] = x
        seen.append(by_picture)
        loader.on_epoch_end()
    original, mirrored = to_float(pictures), to_float(pictures[:, :, ::-1, :])
    first = np.array([np.array_equal(seen[0][i], mirrored[i]) for i in range(len(pictures))])
    assert first.any() and not first.all(), "the first epoch flips about half of them, at random"
    for i in range(len(pictures)):
        np.testing.assert_array_equal(seen[0][i], mirrored[i] if first[i] else original[i])
        np.testing.assert_array_equal(seen[1][i], original[i] if first[i] else mirrored[i])
        np.testing.assert_array_equal(seen[2][i], seen[0][i])


@pytest.fixture(scope="module")
def tiny_cifar(shared_data):
    """250 real CIFAR-10 pictures: 20 per class to train on, 5 per class to validate."""
    x, y, _ = load_image_folder(shared_data / "cifar10-jpeg.tgz", "cifar10/test", classes=CIFAR10_CLASSES, limit_per_class=25)
    val = np.concatenate([np.flatnonzero(y == label)[:5] for label in range(10)])
    train = np.setdiff1d(np.arange(len(y)), val)
    empty = np.zeros((0, 32, 32, 3), np.uint8)
    return Dataset(x[train], y[train], x[val], y[val], empty, np.zeros(0, np.int64), CIFAR10_CLASSES)


def test_two_steps_of_fit_give_a_serving_model_with_the_layers_the_product_reads(tiny_cifar, tmp_path):
    policy = keras.config.dtype_policy().name
    config = AirbenchConfig(batch_size=100, whiten_images=200)
    model, history = fit(config, tiny_cifar, epochs=1, out_dir=tmp_path, verbose=0)

    assert len(tiny_cifar.y_train) // config.batch_size == 2, "two steps"
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"]).all()
    assert (tmp_path / "history.csv").exists()
    assert keras.config.dtype_policy().name == policy, "the training precision does not leak out"
    for name in ("features", "logits", "probabilities"):
        model.get_layer(name)
    probabilities = np.asarray(model.predict(to_float(tiny_cifar.x_val), verbose=0), np.float64)
    assert probabilities.shape == (50, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)  # bfloat16 inside
