"""Real features for the OOD tests: the committed bundle's model, else the newest training
checkpoint, over a few thousand real images (cached under .cache/ood/ by ood.dev)."""

import pytest

from ood.dev import dev_embeddings, find_model

PER_CLASS = 200  # train, val and test images per class: 2,600 each


@pytest.fixture(scope="session")
def model_path():
    path = find_model()
    if path is None:
        pytest.skip("No model: neither assets/model.keras nor runs/*/checkpoint.keras exists.")
    return path


@pytest.fixture(scope="session")
def real_features(model_path):
    """{"train", "val", "test", "mnist"}: features, logits, labels (-1 for MNIST)."""
    from ood.datasets import far_ood_images

    return dev_embeddings(PER_CLASS, model_path, extra_sets={"mnist": lambda: far_ood_images(limit=1000)})
