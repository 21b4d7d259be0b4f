import json

import pytest

from classifier.labels import CLASS_NAMES
from fallback import CONFIG_FILE, FallbackUnavailable, load_fallback
from fallback.build import FallbackConfig, build
from fallback.label_map import build_label_map
from fallback.policy import FallbackPolicy

from fallback.models import MOBILENET_V1_TINY

TINY = str(MOBILENET_V1_TINY)


def test_build_writes_a_folder_that_loads_and_runs(tmp_path, photo):
    metrics = build(None, tmp_path, FallbackConfig(model_path=TINY, tune=False, policy=FallbackPolicy(0.7, 0.4)))
    folder = tmp_path / "fallback"
    for name in ("mobilenet_v1_0.25_128_quant.tflite", "imagenet_labels.txt", "label_map.txt", "label_map.json", "NOTICE", CONFIG_FILE):
        assert (folder / name).is_file(), name
    assert "Apache License" in (folder / "NOTICE").read_text()
    settings = json.loads((folder / CONFIG_FILE).read_text())
    assert settings["policy"] == {"cnn_confidence_threshold": 0.7, "fallback_mass_threshold": 0.4, "thumbnail_cnn_threshold": 0.5}
    assert metrics["imagenet_classes_per_class"]["dog"] == 119 and metrics["imagenet_classes_none"] == 704

    fallback = load_fallback(folder)
    assert fallback.policy == FallbackPolicy(0.7, 0.4)
    assert fallback.label_map == build_label_map()
    masses = fallback.class_masses([photo("n01440764_tench"), photo("n02088364_beagle")])
    assert masses.shape == (2, len(CLASS_NAMES)) and (masses >= 0).all() and (masses.sum(axis=1) <= 1 + 1e-5).all()
    assert len(fallback.top_imagenet(photo("n02088364_beagle"), k=3)) == 3


def test_the_fallback_folds_imagenet_into_our_classes(fallback_v2, photo):
    beagle = fallback_v2.analyse(photo("n02088364_beagle"), k=3)
    assert CLASS_NAMES[int(beagle.class_masses.argmax())] == "dog" and beagle.class_masses.max() > 0.9
    assert beagle.top[0]["imagenet_class"] == "beagle" and beagle.top[0]["our_class"] == "dog"
    tench = fallback_v2.class_masses([photo("n01440764_tench")])[0]
    assert tench.max() < 0.1  # a fish: none of ours


def test_build_tunes_the_policy_for_the_cnn(tmp_path, cnn_bundle):
    config = FallbackConfig(model_path=TINY, tuning_pictures_per_class=2, cache_dir=str(tmp_path / "cache"))
    metrics = build(cnn_bundle, tmp_path, config)
    tuning = metrics["tuning"]
    assert tuning["tuned"]["pictures_ours"] > 0 and tuning["tuned"]["pictures_none"] > 0
    grid = json.loads((tmp_path / "fallback" / "tuning_grid.json").read_text())["photos"]
    assert len(grid) > 100
    qualifying = [row for row in grid if row["answer_error"] <= config.max_answer_error]
    chosen = {k: metrics["policy"][k] for k in ("cnn_confidence_threshold", "fallback_mass_threshold")}
    if qualifying:
        best = max(row["balanced_score"] for row in qualifying)
        assert tuning["tuned"]["balanced_score"] == pytest.approx(best)
        assert tuning["tuned"]["answer_error"] <= config.max_answer_error
    assert load_fallback(tmp_path / "fallback").policy == FallbackPolicy(**chosen)
    assert list((tmp_path / "cache").glob("imagenet-probabilities-*.npy"))  # the fallback's outputs are cached


def test_load_fallback_explains_a_missing_folder(tmp_path):
    with pytest.raises(FallbackUnavailable, match="not a fallback folder"):
        load_fallback(tmp_path)
