"""Fixtures for the similarity tests: real CIFAR/Tiny ImageNet images, the real CNN's features."""

from dataclasses import dataclass

import pytest


@dataclass
class Embedded:
    dataset: object
    train: object  # classifier.bundle.Embedding of dataset.x_train
    val: object
    test: object


@pytest.fixture(scope="session")
def embedded(cnn_bundle):
    """40 images per class (the smoke build's data, cached in .cache/data), embedded by the CNN."""
    from classifier.data import DataConfig, prepare_dataset

    dataset = prepare_dataset(DataConfig(limit_per_class=40))
    return Embedded(
        dataset, cnn_bundle.embed(dataset.x_train), cnn_bundle.embed(dataset.x_val), cnn_bundle.embed(dataset.x_test)
    )


@pytest.fixture(scope="session")
def real_photos():
    """Real full-size photos (ImageNet samples) as the bytes a user would upload."""
    from classifier.data import SHARED_DATA

    folder = SHARED_DATA / "imagenet-samples"
    if not folder.exists():
        pytest.fail(f"{folder} is missing: the tests read real photos from it.")
    return {path.stem: path.read_bytes() for path in sorted(folder.glob("*.JPEG"))}

