"""The Monitor tab drawn from real uploads: what each plot's table, the gallery and the verdict show."""

import numpy as np

from bundle.labels import CLASS_NAMES
from monitoring import DashboardConfig, PredictionLog, metrics, render, upload_metrics
from monitoring.dashboard import ANSWER_COLUMNS, CONFIDENCE_COLUMNS, ENTROPY_COLUMNS, HISTOGRAM_COLUMNS

START = 1.7e9


def log_uploads(log, images, probabilities, reference, answered_by=lambda i: "cnn", spacing=600):
    """Log real uploads as the service does; a fallback answer is "dog", a refusal none."""
    for i, (image, probability) in enumerate(zip(images, probabilities)):
        values = upload_metrics(image, probability, reference)
        stage = answered_by(i)
        answer = {"cnn": values["predicted_class"], "fallback": "dog", "refused": None}[stage]
        log.append({**values, "image": image, "answered_by": stage, "answer": answer,
                    "ood": stage == "refused", "time": START + spacing * i})


def series(frame, column, name, value="entropy"):
    return frame[frame[column] == name][value].to_numpy()


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
        dashboard = render(log, reference)

    assert dashboard.uploads_logged == 120 and len(dashboard.frames) == 4
    for frame, columns in zip(dashboard.frames, (HISTOGRAM_COLUMNS, CONFIDENCE_COLUMNS, ENTROPY_COLUMNS, ANSWER_COLUMNS)):
        assert tuple(frame.columns) == columns

    # Colour histograms: one line per channel, the mean difference over the drift window (last 100).
    frame = dashboard.histogram_frame
    bins = reference.config.bins
    expected = expected_histogram_difference(images[20:], probabilities[20:], reference)
    for channel, name in enumerate(("red", "green", "blue")):
        np.testing.assert_allclose(series(frame, "channel", name, "difference"), expected[channel], atol=1e-5)
        np.testing.assert_allclose(series(frame, "channel", name, "intensity"), (np.arange(bins) + 0.5) * 256 / bins)

    # Confidence over time: a point per (time span, class) with uploads, its mean confidence and
    # the change from the class's validation mean.
    frame = dashboard.confidence_frame
    buckets = expected_buckets(START + 600 * np.arange(120))
    predicted, confidence = np.argmax(probabilities, axis=1), probabilities.max(axis=1)
    cells = sorted(set(zip(buckets, predicted)))
    assert len(frame) == len(cells) and frame["uploads"].sum() == 120
    width = max(600 * 119 / DashboardConfig().buckets, 60.0)
    for bucket, row in cells:
        name = reference.class_names[row]
        when = np.datetime64(int(round(START + width * bucket)), "s")
        shown = frame[(frame["class"] == name) & (frame["time"] == when)]
        chosen = (predicted == row) & (buckets == bucket)
        validation = reference.class_confidence[name]["mean"]
        assert len(shown) == 1 and shown["uploads"].iloc[0] == chosen.sum()
        np.testing.assert_allclose(shown[["confidence", "validation_mean", "change"]].to_numpy()[0],
                                   [confidence[chosen].mean(), validation, confidence[chosen].mean() - validation], atol=1e-5)

    # Entropy over time: the mean entropy of each time span's uploads, against the validation mean.
    frame = dashboard.entropy_frame
    entropies = metrics.intensity_entropies(images)
    means = [entropies[buckets == b].mean() for b in np.unique(buckets)]
    np.testing.assert_allclose(series(frame, "series", "uploads"), means, atol=1e-5)
    np.testing.assert_allclose(series(frame, "series", "validation mean"), reference.baseline["entropy"].mean())
    np.testing.assert_allclose(series(frame, "series", "validation 90%"), np.percentile(reference.baseline["entropy"], 90))
    assert set(frame["series"]) == {"uploads", "validation mean", "validation 10%", "validation 90%"}

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

    # The verdict: these are held-out test pictures, so no alarm, and what people were told is
    # counted, in the table and in the bar plot alike, most first.
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
    bars = dashboard.answers_frame
    assert dict(zip(bars["answer"], bars["uploads"])) == report.answers
    assert list(bars["uploads"]) == sorted(bars["uploads"], reverse=True)


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
    frame = dashboard.histogram_frame
    expected = expected_histogram_difference(dark, probabilities, reference)
    for channel, name in enumerate(("red", "green", "blue")):
        centres, difference = series(frame, "channel", name, "intensity"), series(frame, "channel", name, "difference")
        np.testing.assert_allclose(difference, expected[channel], atol=1e-5)
        bright = centres > 144
        assert np.all(difference[bright] <= 1e-9) and difference[bright].sum() < -0.2
        assert difference[~bright].sum() > 0.2
    # Halving the brightness halves the grey levels used: the entropy line falls below the validation mean.
    frame = dashboard.entropy_frame
    assert np.all(series(frame, "series", "uploads") < series(frame, "series", "validation mean")[0])


def test_empty_log_and_missing_reference_give_empty_tables(tmp_path, pictures):
    with PredictionLog(tmp_path / "log.sqlite") as log:
        dashboard = render(log, None)
        assert dashboard.drift_markdown == "**No uploads logged yet.**" and dashboard.last_uploads == []
        assert dashboard.uploads_logged == 0 and dashboard.drift_report is None
        for frame, columns in zip(dashboard.frames, (HISTOGRAM_COLUMNS, CONFIDENCE_COLUMNS, ENTROPY_COLUMNS, ANSWER_COLUMNS)):
            assert len(frame) == 0 and tuple(frame.columns) == columns
        image = pictures[0]
        values = upload_metrics(image, np.full(13, 1 / 13), None, CLASS_NAMES)
        log.append({**values, "image": image, "answer": values["predicted_class"], "time": START})
        dashboard = render(log, None)
    assert "No monitoring reference" in dashboard.drift_markdown and dashboard.drift_report is None
    assert dashboard.drift_markdown.startswith("1 uploads logged")
    assert len(dashboard.histogram_frame) == 0  # nothing to compare the colours with
    # Without a reference the over-time tables still show the one upload: its confidence, with no
    # validation mean to change from ...
    row = dashboard.confidence_frame.iloc[0]
    assert len(dashboard.confidence_frame) == 1 and row["class"] == "airplane" and row["uploads"] == 1
    np.testing.assert_allclose(row["confidence"], 1 / 13, atol=1e-6)
    assert np.isnan(row["validation_mean"]) and np.isnan(row["change"])
    assert row["time"] == np.datetime64(int(START), "s")
    # ... and its entropy, alone.
    assert list(dashboard.entropy_frame["series"]) == ["uploads"]
    np.testing.assert_allclose(dashboard.entropy_frame["entropy"], [metrics.intensity_entropy(image)], atol=1e-5)
    assert list(dashboard.answers_frame.itertuples(index=False, name=None)) == [("airplane", 1)]
    assert [caption for _, caption in dashboard.last_uploads] == [dashboard.last_uploads[0][1]]
    assert dashboard.last_uploads[0][1].startswith("#1 airplane · cnn (CNN: airplane 8%)")


def test_the_native_plots_take_the_tables(tmp_path, real_reference):
    """Gradio's plots accept every table as it comes: columns, types (time is temporal) and rows."""
    import gradio as gr

    reference, images, probabilities = real_reference
    with PredictionLog(tmp_path / "log.sqlite") as log:
        log_uploads(log, images[:40], probabilities[:40], reference)
        dashboard = render(log, reference)
    plots = (gr.LinePlot(x="intensity", y="difference", color="channel"), gr.ScatterPlot(x="time", y="change", color="class"),
             gr.LinePlot(x="time", y="entropy", color="series"), gr.BarPlot(x="answer", y="uploads"))
    for plot, frame in zip(plots, dashboard.frames):
        drawn = plot.postprocess(frame)
        assert drawn.columns == list(frame.columns) and len(drawn.data) == len(frame) > 0
    assert plots[1].postprocess(dashboard.confidence_frame).datatypes["time"] == "temporal"
