"""Few pictures of one's own, as a new user brings them: 5 Tiny ImageNet classes x 20 pictures build
with the default --preset auto (transfer learning on the bundled MobileNetV2), the bundle serves,
answers its own classes and refuses MNIST digits; 3 classes x 5 pictures build too."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import REPO


def build(data, out, runs, data_dir, *extra):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.build", "--data", str(data), "--out", str(out), "--runs", str(runs),
         "--data-dir", str(data_dir), "--image-size", "64", *extra], cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def five_by_twenty(tmp_path_factory, data_path):
    from bench.few_pictures import write_tree

    root = tmp_path_factory.mktemp("five")
    data_dir = data_path()
    # train/: the user's folder (20 a class); test/: 10 val pictures a class, never seen in the build.
    write_tree(data_path("tiny-imagenet-subset.tgz"), root / "data", classes=5, per_class=20, seed=1, test_per_class=10)
    result = build(root / "data" / "train", root / "bundle", root / "runs", data_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, result


@pytest.fixture(scope="module")
def predictor(five_by_twenty):
    from service.bundle import Bundle
    from service.predictor import Predictor

    return Predictor(Bundle.load(five_by_twenty[0] / "bundle", with_fallback=False))


def test_auto_says_it_chose_transfer_and_why(five_by_twenty):
    root, result = five_by_twenty
    chosen = [line for line in result.stdout.splitlines() if line.startswith("[build] preset: ")]
    assert len(chosen) == 1 and "mobilenet_v2_tflite: 20 pictures per class (median), fewer than 500" in chosen[0]
    metrics = json.loads((root / "bundle" / "metrics.json").read_text())
    assert metrics["preset_choice"]["preset"] == "mobilenet_v2_tflite" and "fewer than 500" in metrics["preset_choice"]["why"]
    manifest = json.loads((root / "bundle" / "bundle.json").read_text())
    assert "average pool" in manifest["features"]
    for name in ("model.keras", "extractor.json", "mobilenet_v2_1.0_224_quant.tflite", "ood_detector.joblib", "gallery.npz",
                 "monitoring_reference.json"):
        assert (root / "bundle" / name).exists(), name


def test_the_bundle_answers_its_own_classes_on_unseen_pictures(five_by_twenty, predictor):
    root, _ = five_by_twenty
    pictures = sorted((root / "data" / "test").glob("*/*.JPEG"))
    assert len(pictures) == 50
    predictions = [predictor.predict(path) for path in pictures]
    right = sum(p.label == path.parent.name for p, path in zip(predictions, pictures))
    wrong = sum(p.label not in (None, path.parent.name) for p, path in zip(predictions, pictures))
    assert right >= 30 and wrong <= 8, (right, wrong)  # of 50; chance would be 10 right
    first = predictions[0]
    assert first.gallery and first.cnn_probabilities.shape == (5,) and first.ood_inlier is not None


def test_the_bundle_refuses_mnist_digits(predictor, data_path):
    from classifier.readers import load_mnist

    digits, _ = load_mnist(data_path("mnist"))
    # As a thumbnail and enlarged to a photo's size: two paths through the answer rule.
    pictures = [Image.fromarray(d[:, :, 0]).resize((size, size)) for d in digits[:15] for size in (28, 200)]
    refused = sum(predictor.predict(picture).label is None for picture in pictures)
    assert refused >= 0.9 * len(pictures), refused


def test_the_model_tab_says_what_the_features_are(predictor):
    from service.model_card import model_card_markdown

    card = model_card_markdown(predictor.bundle)
    assert "Preset **mobilenet_v2_tflite**" in card and "1280-wide average pool" in card


def test_three_classes_of_five_pictures_build_on_transfer(tmp_path, data_path):
    from bench.few_pictures import write_tree

    write_tree(data_path("tiny-imagenet-subset.tgz"), tmp_path / "data", classes=3, per_class=5, seed=2, test_per_class=0)
    result = build(tmp_path / "data" / "train", tmp_path / "bundle", tmp_path / "runs", data_path(),
                   "--stages", "ood,gallery,monitoring")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    metrics = json.loads((tmp_path / "bundle" / "metrics.json").read_text())
    assert metrics["training"]["preset"] == "mobilenet_v2_tflite" and metrics["classifier"]["test_images"] == 3
    assert (tmp_path / "bundle" / "ood_detector.joblib").exists()


@pytest.mark.parametrize("preset", ["resnet50", "mobilenet_v2_tflite"])
def test_a_transfer_preset_that_cannot_run_here_stops_at_once_and_plainly(preset, tmp_path, data_path):
    from bundle.files import reachable
    from classifier.transfer import WEIGHTS_HOST

    if preset == "resnet50" and reachable(WEIGHTS_HOST, 443, 3.0):
        pytest.skip(f"{WEIGHTS_HOST} is reachable: this machine is online")
    from bench.few_pictures import write_tree

    write_tree(data_path("tiny-imagenet-subset.tgz"), tmp_path / "data", classes=2, per_class=5, seed=3, test_per_class=0)
    # resnet50: no cached weights (an empty KERAS_HOME), offline; the TFLite preset: a data folder without the .tflite.
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.build", "--data", str(tmp_path / "data" / "train"), "--out", str(tmp_path / "bundle"),
         "--runs", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "no-data"), "--preset", preset],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "KERAS_HOME": str(tmp_path / "keras")})
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Cannot build: ") and "Traceback" not in result.stderr
    assert ("offline" in last) if preset == "resnet50" else ("mobilenet_v2_1.0_224_quant.tflite" in last)
    assert not (tmp_path / "runs").exists()
