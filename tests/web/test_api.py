"""The JSON API on the real server (python app.py), driven with raw HTTP as any client would."""

import json
import re
import urllib.error
import urllib.request
import uuid

import pytest
from PIL import Image

from bench.app_server import running_app
from service.answer import REFUSAL
from tests.app.conftest import ASSETS
from tests.bad_inputs import unusable_files


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The app with the public link's per-client limits (6 uploads a minute, 2 corrections)."""
    with running_app(ASSETS, tmp_path_factory.mktemp("api"), extra_args=("--rate-limit", "6")) as (url, _):
        yield url + "api/v1/"


def post(url, body, content_type, address, extra_headers=None):
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": content_type, "X-Forwarded-For": address, **(extra_headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def multipart(data, name="photo.jpg"):
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_photo_gets_one_coherent_answer(api, example_photos):
    data = example_photos["container_ship"].read_bytes()
    status, answer = post(api + "classify", *multipart(data), address="198.51.100.1")
    assert status == 200, answer
    assert answer["answer"] == "ship" and answer["answered_by"] in ("cnn", "fallback"), answer
    assert answer["top_classes"][0]["class_name"] == answer["answer"] and answer["gallery"][0]["class_name"] == answer["answer"]
    assert len({item["class_name"] for item in answer["gallery"]}) == 4
    assert answer["verdict"].startswith("This looks like: ship") and answer["token"]
    # The raw bytes as the body give the same answer.
    status, raw = post(api + "classify", data, "image/jpeg", address="198.51.100.1")
    assert status == 200 and {k: v for k, v in raw.items() if k != "token"} == {k: v for k, v in answer.items() if k != "token"}


def test_a_refusal_names_no_class(api, example_photos):
    status, answer = post(api + "classify", example_photos["volcano"].read_bytes(), "image/jpeg", address="198.51.100.2")
    assert status == 200 and answer["answer"] is None and answer["answered_by"] == "refused"
    assert answer["verdict"] == REFUSAL and answer["refusal"] == "unknown"
    assert answer["top_classes"] == [] and len(answer["gallery"]) == 4


def test_bad_files_get_a_400_with_our_plain_message(api, example_photos):
    photo = Image.open(example_photos["pug"]).convert("RGB")
    for index, (name, (data, message)) in enumerate(unusable_files(photo).items()):
        status, error = post(api + "classify", *multipart(data, name), address=f"198.51.101.{index + 1}")
        if not data:
            assert status == 400 and error["error"] == "The file is empty.", name
            continue
        assert status == 400, (name, status, error)
        assert re.search(message, error["error"]), (name, error)


def test_too_large_and_empty_requests_are_refused(api):
    status, error = post(api + "classify", b"\xff" * 10, "image/jpeg", address="198.51.100.3",
                         extra_headers={"Content-Length": str(200 * 1024 * 1024)})
    assert status == 413 and "larger than" in error["error"]
    status, error = post(api + "classify", b"", "image/jpeg", address="198.51.100.3")
    assert status == 400 and error["error"] == "The file is empty."
    body, kind = multipart(b"abc")
    body = body.replace(b'filename="photo.jpg"', b"")  # a form field, not a file
    status, error = post(api + "classify", body, kind, address="198.51.100.3")
    assert status == 400 and "named picture file" in error["error"]


def test_a_correction_is_a_vote_and_limits_apply(api, example_photos):
    data = example_photos["pug"].read_bytes()
    status, answer = post(api + "classify", data, "image/jpeg", address="198.51.100.4")
    assert status == 200
    correction = json.dumps({"token": answer["token"], "label": "dog"}).encode()
    status, thanks = post(api + "corrections", correction, "application/json", address="198.51.100.4")
    assert status == 200 and thanks["message"] == "Based on the image you selected, your label is dog"
    status, again = post(api + "corrections", correction, "application/json", address="198.51.100.4")
    assert status == 400 and "already sent a correction" in again["error"]
    status, unknown = post(api + "corrections", json.dumps({"token": "nope", "label": "dog"}).encode(), "application/json",
                           address="198.51.100.4")
    assert status == 400 and "Classify a picture first" in unknown["error"]
    # The page's per-client upload limit holds here too: 6 a minute.
    statuses = [post(api + "classify", data, "image/jpeg", address="198.51.100.5")[0] for _ in range(7)]
    assert statuses[:6] == [200] * 6 and statuses[6] == 429
    status, error = post(api + "classify", data, "image/jpeg", address="198.51.100.5")
    assert status == 429 and "Too many pictures" in error["error"]


def test_openapi_docs_are_served(api):
    with urllib.request.urlopen(api + "openapi.json", timeout=30) as response:
        schema = json.loads(response.read())
    assert {"/api/v1/classify", "/api/v1/corrections"} <= set(schema["paths"])
    with urllib.request.urlopen(api + "docs", timeout=30) as response:
        assert response.status == 200 and b"swagger" in response.read().lower()
