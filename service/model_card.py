"""The Model tab's text: what the bundle is and how well it does, from its metrics.json (and, for a
version the learning step made, its gate.json)."""

from bundle.files import read_json


def model_card_markdown(bundle):
    metrics = bundle.metrics or {}
    classifier = metrics.get("classifier", {})
    training = metrics.get("training", {})
    p = bundle.preprocessing
    lines = ["## The model"]
    if training:
        seconds = training.get("fit_seconds")
        lines.append(
            f"Preset **{training.get('preset')}**, {training.get('epochs_run')} epochs"
            + (f", trained in {seconds / 60:.1f} min on {training.get('machine')}" if seconds else "")
            + "."
        )
    if metrics.get("data") or bundle.manifest.get("data"):
        lines.append(f"Trained on {metrics.get('data') or bundle.manifest.get('data')}.")
    features = bundle.manifest.get("features", "the CNN's own penultimate layer")  # bundles before transfer presets
    lines.append(f"Features (for the OOD detector and the gallery): {features}.")
    jpeg = f", a JPEG round trip at quality {p.jpeg_quality} (as CIFAR-10's own files)" if p.jpeg_quality else ""
    lines.append(f"Input: {p.height}×{p.width}, {'RGB' if p.channels == 3 else 'grayscale'}, Lanczos resize{jpeg}, pixels scaled to [0, 1].")
    accuracy_rows = [
        ("CIFAR-10 test, 10-class accuracy", "cifar10_test_accuracy_10_class"),
        ("CIFAR-10 test, with all 13 classes allowed", "cifar10_test_accuracy_13_class"),
        ("Extra classes (Tiny ImageNet val)", "extra_classes_test_accuracy"),
    ]
    present = [(label, classifier[key]) for label, key in accuracy_rows if key in classifier]
    # Bundles built before "test_accuracy" existed only have the 13-class name for it.
    overall = classifier.get("test_accuracy", classifier.get("test_accuracy_13_class"))
    if overall is not None:
        present.append((f"All {len(bundle.class_names)} classes, whole test split", overall))
    if present:
        lines += ["", "| Test set | Accuracy |", "|---|---|"] + [f"| {label} | {value:.1%} |" for label, value in present]
    per_class = classifier.get("per_class", {})
    if per_class:
        lines += ["", "| Class | Precision | Recall | F1 |", "|---|---|---|---|"]
        for name in bundle.class_names:
            row = per_class.get(name)
            if row:
                lines.append(f"| {name.replace('_', ' ')} | {row['precision']:.2f} | {row['recall']:.2f} | {row['f1-score']:.2f} |")
    lines += _learning_lines(metrics.get("learning"), read_json(bundle.directory / "gate.json", None))
    lines += _answer_rule_lines(bundle.answer_rule)
    lines += _measured_lines(metrics.get("fallback", {}).get("measured"))
    lines += _ood_lines(metrics.get("ood", {}))
    lines += _error_lines(metrics.get("errors", {}), metrics.get("classifier", {}).get("test_images"))
    lines += _ladder_lines(bundle.directory / "reports" / "ladder.md")
    return "\n".join(lines)


def _learning_lines(learning, gate):
    """What a version made by the learning step (pipeline.learn) learnt from, and its gate's table."""
    if not learning:
        return []
    sources = {"visitor": "labels visitors gave", "fallback": "the ImageNet fallback's sure answers"}
    counts = "; ".join(f"{sum(by_class.values())} from {sources.get(source, source)} ("
                       + ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in by_class.items() if n) + ")"
                       for source, by_class in learning["learnt_from"].items())
    lines = ["", "## What this version learnt", (
        f"Version `{learning['version']}`, fine-tuned from `{learning['parent']}` on {counts}, all reviewed and accepted; "
        f"{sum(sum(c.values()) for c in learning['held_out'].values())} more were held out for the gate.")]
    if gate and gate.get("rows"):
        lines += ["", f"The gate ({'passed' if gate['passed'] else 'refused'}), both versions on the same pictures:", "",
                  "| | before | after |", "|---|---|---|"]
        lines += [f"| {row['what']} | {_share(row['champion'], row['row'])} | {_share(row['challenger'], row['row'])} |"
                  for row in gate["rows"]]
    return lines


def _share(value, row):
    if value is None:
        return "-"
    return f"{value:.3f}" if row.endswith("auroc") else f"{value:.1%}"


def _ladder_lines(path):
    """The model ladder report (python -m research.ladder), when the bundle has one."""
    if not path.exists():
        return []
    body = path.read_text().split("\n", 1)[-1]  # its own "# Model ladder" title is replaced by ours
    return ["", "## Model ladder: every preset on the same data", body]


def _measured_lines(measured):
    """How often the app answers and how often an answer is wrong, on pictures that tuned nothing."""
    if not measured:
        return []
    photos, thumbnails = measured["photos"], measured["thumbnails"]
    return ["", (
        f"On {photos['pictures_ours'] + photos['pictures_others']} full-size photos it never tuned on, the app answered "
        f"{photos['right_ours']:.1%} of the photos of our classes right and {photos['wrong_ours']:.1%} wrongly (the rest it "
        f"refused), and refused {photos['refused_others']:.1%} of the photos of other things. On CIFAR-10's test pictures "
        f"uploaded as they are (32 pixels) it answered {thumbnails['right']:.1%} right and {thumbnails['wrong']:.1%} wrongly, "
        f"and refused {thumbnails['refused_others']:.1%} of 32-pixel pictures of other things.")]


def _answer_rule_lines(rule):
    return ["", "## Who answers", (
        f"A photo: the CNN answers when it is at least {rule.cnn_confidence_threshold:.0%} sure and the OOD detector "
        f"accepts the picture; otherwise the ImageNet fallback answers when at least {rule.fallback_mass_threshold:.0%} of "
        f"its probability falls on one of our classes; otherwise the app refuses. A thumbnail no larger than the CNN's "
        f"input: the CNN alone, at {rule.thumbnail_cnn_threshold:.0%}. Static is refused by the noise gate first.")]


def _ood_lines(ood):
    table = ood.get("table")
    if not table:
        return []
    sets = [name for name, value in next(iter(table.values())).items() if isinstance(value, dict)]
    lines = ["", "## Refusing unknown pictures (OOD detection)"]
    if ood.get("chosen"):
        lines.append(f"Shipped detector: **{ood['chosen']}**. {ood.get('reason', '')}")
    header = [f"{name.replace('_', ' ')} AUROC / FPR@95" for name in sets] + ["test images refused"]
    lines += ["", "| Method | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for method, row in table.items():
        cells = [f"{row[name]['auroc']:.3f} / {row[name]['fpr_at_95_tpr']:.2f}" for name in sets]
        cells.append(f"{row.get('id_refusal_rate', float('nan')):.1%}")
        lines.append(f"| {method.replace('_', ' ')} | " + " | ".join(cells) + " |")
    by_group = table.get(ood.get("chosen"), {}).get("near_ood", {}).get("auroc_by_id_group", {})
    if {"cifar10_test", "extra_classes_test"} <= set(by_group):
        lines += ["", f"Near-OOD AUROC of the shipped detector against the CIFAR-10 test pictures alone: "
                      f"{by_group['cifar10_test']:.3f}; against the extra classes' test pictures alone: "
                      f"{by_group['extra_classes_test']:.3f}. Those are Tiny ImageNet pictures like the near-OOD set, "
                      "so the second figure measures content alone, not the look of the source."]
    gate = ood.get("noise_gate", {})
    if "threshold" in gate:
        refused = gate.get("refused", {}).get("id_test")
        lines += ["", f"Noise gate: a picture whose neighbouring pixels correlate less than {gate['threshold']:.2f} is refused "
                      f"as static before the CNN is asked (the least correlated training picture: {gate['natural_min']:.2f})"
                  + (f"; it refuses {refused:.2%} of the test pictures." if refused is not None else ".")]
    return lines


def _error_lines(errors, test_images):
    if "misclassified" not in errors:
        return []
    total = errors.get("test_images") or test_images
    share = f" ({errors['misclassified'] / total:.1%})" if total else ""
    lines = ["", "## Error analysis", f"{errors['misclassified']} of {total} test images are misclassified{share}."]
    kmeans, dbscan = errors.get("kmeans", {}), errors.get("dbscan", {})
    if kmeans.get("sizes"):
        lines += ["Grouped by K-Means on their penultimate features (the figures below show each group's most typical images):",
                  "", "| Group | Images | Most common confusions (true → predicted) |", "|---|---|---|"]
        for number, (size, pairs) in enumerate(zip(kmeans["sizes"], kmeans.get("top_pairs", [])), start=1):
            confusions = ", ".join(f"{p['true'].replace('_', ' ')} → {p['predicted'].replace('_', ' ')} ({p['count']})" for p in pairs[:2])
            lines.append(f"| {number} | {size} | {confusions} |")
    if dbscan.get("sizes"):
        lines += ["", f"DBSCAN finds {dbscan['clusters']} dense groups ({', '.join(map(str, dbscan['sizes']))} images) "
                      f"and leaves {dbscan.get('noise', 0)} errors in no group."]
    return lines
