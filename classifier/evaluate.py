"""Evaluation: test metrics and the figures the Model tab shows.

    metrics = evaluate(test_embedding, dataset, history, "assets")

writes figures/{confusion_matrix,curves,tsne,predictions}.png and returns the metrics dict
(test loss and accuracy, the 10-class CIFAR-10 accuracy, a per-class precision/recall/F1 report).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.figures import pyplot, save_figure
from bundle.labels import CIFAR10_CLASSES


@dataclass(frozen=True)
class EvaluationConfig:
    tsne_points: int = 2000
    grid_side: int = 10
    seed: int = 0


def evaluate(test, dataset, history, out_dir, config=EvaluationConfig()):
    """`test` is the Embedding of dataset.x_test; `history` the training history dict."""
    from sklearn.metrics import classification_report, confusion_matrix

    figures = Path(out_dir) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    names = list(dataset.class_names)
    y, probabilities = dataset.y_test, test.probabilities
    predicted = probabilities.argmax(axis=1)
    accuracy = float((predicted == y).mean())
    metrics = {
        "test_images": int(len(y)),
        "test_accuracy": accuracy,
        # The name the reports and benches of our 13-class bundle use.
        **({"test_accuracy_13_class": accuracy} if len(names) == 13 else {}),
        "test_loss": float(-np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-12, None)).mean()),
        **cifar10_accuracy(probabilities, y, names),
        "per_class": classification_report(y, predicted, target_names=names, output_dict=True, zero_division=0),
    }
    matrix = confusion_matrix(y, predicted, labels=range(len(names)))
    metrics["confusion_matrix"] = matrix.tolist()
    _plot_confusion(matrix, names, figures / "confusion_matrix.png")
    if history:
        _plot_curves(history, figures / "curves.png")
    if len(y) >= 4:  # t-SNE needs a perplexity below the number of points
        _plot_tsne(test.features, y, names, figures / "tsne.png", config)
    else:
        metrics["skipped"] = [f"t-SNE figure: {len(y)} test pictures are too few"]
    _plot_grid(dataset.x_test, y, predicted, probabilities, names, figures / "predictions.png", config)
    return metrics


def cifar10_accuracy(probabilities, y, names):
    """On the CIFAR-10 test images: accuracy with all 13 classes allowed, and the 10-class
    accuracy (argmax over CIFAR-10's classes only), comparable with published CIFAR-10 figures."""
    cifar = [names.index(name) for name in CIFAR10_CLASSES if name in names]
    if len(cifar) != len(CIFAR10_CLASSES):
        return {}
    mask = np.isin(y, cifar)
    restricted = np.array(cifar)[probabilities[mask][:, cifar].argmax(axis=1)]
    extra = ~mask
    out = {
        "cifar10_test_images": int(mask.sum()),
        "cifar10_test_accuracy_10_class": float((restricted == y[mask]).mean()),
        "cifar10_test_accuracy_13_class": float((probabilities[mask].argmax(axis=1) == y[mask]).mean()),
    }
    if extra.any():
        out["extra_classes_test_accuracy"] = float((probabilities[extra].argmax(axis=1) == y[extra]).mean())
    return out


def _plot_confusion(matrix, names, path):
    plt = pyplot()
    normalized = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(9, 8))
    axis.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if normalized[row, column] > 0.5 else "black"
        axis.text(column, row, str(count), ha="center", va="center", fontsize=7, color=colour)
    short = [name[:12] for name in names]
    axis.set_xticks(range(len(names)), short, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(range(len(names)), short, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("Confusion matrix (test split; colour = row share)")
    figure.tight_layout()
    save_figure(figure, path)


def _plot_curves(history, path):
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("accuracy", "loss")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                axis.plot(range(1, len(values) + 1), values, marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)


def _plot_tsne(features, y, names, path, config):
    from sklearn.manifold import TSNE

    plt = pyplot()
    rng = np.random.default_rng(config.seed)
    pick = rng.choice(len(y), min(config.tsne_points, len(y)), replace=False)
    points = TSNE(n_components=2, init="pca", random_state=config.seed, perplexity=min(30.0, (len(pick) - 1) / 3)).fit_transform(features[pick])
    figure, axis = plt.subplots(figsize=(9, 7))
    colours = plt.get_cmap("tab20")
    for index, name in enumerate(names):
        mask = y[pick] == index
        axis.scatter(points[mask, 0], points[mask, 1], s=5, color=colours(index), label=name)
    axis.legend(markerscale=3, fontsize=7, loc="best")
    axis.set_title(f"t-SNE of penultimate features ({len(pick)} test images)")
    axis.set_xticks([])
    axis.set_yticks([])
    figure.tight_layout()
    save_figure(figure, path)


def _plot_grid(x, y, predicted, probabilities, names, path, config):
    plt = pyplot()
    side = config.grid_side
    pick = np.random.default_rng(config.seed).choice(len(y), min(side * side, len(y)), replace=False)
    figure, axes = plt.subplots(side, side, figsize=(side * 1.3, side * 1.45))
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, pick):
        image = x[index]
        axis.imshow(image[:, :, 0] if image.shape[-1] == 1 else image, cmap="gray")
        right = predicted[index] == y[index]
        axis.set_title(
            f"{names[predicted[index]][:10]} {probabilities[index].max():.0%}",
            fontsize=6, color="green" if right else "red",
        )
    figure.suptitle("Test predictions (green = right, red = wrong)")
    figure.tight_layout()
    save_figure(figure, path)
