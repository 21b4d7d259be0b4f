"""Replay real images as uploads through a real SQLite prediction log and the drift test.

    python -m bench.drift_replay            # --limit 3000 images per drifted stream, window 100

Streams: the CIFAR-10 test set and our 13-class test set (no drift: the alarm should stay quiet),
then Tiny ImageNet val images of the 184 classes that are not ours, MNIST digits made 32x32 RGB,
and CIFAR-10 test images darkened to 50% and 80% brightness (drift: the alarm should fire). Each
stream is logged upload by upload (metrics, thumbnail, histogram) and judged every 100 uploads on
the last 100; printed: windows judged, share that raised the alarm, median p-value of each test.
Then the detection delay: 100 clean uploads, then drifted ones, judged after every 5 uploads.

Probabilities come from the committed bundle (assets/) if present, else the newest dev checkpoint
runs/*/checkpoint.keras; they are cached in .cache/monitoring/ per model file. The CNN answers
every upload here (the alarm judges the pictures and the CNN, whatever the answer was).
"""

import hashlib
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifier.dataset import DataConfig, prepare_dataset  # noqa: E402
from bundle.labels import CIFAR10_CLASSES, EXTRA_CLASS_WNIDS  # noqa: E402
from classifier.readers import load_mnist, load_tiny_imagenet_val, tiny_imagenet_wnids  # noqa: E402
from monitoring import DriftConfig, PredictionLog, as_reference, detect_drift, upload_metrics  # noqa: E402
from pipeline import monitoring_stage  # noqa: E402
from pipeline.context import BuildContext  # noqa: E402
from bundle.files import MONITORING_FILE  # noqa: E402

CACHE = ROOT / ".cache" / "monitoring"


def model_path():
    bundled = ROOT / "assets" / "model.keras"
    if bundled.exists():
        return bundled
    checkpoints = sorted(ROOT.glob("runs/*/checkpoint.keras"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        sys.exit("No model: build assets/ (python -m pipeline.build) or train one (python -m classifier.train).")
    return checkpoints[-1]


class CachedEmbedder:
    """Embeddings of named image sets, cached per model file (path, size, modification time)."""

    def __init__(self, path):
        stat = path.stat()
        self.key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        self.path = path
        self._extractor = None

    def __call__(self, name, images):
        from bundle.embedding import Embedding, embed
        from classifier.export import keras_outputs

        file = CACHE / f"embedding-{self.key}-{name}-{len(images)}.npz"
        if file.exists():
            with np.load(file) as cached:
                return Embedding(cached["features"], cached["logits"], cached["probabilities"])
        if self._extractor is None:
            import keras

            self._extractor = keras_outputs(keras.saving.load_model(self.path, compile=False))
        started = time.perf_counter()
        embedding = embed(self._extractor, images)
        print(f"  embedded {name}: {len(images)} images in {time.perf_counter() - started:.0f} s", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        for stale in CACHE.glob("embedding-*.npz"):  # another model's: never read again
            if not stale.name.startswith(f"embedding-{self.key}-"):
                stale.unlink()
        np.savez(file, features=embedding.features, logits=embedding.logits, probabilities=embedding.probabilities)
        return embedding


def other_tiny_imagenet_wnids(archive):
    ours = {wnid for wnids in EXTRA_CLASS_WNIDS.values() for wnid in wnids}
    return [wnid for wnid in tiny_imagenet_wnids(archive) if wnid not in ours]


def answered_by_cnn(image, probability, reference):
    """The log record of an upload the CNN answered with its own class."""
    values = upload_metrics(image, probability, reference)
    return {**values, "answer": values["predicted_class"], "image": image}


def replay(images, probabilities, reference, drift_config, every):
    """Log each image as an upload; judge the last window every `every` uploads."""
    with tempfile.TemporaryDirectory() as folder, PredictionLog(Path(folder) / "log.sqlite") as log:
        reports = []
        for index, (image, probability) in enumerate(zip(images, probabilities), start=1):
            log.append(answered_by_cnn(image, probability, reference))
            if index % every == 0 and index >= drift_config.window_size:
                reports.append(detect_drift(log, reference, drift_config))
        assert log.count() == len(images)
    return reports


def detection_delay(clean, drifted, reference, drift_config, step=5, segments=5, max_drifted=300):
    """Uploads of a drifted stream, after a clean window, until the first alarm (None: never)."""
    delays = []
    size = drift_config.window_size
    segments = min(segments, len(clean[0]) // size, len(drifted[0]) // max_drifted)
    for segment in range(segments):
        images = np.concatenate([clean[0][segment * size:(segment + 1) * size], drifted[0][segment * max_drifted:][:max_drifted]])
        probabilities = np.concatenate([clean[1][segment * size:(segment + 1) * size], drifted[1][segment * max_drifted:][:max_drifted]])
        with tempfile.TemporaryDirectory() as folder, PredictionLog(Path(folder) / "log.sqlite") as log:
            delay = None
            for index, (image, probability) in enumerate(zip(images, probabilities), start=1):
                log.append(answered_by_cnn(image, probability, reference))
                if index > size and (index - size) % step == 0 and detect_drift(log, reference, drift_config).alarm:
                    delay = index - size
                    break
        delays.append(delay)
    return delays


def alarm_table(streams, reference, drift_config):
    print(f"\nreplay through a SQLite log, window {drift_config.window_size}, alarm when p < "
          f"{drift_config.alpha}/3 = {drift_config.alpha / 3:.4f} (Bonferroni)")
    print(f"{'stream':42s} {'uploads':>7s} {'windows':>7s} {'alarms':>7s}   median p: confidence / entropy / histogram distance")
    for name, (images, probabilities) in streams.items():
        started = time.perf_counter()
        reports = replay(images, probabilities, reference, drift_config, every=drift_config.window_size)
        p = {test: np.median([r.p_values[test] for r in reports]) for test in reports[0].p_values}
        print(f"{name:42s} {len(images):7d} {len(reports):7d} {np.mean([r.alarm for r in reports]):7.0%}   "
              f"{p['confidence']:.2g} / {p['entropy']:.2g} / {p['histogram_distance']:.2g}"
              f"   ({(time.perf_counter() - started) / len(images) * 1000:.2f} ms per upload incl. logging)", flush=True)


def main(limit, seed, data_dir=None):
    from pipeline.data_dir import resolve_data_dir

    data_dir = Path(resolve_data_dir(data_dir))
    path = model_path()
    print(f"model: {path.relative_to(ROOT)}")
    embedder = CachedEmbedder(path)
    config = DataConfig(data_dir=str(data_dir))
    preprocessing = config.preprocessing  # the data the model was trained on, uploads made alike
    dataset = prepare_dataset(config)
    rng = np.random.default_rng(seed)

    embeddings = {"val": embedder("val", dataset.x_val), "test": embedder("test", dataset.x_test)}
    # The stage reads only the class names and the input shape of the bundle it builds into.
    bundle = SimpleNamespace(class_names=dataset.class_names, monitoring_reference=None,
                             input_shape=(preprocessing.height, preprocessing.width, preprocessing.channels))
    started = time.perf_counter()
    stage = monitoring_stage.run(BuildContext(bundle, dataset, embeddings, CACHE, config, str(data_dir)))
    print(f"build stage: {time.perf_counter() - started:.1f} s; test-set false alarm rate "
          f"{stage['test_false_alarm_rate']} over {stage['test_windows']} windows; baseline medians {stage['baseline_median']}")
    reference = as_reference(CACHE / MONITORING_FILE)

    cifar = np.flatnonzero(dataset.y_test < len(CIFAR10_CLASSES))
    order = rng.permutation(len(dataset.x_test))
    cifar_order = rng.permutation(cifar)
    test_probabilities = embeddings["test"].probabilities
    streams = {
        "CIFAR-10 test (no drift)": (dataset.x_test[cifar_order], test_probabilities[cifar_order]),
        "our 13-class test (no drift)": (dataset.x_test[order], test_probabilities[order]),
    }
    archive = data_dir / "tiny-imagenet-subset.tgz"
    x_tiny, _ = load_tiny_imagenet_val(archive, other_tiny_imagenet_wnids(archive), preprocessing)
    x_tiny = x_tiny[rng.permutation(len(x_tiny))[:limit]]
    x_mnist = load_mnist(data_dir / "mnist", preprocessing)[0][:limit]
    x_cifar = dataset.x_test[cifar_order[:limit]]
    drifted = {  # name -> (cache key, images)
        "Tiny ImageNet, other classes": ("tiny-other", x_tiny),
        "MNIST digits": ("mnist", x_mnist),
        "CIFAR-10 darkened to 50%": ("dark50", np.round(x_cifar * 0.5).astype(np.uint8)),
        "CIFAR-10 darkened to 80%": ("dark80", np.round(x_cifar * 0.8).astype(np.uint8)),
    }
    for name, (key, images) in drifted.items():
        streams[name + " (drift)"] = (images, embedder(key, images).probabilities)

    drift_config = DriftConfig()
    alarm_table(streams, reference, drift_config)
    # A longer window (a busy day's uploads) has more power against subtle drift.
    alarm_table(streams, reference, DriftConfig(window_size=300))

    print("\ndetection delay: drifted uploads after 100 clean ones until the first alarm (judged every 5; None = not within 300)")
    clean = streams["CIFAR-10 test (no drift)"]
    for name in drifted:
        delays = detection_delay(clean, streams[name + " (drift)"], reference, drift_config)
        print(f"  {name:40s} {delays}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=3000, help="images per drifted stream")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="the development data folder (default $HONEST_DATA_DIR or ../shared/data)")
    arguments = parser.parse_args()
    main(arguments.limit, arguments.seed, arguments.data_dir)
