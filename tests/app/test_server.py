"""The real app on a localhost port, driven by gradio_client as a visitor's browser would."""

import re
import sqlite3

import pytest
from gradio_client import handle_file
from PIL import Image

from classifier.readers import load_image_folder, load_mnist
from service.answer import REFUSAL, UNSURE
from service.bundle import Bundle
from service.predictor import Predictor
from tests.app.conftest import ASSETS
from tests.bad_inputs import awkward_but_valid_files, unusable_files

VERDICT = re.compile(r"This looks like: (.+?) \(")
STAGES = ("**Noise gate**", "**The small CNN**", "**Unknown-picture check**", "**The ImageNet model**")


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
    """(verdict, the bars' value, gallery captions, under-the-hood text) as the page shows them."""
    verdict, shares, gallery, hood, _note = client.predict(handle_file(str(path)), api_name="/classify")
    return verdict, shares, [item["caption"] for item in gallery], hood


def answer_of(verdict):
    match = VERDICT.search(verdict)
    return match.group(1) if match else None


def check_one_story(path, verdict, shares, captions, hood):
    """The verdict, the bars, the gallery and "Under the hood" agree; returns the answer (None: refused)."""
    answer = answer_of(verdict)
    assert len(captions) == 4 and len(set(captions)) == 4, (path, captions)
    assert hood.count("**") == 2 * len(STAGES) and all(stage in hood for stage in STAGES), (path, hood)
    if answer is None:
        assert verdict in (f"### {REFUSAL}", f"### {UNSURE}"), (path, verdict)  # the two refusals name no class
        # A refusal shows no confident class: the bars are empty, the gallery offers the closest classes.
        assert not shares or not shares.get("label"), (path, shares)
    else:
        assert shares["label"] == answer == shares["confidences"][0]["label"], (path, verdict, shares)
        assert captions[0] == answer, (path, verdict, captions)
    return answer


def test_classify_returns_what_the_page_shows_and_no_session_state(client):
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/classify"]
    # verdict, bars, gallery, under the hood, relabel note: the session's token stays in the session.
    assert [item["component"] for item in endpoint["returns"]] == ["Markdown", "Label", "Gallery", "Markdown", "Markdown"]


def test_the_server_gives_the_service_layers_answer(client, example_photos):
    predictor = Predictor(Bundle.load(ASSETS))
    for path in example_photos.values():
        verdict, shares, captions, hood = classify(client, path)
        expected = predictor.predict(path)
        assert verdict == f"### {expected.message}"
        assert captions == [n.class_name.replace("_", " ") for n in expected.gallery]
        assert hood == "\n\n".join([expected.detail, *expected.under_the_hood])
        if expected.distribution:
            assert [(item["label"], item["confidence"]) for item in shares["confidences"]] == [
                (name.replace("_", " "), pytest.approx(share)) for name, share in expected.distribution[:3]]
        else:
            assert not shares


def test_the_page_tells_one_story_on_the_example_photos(client, example_photos):
    answers = [check_one_story(path, *classify(client, path)) for path in example_photos.values()]
    # Both kinds of page were checked: answers and refusals.
    assert any(answer is None for answer in answers) and sum(answer is not None for answer in answers) >= 5


def test_the_bars_and_the_gallery_follow_the_answer(client, photo_paths, cifar_photos):
    answered = 0
    for path in [*photo_paths[::25], *[p for p, _ in cifar_photos[::2]]]:
        answered += check_one_story(path, *classify(client, path)) is not None
    assert answered >= 10


def test_under_the_hood_names_every_stage(client, example_photos):
    verdict, _, _, hood = classify(client, example_photos["Siamese_cat"])
    for stage in STAGES:
        assert stage in hood, (stage, hood)
    # The unknown-picture check names the class it judged: the CNN's best, the first it lists.
    cnn_best = re.search(r"\*\*The small CNN\*\* \([^)]*\): ([a-z ]+) \d+%", hood)
    judged = re.search(r"\*\*Unknown-picture check\*\* on the CNN's class, ([^:]+):", hood)
    assert cnn_best and judged and judged.group(1) == cnn_best.group(1), hood
    assert "Siamese cat" in hood, "the ImageNet model's line names what it saw"


def test_photos_of_none_of_our_classes_are_refused_and_the_hood_says_why(client, example_photos):
    for name in ("volcano", "wall_clock"):
        verdict, shares, captions, hood = classify(client, example_photos[name])
        assert verdict == f"### {REFUSAL}" and not shares, (name, verdict)
        assert "probably none of them" in hood or "unlike the training pictures" in hood, (name, hood)


def test_mnist_digits_are_refused(client, shared_data, tmp_path):
    digits, _ = load_mnist(shared_data / "mnist")
    refused = 0
    for index in range(5):
        path = tmp_path / f"digit{index}.png"
        Image.fromarray(digits[index, :, :, 0]).save(path)
        verdict = classify(client, path)[0]
        refused += REFUSAL in verdict or UNSURE in verdict
    assert refused >= 4, f"only {refused} of 5 MNIST digits refused"


def test_a_click_in_the_gallery_is_a_pending_vote(server, example_photos):
    from gradio_client import Client

    from service.visitors import Pseudonyms

    url, state_dir = server
    # The test talks to the server from loopback, where a forwarded address is believed (a tunnel's).
    visitor = Client(url, verbose=False, headers={"X-Forwarded-For": "198.51.100.7"})
    _, _, captions, _ = classify(visitor, example_photos["tow_truck"])
    note = visitor.predict(2, api_name="/relabel")
    assert f"Based on the image you selected, your label is {captions[2]}" in note
    with sqlite3.connect(state_dir / "corrections.sqlite") as database:
        vote = database.execute("SELECT label, status, voter, length(png) FROM votes JOIN pictures ON picture = hash"
                                " ORDER BY votes.id DESC LIMIT 1").fetchone()
    assert vote[:3] == (captions[2].replace(" ", "_"), "pending", Pseudonyms(state_dir).voter("198.51.100.7"))
    assert vote[3] > 100, "the picture is stored with the vote"
    with sqlite3.connect(state_dir / "monitoring.sqlite") as database:
        tags = [row[0] for row in database.execute("SELECT tag FROM predictions WHERE tag IS NOT NULL")]
    assert captions[2].replace(" ", "_") in tags
    # The same visitor cannot vote twice on one picture.
    again = visitor.predict(1, api_name="/relabel")
    assert "already sent a correction for this picture" in again and "saved" not in again


@pytest.mark.parametrize("number, index", enumerate([-1, 4, 1.5, True, "2", None]))
def test_invalid_gallery_positions_are_refused(server, example_photos, number, index):
    from gradio_client import Client

    url, state_dir = server
    visitor = Client(url, verbose=False, headers={"X-Forwarded-For": f"198.51.100.{20 + number}"})
    classify(visitor, example_photos["airliner"])
    note = visitor.predict(index, api_name="/relabel")
    assert "does not exist" in note, (index, note)


def test_the_public_page_has_no_monitor(client):
    names = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/monitor" not in names and "/classify" in names
    with pytest.raises(Exception):
        client.predict(api_name="/monitor")


@pytest.fixture(scope="module")
def photo(example_photos):
    return Image.open(example_photos["pug"]).convert("RGB")


def test_unusable_files_get_a_plain_message(client, photo, tmp_path):
    for name, (data, message) in unusable_files(photo).items():
        path = tmp_path / name
        path.write_bytes(data)
        verdict, shares, captions, hood = classify(client, path)
        assert verdict.startswith("### ⚠️"), (name, verdict)
        assert re.search(message, verdict), (name, verdict)
        assert not shares and captions == [] and "Traceback" not in verdict + hood


def test_awkward_pictures_are_still_classified(client, photo, tmp_path):
    for name, data in awkward_but_valid_files(photo).items():
        path = tmp_path / name
        path.write_bytes(data)
        verdict, shares, captions, _ = classify(client, path)
        assert "⚠️" not in verdict, (name, verdict)
        assert verdict.startswith("### This looks like") or REFUSAL in verdict or UNSURE in verdict, (name, verdict)
        assert len(captions) == 4, name


def test_admin_plots_and_mlflow_logging_of_each_upload(tmp_path, example_photos):
    """python app.py --mlflow with the admin area on: the Monitor tab's native plots carry the
    uploads, and after a plain kill (SIGTERM) every upload is in the MLflow store beside the state."""
    from gradio_client import Client

    from bench.app_server import running_app

    pytest.importorskip("mlflow", reason="the MLflow extra is not installed (pip install -r requirements-mlflow.txt)")
    from mlflow.tracking import MlflowClient

    photos = [example_photos[name] for name in ("pug", "airliner", "volcano")]
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("HONEST_ADMIN_PASSWORD", "admin plots")
        environment.delenv("MLFLOW_TRACKING_URI", raising=False)
        with running_app(ASSETS, tmp_path, extra_args=("--rate-limit", "0", "--mlflow")) as (url, _):
            visitor = Client(url, verbose=False)
            told = [answer_of(classify(visitor, path)[0]) or "refused" for path in photos]
            admin = Client(f"http://127.0.0.1:{int((tmp_path / 'admin.port').read_text())}/", verbose=False,
                           auth=("admin", "admin plots"))
            drift, histogram, confidence, entropy, answers, gallery = admin.predict(api_name="/monitor")
    assert "3 uploads logged" in drift and len(gallery) == 3
    # Each plot gets its table: columns, kinds, rows.
    assert answers["mark"] == "bar" and sum(row[1] for row in answers["data"]) == 3
    assert sorted(row[0] for row in answers["data"]) == sorted(set(told))
    assert histogram["mark"] == "line" and {row[1] for row in histogram["data"]} == {"red", "green", "blue"}
    assert confidence["mark"] == "point" and confidence["datatypes"]["time"] == "temporal"
    assert sum(row[confidence["columns"].index("uploads")] for row in confidence["data"]) == 3
    assert entropy["mark"] == "line" and "uploads" in {row[1] for row in entropy["data"]}

    assert "MLflow: each upload is logged to" in (tmp_path / "server.log").read_text()
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("uploads")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.tags["answered_class"] for run in runs) == sorted(set(told))
    steps = {point.step: run.data.tags["answered_class"] for run in runs
             for point in client.get_metric_history(run.info.run_id, "confidence")}
    assert [steps[step] for step in sorted(steps)] == told  # every upload, in order, under its answer
    assert all(run.info.status == "FINISHED" for run in runs)  # the runs were ended at exit


def test_mlflow_without_the_extra_says_how_to_install_it(tmp_path):
    import subprocess
    import sys

    from bench.app_server import REPO

    # What `import mlflow` meets on a machine without the extra; the app stops before loading anything.
    started = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['mlflow'] = None; import app; app.main(sys.argv[1:])",
         "--mlflow", "--state-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert started.returncode == 1
    assert "Cannot start: MLflow tracking needs the optional extra: pip install -r requirements-mlflow.txt" in started.stderr
    assert "Traceback" not in started.stderr
