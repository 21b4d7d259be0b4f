"""The pipeline stage: gallery.npz and gallery_config.json from real embeddings."""

import json

import numpy as np

from classifier.bundle import GALLERY_FILE
from similarity import NearestTrainingImages
from similarity.build import CONFIG_FILE, GalleryConfig, build


def test_build_writes_a_balanced_gallery_of_real_training_images(tmp_path, cnn_bundle, embedded):
    dataset = embedded.dataset
    embeddings = {"train": embedded.train, "val": embedded.val, "test": embedded.test}
    config = GalleryConfig(per_class=20, pixel_test_per_class=10)
    metrics = build(cnn_bundle, dataset, embeddings, tmp_path, config)

    gallery = NearestTrainingImages.load(tmp_path / GALLERY_FILE)
    assert gallery.class_names == tuple(cnn_bundle.class_names)
    assert np.bincount(gallery.labels_).tolist() == [20] * 13
    assert metrics["gallery_images"] == 260 and metrics["gallery_images_per_class"] == [20] * 13
    # Every gallery picture is a real training image of its class, never a rotated copy.
    real = ~dataset.train_augmented
    flat_train = dataset.x_train.reshape(len(dataset.x_train), -1)
    for thumbnail, label in zip(gallery.thumbnails_[::13], gallery.labels_[::13]):
        errors = np.abs(flat_train.astype(int) - thumbnail.reshape(-1)).mean(axis=1)
        match = int(np.argmin(errors))
        assert errors[match] < 8 and real[match] and dataset.y_train[match] == label

    for name in ("nn_agreement_cosine_features", "nn_agreement_l1_pixels_on_subset", "nn_agreement_cosine_features_on_subset"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["test_images"] == len(dataset.y_test) and metrics["subset_test_images"] == 130
    assert metrics["nn_agreement_cosine_features"] > metrics["nn_agreement_l1_pixels_on_subset"]
    written = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert written["config"]["per_class"] == 20 and written["metrics"] == json.loads(json.dumps(metrics))
