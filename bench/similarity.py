"""Gallery benchmark: query latency and nearest-neighbour class agreement, cosine vs raw pixels.

    python -m bench.similarity                  # model: assets/model.keras, else newest runs/*/checkpoint.keras
    python -m bench.similarity --model runs/fastnet-x/model.keras --queries 2000 --data-dir ../shared/data

Prints:
- latency of one query (k=4) over all 13 classes and restricted to the upload's top-4 classes,
  and of gallery_for (what the app calls), median and p95 in ms;
- nearest-neighbour class agreement on the test split (the nearest gallery image's class equals
  the true class) for cosine on CNN features and for the seed's raw-pixel L1;
- how often the true class is among the 4 pictures shown, per gallery_for mode;
- agreement against gallery size, which is how the size was chosen.
Embeddings are cached in .cache/similarity/ per model file.
"""

import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from classifier.dataset import DataConfig, prepare_dataset
from pipeline.gallery_stage import GalleryConfig, nearest_class_agreement
from bundle.arrays import balanced_sample
from similarity.gallery import gallery_for
from similarity.index import NearestTrainingImages

CACHE_DIR = Path(".cache/similarity")
SIZES = (50, 100, 200, 300, 500)


def find_model(path=None):
    if path:
        return Path(path)
    if Path("assets/model.keras").exists():
        return Path("assets/model.keras")
    checkpoints = sorted(Path("runs").glob("*/checkpoint.keras"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise SystemExit("No model: build assets/ (python -m pipeline.build) or train one into runs/.")
    return checkpoints[-1]


def embeddings(model_path, dataset, pool_rows):
    """Features and probabilities of the gallery pool and of the whole test split, cached."""
    stat = model_path.stat()
    key = f"{model_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{len(pool_rows)}:{pool_rows.sum()}:{len(dataset.y_test)}"
    path = CACHE_DIR / f"embeddings-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as cached:
            return {name: cached[name] for name in cached.files}
    import keras

    from bundle.embedding import embed
    from classifier.export import keras_outputs

    extractor = keras_outputs(keras.saving.load_model(model_path, compile=False))
    pool, test = embed(extractor, dataset.x_train[pool_rows]), embed(extractor, dataset.x_test)
    arrays = {"pool_features": pool.features, "test_features": test.features, "test_probabilities": test.probabilities}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def latency(function, queries):
    """Median and p95 in ms of one call per query, after a warm-up call."""
    function(queries[0])
    times = []
    for query in queries:
        started = time.perf_counter()
        function(query)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def shown_rate(gallery, probabilities, queries, labels, mode):
    """How often the true class is among the 4 pictures gallery_for shows."""
    hits = [
        any(n.label == label for n in gallery_for(gallery, p, q, mode=mode))
        for p, q, label in zip(probabilities, queries, labels)
    ]
    return float(np.mean(hits))


def main(model_path=None, queries=1000, seed=0, data_dir=None):
    from pipeline.data_dir import resolve_data_dir

    config = GalleryConfig()
    model_path = find_model(model_path)
    dataset = prepare_dataset(DataConfig(data_dir=resolve_data_dir(data_dir)))
    eligible = ~dataset.train_augmented
    pool_rows = balanced_sample(dataset.y_train, max(SIZES), eligible, config.seed)
    arrays = embeddings(model_path, dataset, pool_rows)
    print(f"model: {model_path}; gallery pool {len(pool_rows)} real training images; test split {len(dataset.y_test)} images")

    def fitted(per_class, metric="cosine"):
        rows = balanced_sample(dataset.y_train, per_class, eligible, config.seed)
        at = np.searchsorted(pool_rows, rows)  # a smaller sample is a subset of the pool
        x = arrays["pool_features"][at] if metric == "cosine" else dataset.x_train[rows]
        return NearestTrainingImages(metric, class_names=dataset.class_names).fit(x, dataset.y_train[rows], dataset.x_train[rows])

    gallery = fitted(config.per_class)
    with tempfile.TemporaryDirectory() as folder:
        gallery = NearestTrainingImages.load(gallery.save(Path(folder) / "gallery.npz"))
        size = (Path(folder) / "gallery.npz").stat().st_size
    pixels = fitted(config.per_class, "l1-pixels")
    print(f"gallery: {len(gallery.labels_)} images ({config.per_class} per class), gallery.npz {size / 1e6:.1f} MB")

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset.y_test), size=min(queries, len(dataset.y_test)), replace=False)
    features, probabilities = arrays["test_features"], arrays["test_probabilities"]
    top4 = np.argsort(-probabilities, axis=1)[:, :4]
    pixel_picks = picks[: max(50, len(picks) // 5)]
    print("\nlatency of one query, k=4 (median / p95 ms):")
    rows = [
        ("cosine, 13 classes", lambda i: gallery.query(features[i], k=4), picks),
        ("cosine, top-4 classes", lambda i: gallery.query(features[i], classes=top4[i], k=4), picks),
        ("gallery_for per_class (app)", lambda i: gallery_for(gallery, probabilities[i], features[i]), picks),
        ("gallery_for nearest", lambda i: gallery_for(gallery, probabilities[i], features[i], mode="nearest"), picks),
        ("l1-pixels, 13 classes", lambda i: pixels.query(dataset.x_test[i], k=4), pixel_picks),
        ("l1-pixels, top-4 classes", lambda i: pixels.query(dataset.x_test[i], classes=top4[i], k=4), pixel_picks),
    ]
    for name, function, chosen in rows:
        median, p95 = latency(function, chosen)
        print(f"  {name:30s} {median:7.3f} / {p95:7.3f}   ({len(chosen)} queries)")

    subset = balanced_sample(dataset.y_test, config.pixel_test_per_class, seed=config.seed)
    y_test = dataset.y_test
    print("\nnearest-neighbour class agreement on the test split:")
    print(f"  cosine on CNN features, all {len(y_test)} test images: {nearest_class_agreement(gallery, features, y_test):.4f}")
    print(f"  cosine on CNN features, {len(subset)} balanced test images: "
          f"{nearest_class_agreement(gallery, features[subset], y_test[subset]):.4f}")
    print(f"  raw-pixel L1, same {len(subset)} test images: "
          f"{nearest_class_agreement(pixels, dataset.x_test[subset], y_test[subset]):.4f}")
    print(f"  (model's own top-1 accuracy on all test images: {np.mean(np.argmax(probabilities, 1) == y_test):.4f})")

    print(f"\ntrue class among the 4 pictures shown ({len(subset)} balanced test images):")
    for mode in ("per_class", "nearest"):
        print(f"  gallery_for mode={mode:10s} {shown_rate(gallery, probabilities[subset], features[subset], y_test[subset], mode):.4f}")
    print(f"  raw-pixel L1, 4 nearest of 13 classes: "
          f"{np.mean([np.isin(y, pixels.labels_[pixels.query(dataset.x_test[i], k=4)[0]]) for i, y in zip(subset, y_test[subset])]):.4f}")

    print("\ncosine agreement (all test images) against gallery size:")
    for per_class in SIZES:
        print(f"  {per_class:4d} per class ({per_class * len(dataset.class_names):5d} images): "
              f"{nearest_class_agreement(fitted(per_class), features, y_test):.4f}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a .keras model (default: assets/, else the newest checkpoint)")
    parser.add_argument("--queries", type=int, default=1000, help="queries timed per cosine row (L1 rows: a fifth)")
    parser.add_argument("--data-dir", default=None, help="the development data folder (default $HONEST_DATA_DIR or ../shared/data)")
    args = parser.parse_args()
    main(args.model, args.queries, data_dir=args.data_dir)
