"""A build on a handful of pictures never crashes: it builds, or stops with one plain sentence
before any training. The pictures are real: CIFAR training pictures the bundle's gallery ships."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from similarity import NearestTrainingImages
from tests.conftest import REPO


def write_tree(folder, per_class):
    """An image-folder tree: {class name: pictures} from the gallery's thumbnails."""
    gallery = NearestTrainingImages.load(REPO / "assets" / "gallery.npz")
    for name, count in per_class.items():
        label = gallery.class_names.index(name)
        (folder / name).mkdir(parents=True)
        for index, row in enumerate((gallery.labels_ == label).nonzero()[0][:count]):
            Image.fromarray(gallery.thumbnails_[row]).save(folder / name / f"{index}.png")
    return folder


def build(data, out, tmp_path, *extra):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.build", "--data", str(data), "--out", str(out), "--runs", str(tmp_path / "runs"),
         "--data-dir", str(tmp_path / "no-data"), *extra], cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("per_class", [{"cat": 30}, {"cat": 30, "dog": 2}])
def test_data_that_cannot_train_stops_with_one_plain_message(tmp_path, per_class):
    data = write_tree(tmp_path / "data", per_class)
    result = build(data, tmp_path / "bundle", tmp_path, "--epochs", "1")
    assert result.returncode == 2, result.stderr[-2000:]
    # TensorFlow's own start-up lines may come first; ours is the last line, and the only one.
    assert result.stderr.strip().splitlines()[-1].startswith("Cannot build: ") and "Traceback" not in result.stderr
    assert ("at least two" in result.stderr) if len(per_class) == 1 else ("Too few pictures in dog (2)" in result.stderr)
    assert not (tmp_path / "runs").exists()  # refused before any training


def test_three_classes_of_five_pictures_build_a_bundle(tmp_path):
    data = write_tree(tmp_path / "data", {"cat": 5, "ship": 5, "frog": 5})
    result = build(data, tmp_path / "bundle", tmp_path, "--epochs", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert manifest["class_names"] == ["cat", "frog", "ship"]
    metrics = json.loads((tmp_path / "bundle" / "metrics.json").read_text())
    assert metrics["classifier"]["test_images"] == 3
    for name in ("model.keras", "ood_detector.joblib", "gallery.npz", "monitoring_reference.json"):
        assert (tmp_path / "bundle" / name).exists(), name
