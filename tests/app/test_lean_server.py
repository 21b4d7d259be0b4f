"""The serving side runs on the bundle alone: importing app, loading the committed bundle, building
the page and answering a photo load no TensorFlow, no Keras, no JAX, and no module of the build
side (classifier, pipeline). Checked in a fresh interpreter, where nothing else imported them."""

import json
import subprocess
import sys

from tests.conftest import REPO

BUILD_SIDE = ("tensorflow", "keras", "jax", "classifier", "pipeline", "matplotlib")

SERVE_ONE_PHOTO = """
import json, sys, tempfile
import app
with tempfile.TemporaryDirectory() as state:
    service, bundle_dir = app.make_service("assets", state, rate_limit=0)
    app.build_app(service, bundle_dir)
    prediction = service.predictor.predict(sys.argv[1])
    print(json.dumps({"answered_by": prediction.answered_by, "modules": sorted(sys.modules)}))
"""


def test_serving_a_photo_loads_nothing_of_the_build_side(example_photos):
    photo = next(iter(example_photos.values()))
    result = subprocess.run([sys.executable, "-c", SERVE_ONE_PHOTO, str(photo)], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["answered_by"] in ("cnn", "fallback", "refused")
    loaded = {name.split(".")[0] for name in report["modules"]}
    assert not loaded & set(BUILD_SIDE), sorted(loaded & set(BUILD_SIDE))
    assert {"bundle", "service", "ood", "similarity", "fallback", "monitoring", "storage"} <= loaded
