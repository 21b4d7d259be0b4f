"""Real features for the OOD tests: the committed bundle's model, else the newest training
checkpoint, over a few thousand real images of the data folder (cached under .cache/ood/ by
bench.dev). Without the data folder these tests are skipped; tests/ood/test_estimator_contract.py
runs on what the repository ships."""

import pytest

from bench.dev import dev_embeddings

PER_CLASS = 200  # train, val and test images per class: 2,600 each


@pytest.fixture(scope="session")
def real_features(model_path, shared_data, data_path):
    """{"train", "val", "test", "mnist", "near_ood"}: features, ood_features, logits, labels (-1 for
    the OOD sets: MNIST digits, Tiny ImageNet pictures of other classes)."""
    from classifier.ood_sets import far_ood_images, near_ood_images

    mnist = data_path("mnist")
    return dev_embeddings(PER_CLASS, model_path, data_dir=shared_data,
                          extra_sets={"mnist": lambda: far_ood_images(mnist, limit=1000),
                                      "near_ood": lambda: near_ood_images(shared_data, limit=1500)})
