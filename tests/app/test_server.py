"""The real app on a localhost port, driven by gradio_client as a user's browser would."""

import re
import sqlite3

import pytest
from gradio_client import handle_file
from PIL import Image

from classifier.bundle import Bundle
from classifier.data import load_image_folder, load_mnist
from service.predictor import REFUSAL, Predictor
from tests.app.conftest import ASSETS
from tests.bad_inputs import awkward_but_valid_files, unusable_files


@pytest.fixture(scope="module")
def cifar_photos(shared_data, tmp_path_factory):
    """Real CIFAR-10 test images written as PNG files, with their true class names."""
    x, y, names = load_image_folder(shared_data / "cifar10-jpeg.tgz", "cifar10/test", limit_per_class=2)
    folder = tmp_path_factory.mktemp("cifar")
    paths = []
    for index, (image, label) in enumerate(zip(x, y)):
        path = folder / f"{index}.png"
        Image.fromarray(image).save(path)
        paths.append((path, names[label]))
    return paths


def classify(client, path):
    verdict, top, detail, gallery, relabel_note = client.predict(handle_file(str(path)), api_name="/classify")
    return verdict, top, detail, gallery


def test_the_server_gives_the_service_layers_answer(client, photo_paths):
    predictor = Predictor(Bundle.load(ASSETS))
    for path in photo_paths[::100]:
        verdict, top, _, gallery = classify(client, path)
        expected = predictor.predict(path)
        assert verdict == f"### {expected.message}"
        assert [item["label"] for item in top["confidences"]] == [name.replace("_", " ") for name, _ in expected.top_classes]
        assert len(gallery) == len(expected.gallery) == 4


def test_the_cnn_ranks_cifar_pictures_right(client, cifar_photos):
    # The CNN's own top class, as the page shows it; whether it or the fallback gives the verdict
    # is the tuned policy's call.
    right = sum(classify(client, path)[1]["label"] == name for path, name in cifar_photos)
    assert right >= 0.6 * len(cifar_photos), f"only {right} of {len(cifar_photos)} CIFAR-10 test images ranked right"


def test_mnist_digits_are_refused(client, shared_data, tmp_path):
    digits, _ = load_mnist(shared_data / "mnist")
    refused = 0
    for index in range(5):
        path = tmp_path / f"digit{index}.png"
        Image.fromarray(digits[index, :, :, 0]).save(path)
        refused += REFUSAL in classify(client, path)[0]
    assert refused >= 4, f"only {refused} of 5 MNIST digits refused"


def test_gallery_shows_one_image_from_each_top_class(client, photo_paths):
    _, top, _, gallery = classify(client, photo_paths[42])
    captions = [item["caption"] for item in gallery]
    classes = [caption.rsplit(" (", 1)[0] for caption in captions]
    assert len(set(classes)) == 4, captions
    assert classes[:3] == [item["label"] for item in top["confidences"]]


def test_relabel_via_the_gallery_saves_the_correction(client, server, photo_paths):
    _, state_dir = server
    _, _, _, gallery = classify(client, photo_paths[7])
    chosen = gallery[2]["caption"].rsplit(" (", 1)[0]
    note = client.predict(2, api_name="/relabel")
    assert f"Based on the image you selected, your label is {chosen}" in note
    saved = list((state_dir / "feedback" / chosen.replace(" ", "_")).glob("*.png"))
    assert saved, "the corrected picture is in the feedback folder"
    with sqlite3.connect(state_dir / "monitoring.sqlite") as database:
        tags = [row[0] for row in database.execute("SELECT tag FROM predictions WHERE tag IS NOT NULL")]
    assert chosen.replace(" ", "_") in tags


def test_monitor_reads_the_log(client):
    drift, histogram, confidence, entropy, last_uploads = client.predict(api_name="/monitor")
    assert "upload" in drift.lower()
    assert histogram is not None and confidence is not None and entropy is not None
    assert 1 <= len(last_uploads) <= 10


@pytest.fixture(scope="module")
def photo(photo_paths):
    return Image.open(photo_paths[3]).convert("RGB")


def test_unusable_files_get_a_plain_message(client, photo, tmp_path):
    for name, (data, message) in unusable_files(photo).items():
        path = tmp_path / name
        path.write_bytes(data)
        verdict, top, detail, gallery = classify(client, path)
        assert verdict.startswith("### ⚠️"), (name, verdict)
        assert re.search(message, verdict), (name, verdict)
        assert not top and gallery == [] and "Traceback" not in verdict + detail


def test_awkward_pictures_are_still_classified(client, photo, tmp_path):
    for name, data in awkward_but_valid_files(photo).items():
        path = tmp_path / name
        path.write_bytes(data)
        verdict, top, _, gallery = classify(client, path)
        assert "⚠️" not in verdict, (name, verdict)
        assert verdict.startswith("### This looks like") or REFUSAL in verdict, (name, verdict)
        assert len(top["confidences"]) == 3 and len(gallery) == 4, name
