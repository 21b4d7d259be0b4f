"""The fallback (fallback.Fallback, load_fallback): ImageNet probabilities folded into our classes."""

import numpy as np
import pytest

from bundle.images import open_image
from bundle.labels import CLASS_NAMES
from fallback import FallbackUnavailable, load_fallback


def test_the_fallback_folds_imagenet_into_our_classes(fallback_v2, photo):
    beagle = fallback_v2.analyse(photo("n02088364_beagle"), k=3)
    assert CLASS_NAMES[int(beagle.class_masses.argmax())] == "dog" and beagle.class_masses.max() > 0.9
    assert beagle.top[0]["imagenet_class"] == "beagle" and beagle.top[0]["our_class"] == "dog"
    tench = fallback_v2.class_masses([photo("n01440764_tench")])[0]
    assert tench.max() < 0.1  # a fish: none of ours


def test_the_shipped_fallback_answers_the_shipped_photos(shipped_fallback, example_photos):
    pug = shipped_fallback.analyse(open_image(example_photos["pug"]), k=3)
    assert CLASS_NAMES[int(pug.class_masses.argmax())] == "dog" and pug.class_masses.max() > 0.9
    assert pug.top[0]["imagenet_class"] == "pug" and pug.top[0]["our_class"] == "dog" and len(pug.top) == 3
    clock = shipped_fallback.class_masses([open_image(example_photos["wall_clock"])])[0]
    assert clock.shape == (len(CLASS_NAMES),) and clock.max() < 0.1  # a clock: none of ours


def test_a_consultation_runs_the_model_only_when_called(shipped_fallback, example_photos):
    picture = open_image(example_photos["Siamese_cat"])
    consultation = shipped_fallback.consult(picture, k=2)
    assert consultation.result is None
    masses = consultation()
    assert consultation.result is not None and len(consultation.result.top) == 2
    np.testing.assert_array_equal(masses, consultation.result.class_masses)
    np.testing.assert_allclose(masses, shipped_fallback.class_masses([picture])[0], rtol=1e-6)
    assert (masses >= 0).all() and masses.sum() <= 1 + 1e-5


def test_a_started_consultation_runs_on_its_runner_and_gives_the_same_answer(shipped_fallback, example_photos):
    from concurrent.futures import ThreadPoolExecutor

    pictures = [open_image(path) for path in example_photos.values()]
    direct = [shipped_fallback.consult(picture)() for picture in pictures]
    with ThreadPoolExecutor(max_workers=1) as runner:
        started = [shipped_fallback.consult(picture, runner=runner).start() for picture in pictures]
        assert all(consultation.result is None for consultation in started)  # running, not yet asked for
        for consultation, masses in zip(started, direct):
            np.testing.assert_array_equal(consultation(), masses)
            assert consultation.result is not None
        # A run the rule never asks for leaves no result; cancelling it is harmless either way.
        unasked = shipped_fallback.consult(pictures[0], runner=runner).start()
        unasked.cancel()
        assert unasked.result is None


def test_load_fallback_explains_a_missing_folder(tmp_path):
    with pytest.raises(FallbackUnavailable, match="not a fallback folder"):
        load_fallback(tmp_path)
