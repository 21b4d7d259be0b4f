"""Building from the official CIFAR-10/100 python folders, and failing plainly without data.

The official-format folders are written by the test, in the archives' own layout, from real
32-pixel pictures the repository ships: the training thumbnails of the bundle's gallery
(assets/gallery.npz, CIFAR-10's and the extra classes' pictures). No development data is needed.
"""

import subprocess
import sys

import numpy as np
import pytest

from classifier.dataset import CIFAR100_PICKLES, CIFAR10_PICKLES, DataConfig, prepare_dataset
from classifier.download import _write_cifar10, _write_cifar100
from bundle.images import Preprocessing
from bundle.labels import CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES, CIFAR10_CLASSES, CLASS_NAMES
from classifier.readers import load_cifar_pickle
from service.answer import REFUSAL, UNSURE
from similarity import NearestTrainingImages
from tests.conftest import REPO

# A fine class of each extra coarse class, and of two other superclasses (near-OOD pictures).
FINE_OF = {"fruit_and_vegetables": "apple", "insects": "bee", "large_omnivores_and_herbivores": "camel",
           "fish": "trout", "vehicles_1": "bicycle"}


def _split(thumbnails, labels, rng):
    order = rng.permutation(len(labels))
    cut = int(len(order) * 0.8)
    return (thumbnails[order[:cut]], labels[order[:cut]]), (thumbnails[order[cut:]], labels[order[cut:]])


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    gallery = NearestTrainingImages.load(REPO / "assets" / "gallery.npz")
    pictures, labels = gallery.thumbnails_, gallery.labels_
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("official")
    cifar10 = labels < len(CIFAR10_CLASSES)
    (x_train, y_train), (x_test, y_test) = _split(pictures[cifar10], labels[cifar10], rng)
    # The pickles hold 10,000 pictures a batch: repeat the few we have to fill five batches' worth.
    repeat = int(np.ceil(50_000 / len(y_train)))
    _write_cifar10(folder / CIFAR10_PICKLES, np.tile(x_train, (repeat, 1, 1, 1))[:50_000],
                   np.tile(y_train, repeat)[:50_000], x_test, y_test)
    # CIFAR-100: our three extra classes' pictures under their coarse classes, and CIFAR-10's
    # first two classes' pictures standing in for two other superclasses.
    sources = {"fruit_and_vegetables": 10, "insects": 11, "large_omnivores_and_herbivores": 12, "fish": 0, "vehicles_1": 1}
    parts = {"train": ([], [], []), "test": ([], [], [])}
    for superclass, label in sources.items():
        rows = np.flatnonzero(labels == label)[:200]
        for split, chosen in (("train", rows[:160]), ("test", rows[160:])):
            xs, fine, coarse = parts[split]
            xs.append(pictures[chosen])
            fine += [CIFAR100_FINE_CLASSES.index(FINE_OF[superclass])] * len(chosen)
            coarse += [CIFAR100_COARSE_CLASSES.index(superclass)] * len(chosen)
    (x_train, fine_train, coarse_train), (x_test, fine_test, coarse_test) = (
        (np.concatenate(xs), np.array(fine), np.array(coarse)) for xs, fine, coarse in parts.values())
    _write_cifar100(folder / CIFAR100_PICKLES, ((x_train, fine_train), (x_test, fine_test)),
                    ((x_train, coarse_train), (x_test, coarse_test)))
    return folder


def test_the_pickles_read_back_as_written(official_dir):
    x, y, names = load_cifar_pickle(official_dir / CIFAR10_PICKLES, "test")
    assert names == CIFAR10_CLASSES and x.shape[1:] == (32, 32, 3) and x.dtype == np.uint8
    x, y, names = load_cifar_pickle(official_dir / CIFAR100_PICKLES, "train", ("insects",), label_mode="coarse")
    assert names == ("insects",) and len(x) == 160 and set(y) == {0}


def test_the_official_recipe_makes_our_13_classes(official_dir):
    dataset = prepare_dataset(DataConfig(cifar_dir=str(official_dir), preprocessing=Preprocessing(jpeg_quality=None)))
    assert dataset.class_names == CLASS_NAMES
    assert set(np.unique(dataset.y_train)) == set(range(13)) and set(np.unique(dataset.y_test)) == set(range(13))
    # Balancing doubles (and more) the small extra classes with rotated copies.
    counts = np.bincount(dataset.y_train, minlength=13)
    assert counts.min() == counts.max()
    assert dataset.train_augmented[dataset.y_train == 11].mean() > 0.5


def _build(*arguments, timeout=900):
    return subprocess.run([sys.executable, "-m", "pipeline.build", *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_a_smoke_build_from_the_official_folders_serves(official_dir, tmp_path):
    import json

    from bench.app_server import running_app
    from bench.visitors import classify, visitor

    bundle = tmp_path / "bundle"
    result = _build("--smoke", "--cifar-dir", str(official_dir), "--data-dir", str(tmp_path / "no-data"),
                    "--out", str(bundle), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((bundle / "bundle.json").read_text())["class_names"] == list(CLASS_NAMES)
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert "official CIFAR-10" in metrics["data"]
    # Stages without their data keep their defaults and say so in one line each.
    assert any("photo" in line for line in metrics["skipped"]), metrics["skipped"]
    with running_app(bundle, tmp_path / "state", extra_args=("--rate-limit", "0")) as (url, _):
        verdict = classify(visitor(url, "203.0.113.5"), REPO / "assets" / "examples" / "pug.jpg")[0]
    assert verdict.startswith("### This looks like") or REFUSAL in verdict or UNSURE in verdict, verdict


def test_no_data_stops_with_one_plain_message(tmp_path):
    result = _build("--smoke", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "b"), timeout=120)
    assert result.returncode == 2
    assert "--download" in result.stderr and "--cifar-dir" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()


def test_download_offline_fails_at_once_with_a_plain_message(tmp_path):
    from classifier.download import download_official
    from classifier.readers import DataUnavailable

    # This machine has no network (CI's and ours): the connection check refuses before any download.
    with pytest.raises(DataUnavailable, match="--download needs the network"):
        download_official(tmp_path / "official", connect_timeout=2.0)
    result = _build("--download", "--download-to", str(tmp_path / "official"), "--out", str(tmp_path / "b"), timeout=120)
    assert result.returncode == 2 and "needs the network" in result.stderr and "Traceback" not in result.stderr
