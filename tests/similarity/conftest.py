"""Fixtures for the similarity tests: real CIFAR/Tiny ImageNet images, the real CNN's features."""

from dataclasses import dataclass

import pytest


@dataclass
class Embedded:
    dataset: object
    train: object  # bundle.embedding.Embedding of dataset.x_train
    val: object
    test: object


@pytest.fixture(scope="session")
def embedded(cnn_bundle, shared_data):
    """40 images per class (the smoke build's data, cached in .cache/data), embedded by the CNN."""
    from classifier.dataset import DataConfig, prepare_dataset

    dataset = prepare_dataset(DataConfig(data_dir=str(shared_data), limit_per_class=40))
    return Embedded(
        dataset, cnn_bundle.embed(dataset.x_train), cnn_bundle.embed(dataset.x_val), cnn_bundle.embed(dataset.x_test)
    )
