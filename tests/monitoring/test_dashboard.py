"""The Monitor tab drawn from real uploads: what each figure, the gallery and the verdict show."""

import io

import matplotlib
import numpy as np
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

matplotlib.use("Agg")
import matplotlib.pyplot as pyplot  # noqa: E402

from classifier.labels import CLASS_NAMES  # noqa: E402
from monitoring import DashboardConfig, PredictionLog, metrics, render, upload_metrics  # noqa: E402

START = 1.7e9


def log_uploads(log, images, probabilities, reference, answered_by=lambda i: "cnn", spacing=600):
    """Log real uploads as the service does; a fallback answer is "dog", a refusal none."""
    for i, (image, probability) in enumerate(zip(images, probabilities)):
        values = upload_metrics(image, probability, reference)
        stage = answered_by(i)
        answer = {"cnn": values["predicted_class"], "fallback": "dog", "refused": None}[stage]
        log.append({**values, "image": image, "answered_by": stage, "answer": answer,
                    "ood": stage == "refused", "time": START + spacing * i})


def line(axes, label):
    return next(drawn for drawn in axes.lines if drawn.get_label() == label)


def expected_histogram_difference(images, probabilities, reference):
    """Mean over uploads of (colour histogram - the CNN's class's training histogram), computed apart."""
    predicted = np.argmax(probabilities, axis=1)
    return (metrics.colour_histograms(images) - reference.class_histograms[predicted]).mean(axis=0)


def expected_buckets(times, buckets=DashboardConfig().buckets):
    """The time span each upload falls in: equal spans from the first upload to the last."""
    width = max((times.max() - times.min()) / buckets, 60.0)
    return np.minimum(((times - times.min()) / width).astype(int), buckets - 1)


def test_dashboard_shows_the_real_uploads(tmp_path, real_reference):
    reference, images, probabilities = real_reference
    images, probabilities = images[:120], probabilities[:120]
    stages = ("cnn", "fallback", "refused")
    with PredictionLog(tmp_path / "log.sqlite") as log:
        log_uploads(log, images, probabilities, reference, answered_by=lambda i: stages[i % 3])
        log.tag(120, "cat")
        figures_before = pyplot.get_fignums()
        dashboard = render(log, reference)

    assert dashboard.uploads_logged == 120 and len(dashboard.figures) == 3
    for figure in dashboard.figures:
        assert isinstance(figure, Figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        assert buffer.getvalue().startswith(b"\x89PNG")
    assert pyplot.get_fignums() == figures_before  # nothing left registered with pyplot to leak

    # Colour histograms: one line per channel, the mean difference over the drift window (last 100).
    axes = dashboard.histogram_figure.axes[0]
    expected = expected_histogram_difference(images[20:], probabilities[20:], reference)
    for channel, name in enumerate(("red", "green", "blue")):
        np.testing.assert_allclose(line(axes, name).get_ydata(), expected[channel], atol=1e-5)
    assert "last 100 uploads" in axes.get_title()

    # Confidence heat map: a row per class, each cell the class's mean confidence in that time span
    # minus its validation mean; blank where the class had no uploads.
    axes = dashboard.confidence_figure.axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == list(reference.class_names)
    mesh = next(child for child in axes.get_children() if isinstance(child, QuadMesh))
    shown = np.ma.masked_invalid(mesh.get_array()).reshape(13, -1)
    buckets = expected_buckets(START + 600 * np.arange(120))
    predicted, confidence = np.argmax(probabilities, axis=1), probabilities.max(axis=1)
    grid = np.full((13, DashboardConfig().buckets), np.nan)
    for row, bucket in set(zip(predicted, buckets)):
        chosen = (predicted == row) & (buckets == bucket)
        grid[row, bucket] = confidence[chosen].mean() - reference.class_confidence[reference.class_names[row]]["mean"]
    np.testing.assert_array_equal(np.ma.getmaskarray(shown), np.isnan(grid))
    np.testing.assert_allclose(shown.compressed(), grid[~np.isnan(grid)], atol=1e-5)

    # Entropy over time: the mean entropy of each time span's uploads, against the validation mean.
    axes = dashboard.entropy_figure.axes[0]
    entropies = metrics.intensity_entropies(images)
    means = [entropies[buckets == b].mean() for b in np.unique(buckets)]
    np.testing.assert_allclose(line(axes, "uploads").get_ydata(), means, atol=1e-5)
    np.testing.assert_allclose(line(axes, "validation mean").get_ydata(), reference.baseline["entropy"].mean())

    # The last uploads: ten, newest first, pixels kept, with what each was told and by whom.
    assert len(dashboard.last_uploads) == 10
    scale = DashboardConfig().gallery_scale
    for shown_upload, index in zip(dashboard.last_uploads, range(119, 109, -1)):
        np.testing.assert_array_equal(shown_upload[0][::scale, ::scale], images[index])
        assert shown_upload[1].startswith(f"#{index + 1} ")
    cnn_class = reference.class_names[predicted[119]]
    image, caption = dashboard.last_uploads[0]  # upload 120 was refused, then tagged
    assert caption.startswith(f"#120 refused (CNN: {cnn_class} ") and caption.endswith("UTC · tagged cat")
    assert dashboard.last_uploads[1][1].startswith("#119 dog · fallback (CNN: ")
    assert dashboard.last_uploads[2][1].startswith(f"#118 {reference.class_names[predicted[117]]} · cnn (CNN: ")

    # The verdict: these are held-out test pictures, so no alarm, and what people were told is counted.
    report = dashboard.drift_report
    assert report.judged and not report.alarm, report.message
    markdown = dashboard.drift_markdown
    assert report.message in markdown and "No drift" in markdown and "Drift alarm" not in markdown
    assert "120 uploads logged" in markdown
    told = [{"cnn": reference.class_names[predicted[i]], "fallback": "dog", "refused": "refused"}[stages[i % 3]]
            for i in range(20, 120)]
    assert report.answers == {name: told.count(name) for name in set(told)}
    refused = told.count("refused")
    assert f"| refused | {refused} |" in markdown and f"| dog | {told.count('dog')} |" in markdown
    assert report.refused_fraction == refused / 100 and f"refused: {refused}%" in markdown


def test_darkened_uploads_show_the_alarm_and_where_the_colours_went(tmp_path, real_reference, predict):
    reference, images, _ = real_reference
    dark = np.round(images[:100] * 0.5).astype(np.uint8)
    probabilities = predict(dark)
    with PredictionLog(tmp_path / "log.sqlite") as log:
        log_uploads(log, dark, probabilities, reference)
        dashboard = render(log, reference)

    report = dashboard.drift_report
    assert report.alarm and "Drift alarm" in dashboard.drift_markdown and "No drift" not in dashboard.drift_markdown
    assert report.message in dashboard.drift_markdown and "| intensity entropy |" in dashboard.drift_markdown
    # No darkened pixel is brighter than 128: every bin above is emptied, so the lines fall below
    # zero there, by the class's own share, and the lost share turns up in the dark bins.
    axes = dashboard.histogram_figure.axes[0]
    expected = expected_histogram_difference(dark, probabilities, reference)
    for channel, name in enumerate(("red", "green", "blue")):
        drawn = line(axes, name)
        centres, difference = np.asarray(drawn.get_xdata()), np.asarray(drawn.get_ydata())
        np.testing.assert_allclose(difference, expected[channel], atol=1e-5)
        bright = centres > 144
        assert np.all(difference[bright] <= 1e-9) and difference[bright].sum() < -0.2
        assert difference[~bright].sum() > 0.2
    # Halving the brightness halves the grey levels used: the entropy line falls below the validation mean.
    axes = dashboard.entropy_figure.axes[0]
    assert np.all(line(axes, "uploads").get_ydata() < line(axes, "validation mean").get_ydata()[0])


def texts(figure):
    return [text.get_text() for axes in figure.axes for text in axes.texts]


def test_empty_log_and_missing_reference_render_placeholders(tmp_path, pictures):
    with PredictionLog(tmp_path / "log.sqlite") as log:
        dashboard = render(log, None)
        assert dashboard.drift_markdown == "**No uploads logged yet.**" and dashboard.last_uploads == []
        assert dashboard.uploads_logged == 0 and dashboard.drift_report is None
        assert texts(dashboard.histogram_figure) == ["No monitoring reference"]
        assert texts(dashboard.confidence_figure) == texts(dashboard.entropy_figure) == ["No uploads logged yet"]
        image = pictures[0]
        values = upload_metrics(image, np.full(13, 1 / 13), None, CLASS_NAMES)
        log.append({**values, "image": image, "answer": values["predicted_class"], "time": START})
        dashboard = render(log, None)
    assert "No monitoring reference" in dashboard.drift_markdown and dashboard.drift_report is None
    assert dashboard.drift_markdown.startswith("1 uploads logged")
    assert texts(dashboard.histogram_figure) == ["No monitoring reference"]
    # Without a reference the over-time figures still show the one upload: its confidence, unshifted ...
    axes = dashboard.confidence_figure.axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["airplane"]
    mesh = next(child for child in axes.get_children() if isinstance(child, QuadMesh))
    np.testing.assert_allclose(np.ma.masked_invalid(mesh.get_array()).compressed(), [1 / 13], atol=1e-6)
    # ... and its entropy.
    np.testing.assert_allclose(line(dashboard.entropy_figure.axes[0], "uploads").get_ydata(),
                               [metrics.intensity_entropy(image)], atol=1e-5)
    assert [caption for _, caption in dashboard.last_uploads] == [dashboard.last_uploads[0][1]]
    assert dashboard.last_uploads[0][1].startswith("#1 airplane · cnn (CNN: airplane 8%)")
    for figure in dashboard.figures:
        figure.savefig(io.BytesIO(), format="png")
