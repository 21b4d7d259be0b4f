"""A bundle built on another dataset (grayscale MNIST digits, 28x28) is served by the real app
unchanged: its classes, input size and channels come from the bundle."""

import json
import re
import sqlite3

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from bench.app_server import running_app
from classifier.readers import load_mnist
from pipeline.build import any_dataset_config, build
from service.answer import REFUSAL, UNSURE

DIGITS = tuple(str(digit) for digit in range(10))
VERDICT = re.compile(r"This looks like: (.+?) \(")


@pytest.fixture(scope="module")
def mnist_bundle(shared_data, tmp_path_factory):
    from dataclasses import replace

    from pipeline.ood_stage import OODConfig

    root = tmp_path_factory.mktemp("mnist")
    config = any_dataset_config(shared_data / "mnist", root / "bundle", root / "runs", image_size=28, channels=1,
                                limit_per_class=300, epochs=4, data_dir=str(shared_data))
    # Small detectors: the test checks the path end to end, bench figures come from full builds.
    ood = OODConfig(n_estimators=50, near_ood_limit=500)
    config = replace(config, train=replace(config.train, batch_size=64), stage_configs=(("ood", ood),))
    metrics = build(config, verbose=0)
    return root / "bundle", metrics


@pytest.fixture(scope="module")
def mnist_app(mnist_bundle, tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("mnist-state")
    # One client sends every picture here: no per-client limits.
    with running_app(mnist_bundle[0], state_dir, extra_args=("--rate-limit", "0")) as (url, _):
        yield Client(url, verbose=False), state_dir


@pytest.fixture(scope="module")
def digit_files(shared_data, tmp_path_factory):
    """The last 20 MNIST test digits (the build's limit_per_class reads only the first 300 of each
    class, so these were never trained on), as PNG files."""
    digits, labels = load_mnist(shared_data / "mnist")
    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for index in range(len(digits) - 20, len(digits)):
        path = folder / f"{index}.png"
        Image.fromarray(digits[index, :, :, 0]).save(path)
        paths.append((path, str(labels[index])))
    return paths


def classify(client, path):
    """(verdict, the bars' value, gallery items, under-the-hood text) as the page shows them."""
    verdict, shares, gallery, hood, _note = client.predict(handle_file(str(path)), api_name="/classify")
    return verdict, shares, gallery, hood


def test_the_bundle_carries_its_own_classes_size_and_channels(mnist_bundle):
    directory, metrics = mnist_bundle
    manifest = json.loads((directory / "bundle.json").read_text())
    assert tuple(manifest["class_names"]) == DIGITS
    assert (manifest["preprocessing"]["height"], manifest["preprocessing"]["width"], manifest["preprocessing"]["channels"]) == (28, 28, 1)
    assert not (directory / "fallback").exists(), "the ImageNet fallback maps onto our 13 classes only"
    assert set(metrics["ood"]["table"]["class_isolation_forests"]) >= {"tiny_imagenet_val"}
    assert metrics["classifier"]["test_accuracy"] > 0.8, metrics["classifier"]["test_accuracy"]
    assert sorted(path.stem for path in (directory / "examples").glob("*.jpg")) == list(DIGITS[:9])
    # Without a fallback to tune it against, the answer rule keeps its defaults and says why.
    rule = json.loads((directory / "answer_rule.json").read_text())
    assert rule["tuning"] == {"tuned": False, "why": "built without the fallback stage"}


def test_the_app_classifies_digits_with_the_bundles_labels(mnist_app, digit_files):
    client, _ = mnist_app
    right = 0
    for path, digit in digit_files:
        verdict, shares, gallery, hood = classify(client, path)
        assert len(gallery) == 4 and {item["caption"] for item in gallery} <= set(DIGITS)
        match = VERDICT.search(verdict)
        if match is None:
            assert (REFUSAL in verdict or UNSURE in verdict) and not shares, (digit, verdict, shares)
            continue
        # One story: the answer is the top bar and the first gallery picture, all in the bundle's labels.
        assert {item["label"] for item in shares["confidences"]} <= set(DIGITS)
        assert match.group(1) == shares["label"] == gallery[0]["caption"], (verdict, shares, gallery[0]["caption"])
        assert "**The ImageNet model**: not asked" in hood, "a 28-pixel digit is the CNN's alone to judge"
        right += match.group(1) == digit
    assert right >= 15, f"only {right} of {len(digit_files)} digits answered right"


def test_a_colour_photo_is_made_grayscale_and_refused(mnist_app, photo_paths):
    client, _ = mnist_app
    refused = sum(REFUSAL in verdict or UNSURE in verdict for verdict in (classify(client, path)[0] for path in photo_paths[:50:10]))
    assert refused >= 4, f"only {refused} of 5 photos refused by a digits model"


def test_the_gallery_shows_grayscale_digits_and_a_click_relabels(mnist_app, digit_files):
    client, state_dir = mnist_app
    path, _ = digit_files[0]
    _, _, gallery, _ = classify(client, path)
    image = gallery[1]["image"]
    thumbnail = np.asarray(Image.open(image["path"] if isinstance(image, dict) else image).convert("RGB")).astype(int)
    assert np.abs(thumbnail[..., 0] - thumbnail[..., 1]).max() <= 8, "a digit thumbnail is gray"
    chosen = gallery[1]["caption"]
    note = client.predict(1, api_name="/relabel")
    assert f"your label is {chosen}" in note
    with sqlite3.connect(state_dir / "corrections.sqlite") as database:
        votes = database.execute("SELECT label, status FROM votes").fetchall()
    assert votes == [(chosen, "pending")]
    with sqlite3.connect(state_dir / "monitoring.sqlite") as database:
        assert database.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] >= 2
