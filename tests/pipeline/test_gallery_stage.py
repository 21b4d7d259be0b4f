"""The gallery build stage: gallery.npz and gallery_config.json from the real CNN's features."""

import json
from dataclasses import replace

import numpy as np
import pytest

from classifier.dataset import DataConfig, prepare_dataset
from pipeline.context import BuildContext
from pipeline.gallery_stage import CONFIG_FILE, GalleryConfig, nearest_class_agreement, run
from bundle.files import GALLERY_FILE
from similarity import NearestTrainingImages


@pytest.fixture(scope="module")
def context_parts(cnn_bundle, shared_data):
    """40 real images per class (the smoke build's data) and the committed CNN's embeddings of them."""
    data_config = DataConfig(data_dir=str(shared_data), limit_per_class=40)
    dataset = prepare_dataset(data_config)
    embeddings = {split: cnn_bundle.embed(getattr(dataset, f"x_{split}")) for split in ("train", "val", "test")}
    return dataset, embeddings, data_config


def test_run_writes_a_balanced_gallery_of_real_training_images(tmp_path, cnn_bundle, context_parts):
    dataset, embeddings, data_config = context_parts
    # A copy of the committed bundle: the stage sets its gallery, and the session's bundle stays as loaded.
    context = BuildContext(replace(cnn_bundle), dataset, embeddings, tmp_path, data_config)
    metrics = run(context, GalleryConfig(per_class=20, pixel_test_per_class=10))

    gallery = NearestTrainingImages.load(tmp_path / GALLERY_FILE)
    assert gallery.class_names == tuple(cnn_bundle.class_names)
    assert np.bincount(gallery.labels_).tolist() == [20] * 13
    assert metrics["gallery_images"] == 260 and metrics["gallery_images_per_class"] == [20] * 13
    assert metrics["gallery_file_bytes"] == (tmp_path / GALLERY_FILE).stat().st_size
    # The bundle being built now holds the gallery as saved, for the stages after this one.
    assert np.array_equal(context.bundle.gallery.labels_, gallery.labels_)
    assert np.array_equal(context.bundle.gallery.features_, gallery.features_)
    assert cnn_bundle.gallery is not context.bundle.gallery
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
    assert metrics["nn_agreement_cosine_features"] == nearest_class_agreement(gallery, embeddings["test"].features, dataset.y_test)
    written = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert written["config"]["per_class"] == 20 and written["metrics"] == json.loads(json.dumps(metrics))


def test_a_pixel_gallery_is_fitted_on_the_pictures(tmp_path, cnn_bundle, context_parts):
    dataset, embeddings, data_config = context_parts
    context = BuildContext(replace(cnn_bundle), dataset, embeddings, tmp_path, data_config)
    metrics = run(context, GalleryConfig(per_class=5, metric="l1-pixels", pixel_test_per_class=5))
    gallery = NearestTrainingImages.load(tmp_path / GALLERY_FILE)
    assert gallery.metric == "l1-pixels" and metrics["gallery_images"] == 65
    # Its features are real training pictures' exact pixels (the thumbnails are their JPEG copies) ...
    pictures = gallery.features_.astype(np.uint8).reshape(65, *dataset.x_train.shape[1:])
    flat_train = dataset.x_train.reshape(len(dataset.x_train), -1)
    for picture, label in zip(pictures, gallery.labels_):
        rows = np.flatnonzero(np.all(flat_train == picture.reshape(-1), axis=1))
        assert len(rows) >= 1 and dataset.y_train[rows[0]] == label and not dataset.train_augmented[rows[0]]
    assert np.abs(gallery.thumbnails_.astype(int) - pictures).mean() < 3
    # ... so each picture finds itself, and its agreement is measured on the test pictures.
    own, distance = gallery.query(pictures[7], k=1)
    assert own[0] == 7 and distance[0] == 0.0
    assert metrics["nn_agreement_cosine_features"] == nearest_class_agreement(gallery, dataset.x_test, dataset.y_test)
