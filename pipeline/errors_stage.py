"""Error analysis: where the CNN goes wrong, and what its convolutions see.

    metrics = run(context)                                  # as a build stage (pipeline.build)
    python -m pipeline.errors_stage --assets assets         # regenerate for an existing bundle

Writes out_dir/figures/errors_kmeans.png and errors_dbscan.png (the misclassified test images,
clustered by their penultimate features: one row per cluster, DBSCAN's noise as the last row),
activations.png (feature maps of one test image) and filters.png (the first convolution's
kernels); returns the numbers behind them for metrics.json["errors"].
"""

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bundle.atomic import write_json_atomic
from classifier.figures import pyplot, save_figure
from bundle.images import to_float


@dataclass(frozen=True)
class ErrorAnalysisConfig:
    # Not whitened: whitening inflates the low-variance directions, which are mostly noise here;
    # on the shipped bundle it halves the K-Means silhouette (0.15 -> 0.07).
    pca_components: int = 20
    kmeans_clusters: int = 6
    # Most errors form one continuous cloud; DBSCAN is there to find the tight pockets of one
    # consistent confusion (truck -> automobile, bird -> airplane). A low quantile of the
    # min_samples-nearest-neighbour distance keeps eps at the scale of those pockets; at the median
    # one cluster swallows 80% of the errors.
    dbscan_min_samples: int = 10
    dbscan_eps_quantile: float = 0.1
    images_per_cluster: int = 10
    max_cluster_rows: int = 8  # DBSCAN can find many small clusters; the largest are drawn
    top_pairs: int = 3
    activation_layers: tuple = ()  # () = the first Conv2D at each spatial resolution
    max_activation_layers: int = 4
    activation_channels: int = 16
    activation_image: int = 0  # index into the test split
    max_filters: int = 64
    dpi: int = 90
    seed: int = 0


def run(context, config=ErrorAnalysisConfig()):
    """Cluster the misclassified test images, draw the layers. Returns a JSON-able metrics dict."""
    return analyse(context.keras_model(), context.dataset, context.embeddings["test"], context.out_dir, config)


def analyse(model, dataset, test_embedding, out_dir, config=ErrorAnalysisConfig()):
    """`test_embedding` is the Embedding of dataset.x_test; `model` the Keras CNN whose layers are
    drawn; figures go to out_dir/figures."""
    embeddings = {"test": test_embedding}
    figures = Path(out_dir) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    names = list(dataset.class_names)
    y = np.asarray(dataset.y_test)
    predicted = embeddings["test"].probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y)
    pairs = list(zip(y[wrong].tolist(), predicted[wrong].tolist()))

    points, explained = project(embeddings["test"].features[wrong], config)
    kmeans_labels, silhouette = kmeans_clusters(points, config)
    dbscan_labels, eps, min_samples = dbscan_clusters(points, config)
    kmeans = describe(kmeans_labels, points, pairs, names, config)
    dbscan = describe(dbscan_labels, points, pairs, names, config)
    images = dataset.x_test[wrong]
    plot_clusters(kmeans, images, pairs, names, figures / "errors_kmeans.png", config,
                  f"K-Means ({len(kmeans)} clusters) on PCA of the features of {len(wrong)} misclassified test images")
    noise = "; last row: noise (in no cluster)" if np.any(dbscan_labels < 0) else ""
    plot_clusters(dbscan, images, pairs, names, figures / "errors_dbscan.png", config,
                  f"DBSCAN (eps {eps or 0:.3f}, min_samples {min_samples}) on the same points{noise}")

    index = min(max(config.activation_image, 0), len(y) - 1)
    layers = config.activation_layers or default_activation_layers(model, config.max_activation_layers)
    caption = f"test image {index}: true {names[y[index]]}, predicted {names[predicted[index]]}"
    plot_activations(model, layers, dataset.x_test[index], caption, figures / "activations.png", config)
    filter_layer = plot_filters(model, figures / "filters.png", config)

    return {
        "test_images": int(len(y)), "misclassified": int(len(wrong)),
        "pca_components": None if explained is None else int(points.shape[1]), "pca_explained_variance": explained,
        "kmeans": {**summary(kmeans), "silhouette": silhouette},
        "dbscan": {**summary(dbscan), "eps": eps, "min_samples": min_samples,
                   "eps_quantile": config.dbscan_eps_quantile},
        "activation_image": int(index), "activation_layers": list(layers), "filters_layer": filter_layer,
    }


# ---------------------------------------------------------------- clustering


def project(features, config):
    """PCA of the penultimate features, and the share of their variance it keeps."""
    from sklearn.decomposition import PCA

    components = min(config.pca_components, len(features) - 1, features.shape[1])
    if components < 1:  # zero or one misclassified image: nothing to project
        return features, None
    pca = PCA(components, random_state=config.seed).fit(features)
    return pca.transform(features), float(pca.explained_variance_ratio_.sum())


def kmeans_clusters(points, config):
    """Labels, and the silhouette when it is defined (2 to n - 1 distinct clusters)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    clusters = min(config.kmeans_clusters, len(points))
    if clusters < 1:
        return np.zeros(0, dtype=int), None
    labels = KMeans(clusters, n_init=10, random_state=config.seed).fit_predict(points)
    if not 2 <= len(set(labels.tolist())) <= len(points) - 1:
        return labels, None
    # Quadratic in the number of points: a sample keeps it cheap for a weak model's many errors.
    sample = min(len(points), 3000)
    return labels, float(silhouette_score(points, labels, sample_size=sample, random_state=config.seed))


def dbscan_clusters(points, config):
    """Labels (-1 = noise), the eps chosen from the data (see ErrorAnalysisConfig) and the
    min_samples used (fewer than asked when there are fewer points)."""
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    if len(points) == 0:
        return np.zeros(0, dtype=int), None, 0
    neighbours = min(config.dbscan_min_samples, len(points))
    # The point itself is its first neighbour, as DBSCAN counts it among min_samples.
    distances, _ = NearestNeighbors(n_neighbors=neighbours).fit(points).kneighbors(points)
    eps = max(float(np.quantile(distances[:, -1], config.dbscan_eps_quantile)), 1e-9)
    return DBSCAN(eps=eps, min_samples=neighbours).fit_predict(points), eps, neighbours


def describe(labels, points, pairs, names, config):
    """Clusters, largest first (noise last), each with its members ordered from the most typical
    (nearest its mean) and its most common true -> predicted pairs."""
    clusters = []
    for label in sorted(set(labels.tolist()), key=lambda l: (l < 0, -np.sum(labels == l))):
        members = np.flatnonzero(labels == label)
        spread = np.linalg.norm(points[members] - points[members].mean(axis=0), axis=1)
        counts = Counter(pairs[m] for m in members).most_common(config.top_pairs)
        clusters.append({
            "label": int(label), "size": int(len(members)), "members": members[np.argsort(spread, kind="stable")],
            "top_pairs": [{"true": names[t], "predicted": names[p], "count": n} for (t, p), n in counts],
        })
    return clusters


def summary(clusters):
    """Cluster count and sizes (largest first), points in no cluster, top pairs per cluster."""
    real = [c for c in clusters if c["label"] >= 0]
    return {"clusters": len(real), "sizes": [c["size"] for c in real], "noise": sum(c["size"] for c in clusters if c["label"] < 0),
            "top_pairs": [c["top_pairs"] for c in real]}


# ---------------------------------------------------------------- figures


def plot_clusters(clusters, images, pairs, names, path, config, title):
    if not clusters:
        return _message(path, "No misclassified test images: nothing to cluster.", config)
    real = [c for c in clusters if c["label"] >= 0]
    shown = real[: config.max_cluster_rows] + [c for c in clusters if c["label"] < 0]
    figure, axes = _grid(len(shown), config.images_per_cluster, 0.95, 1.2, label_width=2.2)
    # Numbered by size (1 = largest), not by the estimator's arbitrary label order.
    for number, (row, cluster) in enumerate(zip(axes, shown), start=1):
        name = "noise" if cluster["label"] < 0 else f"cluster {number}"
        top = "\n".join(f"{_short(p['true'])}→{_short(p['predicted'])} ×{p['count']}" for p in cluster["top_pairs"][:2])
        _label(row[0], f"{name}: {cluster['size']} images\n{top}")
        for axis, member in zip(row[1:], cluster["members"]):
            _show(axis, images[member])
            true, guess = pairs[member]
            axis.set_title(f"{_short(names[true])}\n→{_short(names[guess])}", fontsize=6, pad=2)
    if len(real) > config.max_cluster_rows:
        title += f" (the {config.max_cluster_rows} largest of {len(real)} clusters shown)"
    _save(figure, title, path, config)


def default_activation_layers(model, limit=4):
    """The first Conv2D at each spatial resolution (the first one, then the first after each
    pooling), evenly thinned to `limit`: one view per scale the network works at."""
    import keras

    chosen, after_pooling = [], True
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and after_pooling:
            chosen.append(layer.name)
            after_pooling = False
        elif isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
            after_pooling = True
    if len(chosen) > limit:
        chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, limit).round().astype(int)]
    return tuple(chosen)


def plot_activations(model, layer_names, image, caption, path, config):
    import keras

    if not layer_names:
        return _message(path, "This model has no Conv2D layer to show.", config)
    # A sub-model over the trained layers: the random augmentation layers are inactive at inference.
    extractor = keras.Model(model.inputs[0], [model.get_layer(name).output for name in layer_names])
    outputs = extractor.predict_on_batch(to_float(image[None]))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    figure, axes = _grid(1 + len(layer_names), config.activation_channels, 0.75, 0.85, label_width=1.6)
    _label(axes[0, 0], "input")
    _show(axes[0, 1], image)
    for row, name, output in zip(axes[1:], layer_names, outputs):
        maps = np.asarray(output, dtype=np.float32)[0]  # mixed-precision models give bfloat16, which matplotlib cannot draw
        _label(row[0], f"{name}\n{maps.shape[0]}×{maps.shape[1]}×{maps.shape[2]}")
        for channel, axis in enumerate(row[1:1 + maps.shape[-1]]):
            axis.imshow(maps[:, :, channel], cmap="viridis", interpolation="nearest")
    title = f"Feature maps, first {config.activation_channels} channels of each layer (each map on its own colour scale); {caption}"
    _save(figure, title, path, config)


def plot_filters(model, path, config):
    """The first convolution's kernels, each stretched to its own range: they act on normalised
    pixels, so only their pattern and colour balance mean anything. Returns the layer's name."""
    import keras

    first = next((layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)), None)
    if first is None:
        _message(path, "This model has no Conv2D layer to show.", config)
        return None
    kernel = keras.ops.convert_to_numpy(first.kernel)  # (height, width, inputs, filters)
    height, width, inputs, count = kernel.shape
    shown = min(count, config.max_filters)
    columns = min(shown, 12)
    figure, axes = _grid(-(-shown // columns), columns, 0.9, 0.95)
    for index, axis in enumerate(axes.flat[:shown]):
        weights = kernel[:, :, :, index]
        # RGB kernels as colour; any other input depth as the mean over its channels.
        weights = weights if inputs == 3 else weights.mean(axis=2)
        weights = (weights - weights.min()) / max(float(weights.max() - weights.min()), 1e-12)
        axis.imshow(weights, cmap="gray", interpolation="nearest", vmin=0, vmax=1)
        axis.set_axis_on()  # a frame, so that white kernel pixels do not melt into the page
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title(str(index), fontsize=6, pad=1)
    kind = "RGB" if inputs == 3 else ("grayscale" if inputs == 1 else f"mean of {inputs} channels")
    _save(figure, f"First convolution '{first.name}': {shown} of {count} filters, {height}×{width} {kind}, each on its own scale",
          path, config)
    return first.name


def _grid(rows, columns, cell_width, cell_height, label_width=0.0):
    """A figure of image cells with every axis off, and a text column first when label_width."""
    ratios = ([label_width] if label_width else []) + [1] * columns
    figure, axes = pyplot().subplots(rows, len(ratios), squeeze=False, gridspec_kw={"width_ratios": ratios},
                                      figsize=(label_width + cell_width * columns, 0.4 + cell_height * rows))
    for axis in axes.flat:
        axis.axis("off")
    return figure, axes


def _label(axis, text):
    axis.text(0, 0.5, text, fontsize=8, va="center", transform=axis.transAxes)


def _save(figure, title, path, config):
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path, dpi=config.dpi)


def _show(axis, image):
    axis.imshow(image[:, :, 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")


def _short(name, length=10):
    return name if len(name) <= length else name[: length - 1] + "…"


def _message(path, text, config):
    figure, axes = _grid(1, 1, 6, 0.8)
    axes[0, 0].text(0.5, 0.5, text, ha="center", va="center", fontsize=10)
    _save(figure, "", path, config)


# ---------------------------------------------------------------- regenerating for a bundle folder


def regenerate(bundle_dir="assets", config=ErrorAnalysisConfig()):
    """Rebuild the bundle's test split, draw the figures into it, update its metrics.json."""
    import keras

    from bundle.files import MODEL_FILE
    from classifier.dataset import prepare_dataset
    from pipeline.bundle_files import recorded_data_config
    from service.bundle import Bundle

    bundle = Bundle.load(bundle_dir, with_fallback=False)
    model = keras.saving.load_model(bundle.directory / MODEL_FILE, compile=False)
    dataset = prepare_dataset(recorded_data_config(bundle.directory))
    if tuple(dataset.class_names) != tuple(bundle.class_names):
        raise ValueError(f"The rebuilt data has classes {dataset.class_names}, the bundle {bundle.class_names}.")
    metrics = analyse(model, dataset, bundle.embed(dataset.x_test), bundle.directory, config)
    metrics_path = bundle.directory / "metrics.json"
    stored = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    stored["errors"] = metrics
    write_json_atomic(metrics_path, stored)
    return metrics


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate a bundle's error-analysis figures and metrics.")
    parser.add_argument("--assets", default="assets", help="bundle folder")
    arguments = parser.parse_args()
    result = regenerate(arguments.assets)
    print(f"{result['misclassified']} of {result['test_images']} test images misclassified; "
          f"K-Means cluster sizes {result['kmeans']['sizes']}, DBSCAN {result['dbscan']['sizes']} "
          f"+ {result['dbscan']['noise']} noise; figures in {Path(arguments.assets) / 'figures'}")
