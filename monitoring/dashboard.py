"""The Monitor tab's data: tables for the plots, the last uploads and the drift verdict, drawn from
the prediction log. No Gradio here: app.py shows the tables with gr.LinePlot, gr.ScatterPlot and
gr.BarPlot, which draw them in the browser, interactive.

    dashboard = render(log, reference)
    dashboard.histogram_frame   # intensity, channel, difference           -> gr.LinePlot
    dashboard.confidence_frame  # time, class, confidence, change, ...     -> gr.ScatterPlot
    dashboard.entropy_frame     # time, series, entropy                    -> gr.LinePlot
    dashboard.answers_frame     # answer, uploads                          -> gr.BarPlot
    dashboard.last_uploads      # [(image, caption)] for gr.Gallery
    dashboard.drift_markdown    # gr.Markdown

Only what is shown is read: the drift window (100 rows), the last uploads, and per-class means over
time aggregated in SQL, so a large log renders as fast as a small one. Times are naive UTC
datetimes, so that the browser's axis labels them in UTC whatever the server's zone.
"""

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from monitoring.drift import DriftConfig, detect_drift, window_of
from monitoring.reference import as_reference

CHANNEL_NAMES = {3: ("red", "green", "blue"), 1: ("gray",)}
REFUSED = "refused"
HISTOGRAM_COLUMNS = ("intensity", "channel", "difference")
CONFIDENCE_COLUMNS = ("time", "class", "confidence", "validation_mean", "change", "uploads")
ENTROPY_COLUMNS = ("time", "series", "entropy")
ANSWER_COLUMNS = ("answer", "uploads")


@dataclass(frozen=True)
class DashboardConfig:
    recent_uploads: int = 10
    history: int = 50_000  # uploads the over-time plots cover
    buckets: int = 60  # time spans they are averaged over
    gallery_scale: int = 4  # thumbnails are enlarged (nearest neighbour) so browsers show pixels, not blur
    drift: DriftConfig = field(default_factory=DriftConfig)


@dataclass
class Dashboard:
    histogram_frame: object  # pandas.DataFrame, columns HISTOGRAM_COLUMNS
    confidence_frame: object  # CONFIDENCE_COLUMNS
    entropy_frame: object  # ENTROPY_COLUMNS
    answers_frame: object  # ANSWER_COLUMNS
    last_uploads: list  # (uint8 image, caption), newest first
    drift_markdown: str
    drift_report: object = None  # monitoring.drift.DriftReport, or None without a reference
    uploads_logged: int = 0

    @property
    def frames(self):
        return (self.histogram_frame, self.confidence_frame, self.entropy_frame, self.answers_frame)


def render(log, reference, config=DashboardConfig(), now=None):
    reference = as_reference(reference)
    total = log.count()
    window = window_of(log, config.drift, now, histograms=True)
    starts, timeline = log.timeline(config.buckets, config.history)
    report = detect_drift(window, reference, config.drift) if reference is not None else None
    return Dashboard(
        histogram_frame=histogram_difference_frame(window, reference),
        confidence_frame=confidence_frame(starts, timeline, reference),
        entropy_frame=entropy_frame(starts, timeline, reference),
        answers_frame=answers_frame(window),
        last_uploads=last_uploads(log, config),
        drift_markdown=drift_markdown(report, total, window),
        drift_report=report,
        uploads_logged=total,
    )


def histogram_difference_frame(window, reference):
    """Mean of (upload's colour histogram - its predicted class's training histogram) over the
    drift window, per channel and intensity bin. Empty without a reference or histograms."""
    histograms = window.get("colour_histogram", np.zeros((0, 0)))
    if reference is None or histograms.size == 0:
        return _frame(HISTOGRAM_COLUMNS)
    bins = reference.config.bins
    index = {name: i for i, name in enumerate(reference.class_names)}
    classes = np.array([index.get(name, -1) for name in window["predicted_class"]])
    usable = (classes >= 0) & np.isfinite(histograms).all(axis=1) & (histograms.shape[1] == reference.class_histograms[0].size)
    if not usable.any():
        return _frame(HISTOGRAM_COLUMNS)
    channels = reference.class_histograms.shape[1]
    difference = (histograms[usable].reshape(-1, channels, bins) - reference.class_histograms[classes[usable]]).mean(axis=0)
    centres = (np.arange(bins) + 0.5) * 256 / bins
    return _frame(HISTOGRAM_COLUMNS, {
        "intensity": np.tile(centres, channels),
        "channel": np.repeat(CHANNEL_NAMES[channels], bins),
        "difference": difference.reshape(-1),
    })


def confidence_frame(starts, timeline, reference):
    """One row per (time span, predicted class) with uploads: the CNN's mean confidence, the
    class's validation mean and the change from it (negative: the model is less sure than it was
    on validation pictures; NaN without a reference)."""
    if len(timeline["class"]) == 0:
        return _frame(CONFIDENCE_COLUMNS)
    baselines = {} if reference is None else reference.class_confidence
    validation = np.array([(baselines.get(name) or {}).get("mean", np.nan) for name in timeline["class"]], dtype=float)
    validation[~np.isfinite(validation)] = np.nan
    confidence = np.asarray(timeline["confidence"], dtype=float)
    return _frame(CONFIDENCE_COLUMNS, {
        "time": _dates(starts[timeline["bucket"]]), "class": np.asarray(timeline["class"], dtype=object),
        "confidence": confidence, "validation_mean": validation, "change": confidence - validation,
        "uploads": np.asarray(timeline["count"], dtype=int),
    })


def entropy_frame(starts, timeline, reference):
    """Mean intensity entropy of all uploads per time span ("uploads"), and, with a reference, the
    validation mean and its 10th and 90th percentiles as flat lines over the same span: the plotted
    points are means, so the line to compare them with is the validation mean."""
    if len(timeline["class"]) == 0:
        return _frame(ENTROPY_COLUMNS)
    counts = np.bincount(timeline["bucket"], weights=timeline["count"], minlength=len(starts))
    sums = np.bincount(timeline["bucket"], weights=timeline["entropy"] * timeline["count"], minlength=len(starts))
    filled = counts > 0
    times, series, values = [starts[filled]], [["uploads"] * int(filled.sum())], [sums[filled] / counts[filled]]
    if reference is not None:
        width = starts[1] - starts[0] if len(starts) > 1 else 60.0
        span = np.array([starts[0], starts[-1] + width])
        baseline = np.asarray(reference.baseline["entropy"], dtype=float)
        low, high = np.percentile(baseline, [10, 90])
        for name, value in (("validation mean", baseline.mean()), ("validation 10%", low), ("validation 90%", high)):
            times.append(span)
            series.append([name, name])
            values.append(np.full(2, value))
    return _frame(ENTROPY_COLUMNS, {"time": _dates(np.concatenate(times)), "series": np.concatenate(series).astype(object),
                                    "entropy": np.concatenate(values)})


def answers_frame(window):
    """What the drift window's uploads were told: one row per class (or "refused"), most first."""
    answers = [REFUSED if answer is None else str(answer) for answer in window.get("answer", [])]
    names, counts = np.unique(np.array(answers, dtype=object), return_counts=True) if answers else ([], [])
    order = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))
    return _frame(ANSWER_COLUMNS, {"answer": np.array([names[i] for i in order], dtype=object),
                                   "uploads": np.array([counts[i] for i in order], dtype=int)})


def last_uploads(log, config=DashboardConfig()):
    """[(image, caption)] of the newest uploads, for a gr.Gallery."""
    gallery = []
    for upload in log.recent(config.recent_uploads):
        image = upload["image"]
        if image is None:
            continue
        image = np.repeat(np.repeat(image, config.gallery_scale, axis=0), config.gallery_scale, axis=1)
        when = datetime.fromtimestamp(upload["time"], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        tag = f" · tagged {upload['tag']}" if upload["tag"] else ""
        cnn = f"CNN: {upload['predicted_class']} {upload['confidence']:.0%}"
        told = REFUSED if upload["answer"] is None else f"{upload['answer']} · {upload['answered_by']}"
        caption = f"#{upload['id']} {told} ({cnn}) · {when}{tag}"
        gallery.append((image, caption))
    return gallery


def drift_markdown(report, total, window):
    if total == 0:
        return "**No uploads logged yet.**"
    if report is None:
        return f"{total:,} uploads logged. No monitoring reference in this bundle, so drift cannot be judged."
    when = datetime.fromtimestamp(float(np.max(window["time"])), timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if len(window["time"]) else "-"
    return f"{report.to_markdown()}\n\n{total:,} uploads logged; the last at {when}."


def _frame(columns, data=None):
    import pandas

    if data is None:
        return pandas.DataFrame({name: pandas.Series(dtype="datetime64[ns]" if name == "time" else object if name in (
            "channel", "class", "series", "answer") else float) for name in columns})
    return pandas.DataFrame({name: data[name] for name in columns})


def _dates(seconds):
    return np.round(np.asarray(seconds, dtype=np.float64)).astype(np.int64).astype("datetime64[s]")
