"""What the six test-time views inside the saved model cost one upload, and what they buy.

    python -m bench.tta_cost [--assets assets] [--calls 300] [--data-dir DIR]

Rebuilds the bundle's airbench model around the same trained layers at each view level (one
view; mirror; mirror x two shifts, the saved one), times one picture through each, the three in
turn, and scores each on the CIFAR-10 test pictures (10-class accuracy; skipped without the
data folder).
"""

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pipeline.data_dir import resolve_data_dir

LEVELS = {0: "one view", 1: "mirror (2 views)", 2: "mirror x shifts (6 views, shipped)"}


def rebuilt(model, level):
    """The saved serving model's trained layers behind `level`'s views (classifier.airbench)."""
    from classifier.airbench import serving_model

    trunk = [layer for layer in model.layers if layer.name == "normalize" or layer.name.startswith(("whiten", "block"))]
    trunk.append(model.get_layer("pooled"))
    kernel = model.get_layer("logits").get_weights()[0]
    # serving_model folds the 1/9 into the kernel it is given: hand it the saved kernel unscaled.
    head = SimpleNamespace(kernel=SimpleNamespace(numpy=lambda: kernel))
    return serving_model(trunk, head, model.input_shape[1:], kernel.shape[1], SimpleNamespace(tta_level=level, logit_scale=1.0),
                         f"views_{level}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    import keras

    model = keras.saving.load_model(f"{args.assets}/model.keras", compile=False)
    models = {level: rebuilt(model, level) for level in LEVELS}
    picture = np.random.default_rng(0).random((1, *model.input_shape[1:])).astype(np.float32)
    np.testing.assert_allclose(models[2].predict_on_batch(picture), model.predict_on_batch(picture), atol=1e-5)
    timings = {level: [] for level in LEVELS}
    for each in models.values():
        each.predict_on_batch(picture)  # warm-up
    for _ in range(args.calls):
        for level, each in models.items():
            began = time.perf_counter()
            each.predict_on_batch(picture)
            timings[level].append((time.perf_counter() - began) * 1000)
    accuracy = test_accuracy(models, resolve_data_dir(args.data_dir))
    for level, name in LEVELS.items():
        scored = f", CIFAR-10 test {accuracy[level]:.2%}" if accuracy else ""
        print(f"{name:>36}: p50 {np.percentile(timings[level], 50):.1f} ms, p95 {np.percentile(timings[level], 95):.1f} ms{scored}")


def test_accuracy(models, data_dir):
    from bundle.labels import CIFAR10_CLASSES
    from classifier.readers import load_image_folder

    archive = Path(data_dir) / "cifar10-jpeg.tgz"
    if not archive.exists():
        return {}
    x, y, names = load_image_folder(archive, "cifar10/test")
    x = x.astype(np.float32) / 255.0
    truth = np.array([CIFAR10_CLASSES.index(name) for name in names])[y]  # our first 10 classes are CIFAR-10's
    return {level: float(np.mean(np.asarray(each.predict(x, batch_size=500, verbose=0))[:, :10].argmax(1) == truth))
            for level, each in models.items()}


if __name__ == "__main__":
    main()
