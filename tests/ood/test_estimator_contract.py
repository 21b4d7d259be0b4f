"""The scikit-learn contract of the detectors and the noise gate, on what the repository ships:
the committed bundle's CNN, detector and gate, and features of its example photos (real photos,
cropped and flipped at random). Needs no data folder.

Every estimator clones (sklearn.base.clone) and prints; check_is_fitted tells fitted from
unfitted; an unfitted one raises NotFittedError; a loaded one holds every fitted attribute
(ending in "_") that a fresh fit makes; random_state may be None, an int or a RandomState."""

import numpy as np
import pytest
from PIL import Image
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from bundle.images import Preprocessing, open_image, to_uint8
from ood import ClassIsolationForests, CombinedScore, GlobalIsolationForest, NoiseGate, load_detector
from ood.baselines import FeatureNorm, logit_weights
from pipeline.ood_evaluation import METHODS, make_detector
from ood.forests import PackedForest, class_seeds
from pipeline.ood_stage import OODConfig
from tests.conftest import REPO

CROPS = 24  # per example photo


def fitted_attributes(estimator):
    return {name for name in vars(estimator) if name.endswith("_") and not name.startswith("_")}


@pytest.fixture(scope="module")
def photos(example_photos):
    return [open_image(path) for path in example_photos.values()]


@pytest.fixture(scope="module")
def photo_embedding(cnn_bundle, photos):
    """(Embedding, labels): the CNN's outputs for random crops of each photo, labelled by photo."""
    rng = np.random.default_rng(0)
    crops = []
    for image in photos:
        width, height = image.size
        for _ in range(CROPS):
            side = int(min(width, height) * rng.uniform(0.5, 1.0))
            left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            crop = image.crop((left, top, left + side, top + side))
            crops.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return cnn_bundle.embed(cnn_bundle.preprocess(crops)), np.repeat(np.arange(len(photos)), CROPS)


@pytest.fixture(scope="module")
def photo_features(photo_embedding):
    """(features, labels) of the crops."""
    embedding, labels = photo_embedding
    return embedding.features, labels


@pytest.fixture(scope="module")
def shipped_detector():
    return load_detector(REPO / "assets" / "ood_detector.joblib")


def forests(random_state=0, n_classes=None):
    return ClassIsolationForests(n_estimators=20, max_samples=64, n_components=8, n_classes=n_classes, random_state=random_state)


def test_every_detector_clones_and_prints_and_starts_unfitted(cnn_bundle, keras_model):
    weights, bias = logit_weights(keras_model)
    for method in METHODS:
        detector = make_detector(method, OODConfig(), weights, bias, len(cnn_bundle.class_names))
        copy = clone(detector)
        assert type(copy) is type(detector) and copy is not detector
        assert repr(copy) == repr(detector) and type(detector).__name__ in repr(detector)
        with pytest.raises(NotFittedError):
            check_is_fitted(detector)


def test_fitted_state_is_in_underscore_attributes_and_a_clone_has_none(photo_features):
    detector = forests().fit(*photo_features)
    check_is_fitted(detector)
    assert {"forests_", "mean_", "components_", "thresholds_", "classes_", "n_classes_", "n_features_in_", "tpr_"} <= fitted_attributes(detector)
    assert len(detector.forests_) == detector.n_classes_ == len(photo_features[0]) // CROPS
    assert all(isinstance(forest, PackedForest) for forest in detector.forests_)
    copy = clone(detector)
    assert fitted_attributes(copy) == set() and copy.get_params() == detector.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)


@pytest.mark.parametrize("kind", [ClassIsolationForests, GlobalIsolationForest])
def test_random_state_may_be_none_an_int_or_a_random_state(kind, photo_features):
    features, labels = photo_features

    def scores(random_state):
        detector = kind(n_estimators=20, max_samples=64, n_components=8, random_state=random_state).fit(features, labels)
        return detector.score_samples(features, labels)

    np.testing.assert_array_equal(scores(3), scores(3))
    assert not np.array_equal(scores(3), scores(4))
    np.testing.assert_array_equal(scores(np.random.RandomState(7)), scores(np.random.RandomState(7)))
    assert not np.array_equal(scores(np.random.RandomState(7)), scores(np.random.RandomState(8)))
    assert np.isfinite(scores(None)).all()
    # An int seeds class c's forest with int + c, as the shipped detectors were fitted.
    assert class_seeds(5, 3) == [5, 6, 7] and class_seeds(np.int64(5), 2) == [5, 6]


def test_unfitted_detectors_raise_not_fitted(photo_features):
    features, labels = photo_features
    for detector in (forests(), FeatureNorm(), CombinedScore([("norm", FeatureNorm())])):
        for call in (detector.score_samples, detector.decision_function, detector.predict, detector.calibrate):
            with pytest.raises(NotFittedError):
                call(features, labels)


def test_a_loaded_detector_holds_the_state_of_a_fitted_one(photo_features, tmp_path):
    features, labels = photo_features
    detector = CombinedScore([("forests", forests()), ("norm", FeatureNorm())]).fit(features, labels)
    loaded = load_detector(detector.save(tmp_path / "detector.joblib"))
    check_is_fitted(loaded)
    assert fitted_attributes(loaded) == fitted_attributes(detector)
    for (_, part), (_, original) in zip(loaded.estimators_, detector.estimators_):
        check_is_fitted(part)
        assert fitted_attributes(part) == fitted_attributes(original)
    assert len(loaded.estimators_[0][1].forests_) == len(detector.estimators_[0][1].forests_)
    np.testing.assert_array_equal(loaded.decision_function(features, labels), detector.decision_function(features, labels))


def test_the_shipped_detector_loads_with_every_fitted_attribute(shipped_detector, photo_embedding):
    embedding, labels = photo_embedding
    features = getattr(embedding, shipped_detector.reads)
    check_is_fitted(shipped_detector)
    # Loaded, it has exactly the fitted attributes a fresh fit makes (for a combination: each
    # part; the forests' packed trees under the name forests_, whenever they were saved).
    parts = dict(shipped_detector.estimators_) if isinstance(shipped_detector, CombinedScore) else {"": shipped_detector}
    for part in parts.values():
        check_is_fitted(part)
        fresh = clone(part)
        if "n_estimators" in fresh.get_params():
            fresh.set_params(n_estimators=5)
        fresh.fit(features, labels)
        assert fitted_attributes(part) == fitted_attributes(fresh)
    if "forests" in parts:
        assert len(parts["forests"].forests_) == parts["forests"].n_classes_
    # Its decisions are those of the detector, on real features.
    classes = np.arange(len(features)) % shipped_detector.n_classes_
    assert np.isfinite(shipped_detector.decision_function(features, classes)).all()
    copy = clone(shipped_detector)
    assert repr(copy) == repr(shipped_detector) and fitted_attributes(copy) == set()
