"""Error analysis (pipeline.errors_stage) on real test images: the shipped bundle, a grayscale
bundle, a 64x64 bundle regenerated from its config.json, and models with almost no errors."""

import json
from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

from classifier.dataset import DataConfig, Dataset
from bundle.embedding import Embedding
from bundle.images import Preprocessing
from bundle.labels import CIFAR10_CLASSES
from classifier.models import build_model
from classifier.readers import load_image_folder, load_mnist
from pipeline.context import BuildContext
from pipeline.errors_stage import ErrorAnalysisConfig, analyse, regenerate, run
from service.bundle import Bundle
from pipeline.bundle_files import export_model, write_manifest

FIGURES = ("errors_kmeans.png", "errors_dbscan.png", "activations.png", "filters.png")
# Per preset: the first convolution, then the first after each of its three poolings; and the
# convolution whose kernels are drawn (airbench's frozen whitening, fastnet's stem).
DRAWN_LAYERS = {
    "fastnet": (["stem", "block1_conv2", "block2_conv2", "block3_conv2"], "stem"),
    "airbench94": (["whiten", "block1_conv2", "block2_conv2", "block3_conv2"], "whiten"),
}


def dataset_of(x, y, class_names):
    """A Dataset holding only a test split: error analysis reads nothing else."""
    empty = np.zeros((0,) + x.shape[1:], np.uint8)
    none = np.zeros(0, np.int64)
    return Dataset(empty, none, empty, none, x, np.asarray(y), tuple(class_names))


def figure_sizes(out_dir):
    """(width, height) of each figure, after checking that it is a whole, valid PNG."""
    sizes = {}
    for name in FIGURES:
        path = out_dir / "figures" / name
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            sizes[name] = image.size
        assert path.stat().st_size < 600_000, f"{name} is too large for the Model tab"
    return sizes


def check_partition(metrics, misclassified):
    assert metrics["misclassified"] == misclassified
    kmeans, dbscan = metrics["kmeans"], metrics["dbscan"]
    assert sum(kmeans["sizes"]) == misclassified and kmeans["noise"] == 0
    assert sum(dbscan["sizes"]) + dbscan["noise"] == misclassified
    for method in (kmeans, dbscan):
        assert method["clusters"] == len(method["sizes"]) == len(method["top_pairs"])
        assert method["sizes"] == sorted(method["sizes"], reverse=True)
        for size, pairs in zip(method["sizes"], method["top_pairs"]):
            assert all(pair["true"] != pair["predicted"] for pair in pairs)
            assert sum(pair["count"] for pair in pairs) <= size
    json.dumps(metrics)  # goes into metrics.json as it is


@pytest.fixture(scope="module")
def cifar_test(shared_data, cnn_bundle):
    x, y, _ = load_image_folder(shared_data / "cifar10-jpeg.tgz", "cifar10/test", cnn_bundle.preprocessing,
                                classes=CIFAR10_CLASSES, limit_per_class=30)
    return x, y, cnn_bundle.embed(x)


def test_shipped_bundle_errors_are_clustered_and_drawn(cnn_bundle, cifar_test, tmp_path):
    x, y, embedding = cifar_test
    predicted = embedding.probabilities.argmax(axis=1)
    # As the build calls the stage: one context for every stage, figures into its out_dir.
    context = BuildContext(cnn_bundle, dataset_of(x, y, cnn_bundle.class_names), {"test": embedding}, tmp_path, DataConfig())
    metrics = run(context)

    misclassified = int(np.sum(predicted != y))
    assert 10 < misclassified < 150, "the shipped CNN gets most of CIFAR-10 right, not all"
    check_partition(metrics, misclassified)
    assert metrics["kmeans"]["clusters"] == ErrorAnalysisConfig().kmeans_clusters
    assert -1 <= metrics["kmeans"]["silhouette"] <= 1 and metrics["dbscan"]["eps"] > 0
    # Every listed confusion happened: its count is at most how often the pair occurs overall.
    names = cnn_bundle.class_names
    for pairs in metrics["kmeans"]["top_pairs"]:
        for pair in pairs:
            true, guess = names.index(pair["true"]), names.index(pair["predicted"])
            assert pair["true"] in CIFAR10_CLASSES
            assert pair["count"] <= np.sum((y == true) & (predicted == guess))
    preset = json.loads((cnn_bundle.directory / "config.json").read_text())["train"]["preset"]
    assert preset in DRAWN_LAYERS, f"the shipped preset {preset} has no expected layers here"
    layers, filters_layer = DRAWN_LAYERS[preset]
    assert metrics["activation_layers"] == layers
    assert metrics["filters_layer"] == filters_layer

    sizes = figure_sizes(tmp_path)
    # One row of images per K-Means cluster: far taller than a one-line "nothing here" figure.
    assert sizes["errors_kmeans.png"][1] > 6 * 80 and sizes["activations.png"][1] > 5 * 60


@pytest.mark.parametrize("errors", [0, 1, 3])
def test_a_model_with_almost_no_errors_still_gets_figures(cnn_bundle, keras_model, cifar_test, tmp_path, errors):
    x, y, embedding = cifar_test
    predicted = embedding.probabilities.argmax(axis=1)
    # The model's right answers plus `errors` of its mistakes: real images, real labels.
    keep = np.concatenate([np.flatnonzero(predicted == y), np.flatnonzero(predicted != y)[:errors]])
    subset = Embedding(embedding.features[keep], embedding.logits[keep], embedding.probabilities[keep])
    metrics = analyse(keras_model, dataset_of(x[keep], y[keep], cnn_bundle.class_names), subset, tmp_path)

    check_partition(metrics, errors)
    assert metrics["kmeans"]["clusters"] == min(errors, ErrorAnalysisConfig().kmeans_clusters)
    figure_sizes(tmp_path)


def test_grayscale_bundle(tmp_path, shared_data):
    digits = tuple(str(digit) for digit in range(10))
    preprocessing = Preprocessing(height=28, width=28, channels=1)
    model = export_model(build_model("fastnet_small", (28, 28, 1), len(digits)), tmp_path)
    write_manifest(tmp_path, digits, preprocessing)
    bundle = Bundle.load(tmp_path, with_fallback=False)
    x, y = load_mnist(shared_data / "mnist")
    x, y = x[:200], y[:200]
    assert x.shape[-1] == 1

    metrics = analyse(model, dataset_of(x, y, digits), bundle.embed(x), tmp_path)

    predicted = bundle.embed(x).probabilities.argmax(axis=1)
    check_partition(metrics, int(np.sum(predicted != y)))
    assert metrics["filters_layer"] == "stem"
    figure_sizes(tmp_path)


def test_regenerate_a_64_pixel_bundle_from_its_config(tmp_path, shared_data):
    """The command's path: config.json -> test split -> figures -> metrics.json["errors"]."""
    data = DataConfig(data_dir=str(shared_data), limit_per_class=4, preprocessing=Preprocessing(height=64, width=64), cache_dir=str(tmp_path / "cache"))
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    class_names = CIFAR10_CLASSES + tuple(data.extra_classes)
    export_model(build_model("pets_small", (64, 64, 3), len(class_names)), bundle_dir)
    write_manifest(bundle_dir, class_names, data.preprocessing)
    (bundle_dir / "config.json").write_text(json.dumps({"train": {"data": asdict(data)}}))
    (bundle_dir / "metrics.json").write_text(json.dumps({"classifier": {"test_images": 52}}))

    metrics = regenerate(bundle_dir)

    stored = json.loads((bundle_dir / "metrics.json").read_text())
    assert stored["classifier"] == {"test_images": 52}, "the other metrics are kept"
    assert stored["errors"] == json.loads(json.dumps(metrics))
    assert metrics["test_images"] == 13 * 4
    check_partition(metrics, metrics["misclassified"])
    # pets_small's three convolutions, with Keras' default names, each at its own resolution.
    assert len(metrics["activation_layers"]) == 3
    figure_sizes(bundle_dir)

