"""The Monitor tab: figures, the last uploads and the drift verdict, drawn from the prediction log.

    dashboard = render(log, reference)
    dashboard.histogram_figure, dashboard.confidence_figure, dashboard.entropy_figure  # gr.Plot
    dashboard.last_uploads          # [(image, caption)] for gr.Gallery
    dashboard.drift_markdown        # gr.Markdown

Only what is shown is read: the drift window (100 rows), the last uploads, and per-class means over
time aggregated in SQL, so a large log renders as fast as a small one. Figures are made with
matplotlib.figure.Figure and the Agg canvas, not pyplot: nothing is registered globally, so there is
nothing to close and no figure outlives the page that shows it.
"""

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from monitoring.drift import DriftConfig, detect_drift, window_of
from monitoring.reference import as_reference

CHANNEL_COLOURS = ("tab:red", "tab:green", "tab:blue")


@dataclass(frozen=True)
class DashboardConfig:
    recent_uploads: int = 10
    history: int = 50_000  # uploads the over-time plots cover
    buckets: int = 60  # time spans they are averaged over
    gallery_scale: int = 4  # thumbnails are enlarged (nearest neighbour) so browsers show pixels, not blur
    figure_size: tuple = (7.0, 3.2)
    drift: DriftConfig = field(default_factory=DriftConfig)


@dataclass
class Dashboard:
    histogram_figure: object
    confidence_figure: object
    entropy_figure: object
    last_uploads: list  # (uint8 image, caption), newest first
    drift_markdown: str
    drift_report: object = None  # monitoring.drift.DriftReport, or None without a reference
    uploads_logged: int = 0

    @property
    def figures(self):
        return (self.histogram_figure, self.confidence_figure, self.entropy_figure)


def render(log, reference, config=DashboardConfig(), now=None):
    reference = as_reference(reference)
    total = log.count()
    window = window_of(log, config.drift, now, histograms=True)
    starts, timeline = log.timeline(config.buckets, config.history)
    report = detect_drift(window, reference, config.drift) if reference is not None else None
    return Dashboard(
        histogram_figure=histogram_difference_figure(window, reference, config),
        confidence_figure=confidence_figure(starts, timeline, reference, config),
        entropy_figure=entropy_figure(starts, timeline, reference, config),
        last_uploads=last_uploads(log, config),
        drift_markdown=drift_markdown(report, total, window),
        drift_report=report,
        uploads_logged=total,
    )


def histogram_difference_figure(window, reference, config=DashboardConfig()):
    """Mean of (upload's colour histogram - its predicted class's training histogram), per channel."""
    figure, axes = _figure(config, left=0.13)
    histograms = window.get("colour_histogram", np.zeros((0, 0)))
    if reference is None or histograms.size == 0:
        return _empty(figure, axes, "No uploads with colour histograms yet" if reference is not None else "No monitoring reference")
    bins = reference.config.bins
    index = {name: i for i, name in enumerate(reference.class_names)}
    classes = np.array([index.get(name, -1) for name in window["predicted_class"]])
    usable = (classes >= 0) & np.isfinite(histograms).all(axis=1) & (histograms.shape[1] == reference.class_histograms[0].size)
    if not usable.any():
        return _empty(figure, axes, "No uploads with colour histograms yet")
    channels = reference.class_histograms.shape[1]
    difference = (histograms[usable].reshape(-1, channels, bins) - reference.class_histograms[classes[usable]]).mean(axis=0)
    centres = (np.arange(bins) + 0.5) * 256 / bins
    names = ("red", "green", "blue") if channels == 3 else ("gray",)
    for channel in range(channels):
        colour = CHANNEL_COLOURS[channel] if channels == 3 else "black"
        axes.plot(centres, difference[channel], color=colour, marker="o", markersize=3, label=names[channel])
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_xlim(0, 255)
    axes.set_xlabel("pixel intensity")
    axes.set_ylabel("share of pixels, difference")
    axes.set_title(f"Colour histogram of the last {int(usable.sum())} uploads minus their class's training average", fontsize=9)
    axes.legend(fontsize=8, loc="upper right")
    return figure


def confidence_figure(starts, timeline, reference, config=DashboardConfig()):
    """Mean confidence per predicted class over time, as a class x time heat map: the difference
    from the class's validation mean when there is a reference (red: the model is less sure)."""
    figure, axes = _figure(config, left=0.27, right=1.0)
    if len(timeline["class"]) == 0:
        return _empty(figure, axes, "No uploads logged yet")
    names = list(reference.class_names) if reference is not None else []
    names += sorted(set(timeline["class"]) - set(names))
    row_of = {name: row for row, name in enumerate(names)}
    grid = np.full((len(names), len(starts)), np.nan)
    rows = np.array([row_of[name] for name in timeline["class"]])
    grid[rows, timeline["bucket"]] = timeline["confidence"]
    if reference is not None:
        baseline = np.array([np.nan if reference.class_confidence.get(name, {}).get("mean") is None
                             else reference.class_confidence[name]["mean"] for name in names], dtype=float)
        grid = grid - baseline[:, None]
        colours, low, high, label = "RdBu", -0.3, 0.3, "mean confidence - validation mean"
    else:
        colours, low, high, label = "viridis", 0.0, 1.0, "mean confidence"
    width = starts[1] - starts[0] if len(starts) > 1 else 1.0
    edges = _dates(np.append(starts, starts[-1] + width))
    mesh = axes.pcolormesh(edges, np.arange(len(names) + 1), np.ma.masked_invalid(grid), cmap=colours, vmin=low, vmax=high)
    axes.set_yticks(np.arange(len(names)) + 0.5, names, fontsize=6)
    axes.invert_yaxis()
    colourbar = figure.colorbar(mesh, ax=axes, pad=0.01)
    colourbar.set_label(label, fontsize=7)
    colourbar.ax.tick_params(labelsize=7)
    axes.set_title("Confidence over time, per predicted class (blank: no uploads)", fontsize=9)
    _date_axis(figure, axes, starts)
    return figure


def entropy_figure(starts, timeline, reference, config=DashboardConfig()):
    """Mean intensity entropy of all uploads over time, against the validation range."""
    figure, axes = _figure(config, right=0.95)
    if len(timeline["class"]) == 0:
        return _empty(figure, axes, "No uploads logged yet")
    if reference is not None:
        low, high = np.percentile(reference.baseline["entropy"], [10, 90])
        axes.axhspan(low, high, color="grey", alpha=0.15, label="validation 10-90%")
        # The plotted points are means, so the line to compare them with is the validation mean.
        axes.axhline(reference.baseline["entropy"].mean(), color="grey", linestyle="--", linewidth=0.8, label="validation mean")
    counts = np.bincount(timeline["bucket"], weights=timeline["count"], minlength=len(starts))
    sums = np.bincount(timeline["bucket"], weights=timeline["entropy"] * timeline["count"], minlength=len(starts))
    filled = counts > 0
    axes.plot(_dates(starts[filled]), sums[filled] / counts[filled], color="tab:purple", marker=".", label="uploads")
    axes.set_ylabel("mean entropy (bits)")
    axes.set_title("Pixel-intensity entropy over time", fontsize=9)
    axes.legend(fontsize=7, loc="lower left")
    _date_axis(figure, axes, starts)
    return figure


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
        told = "refused" if upload["answer"] is None else f"{upload['answer']} · {upload['answered_by']}"
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


def _figure(config, left=0.1, right=0.97):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins, not a layout engine: the engine would cost a third of the drawing time.
    figure = Figure(figsize=config.figure_size, dpi=100)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=left, right=right, bottom=0.16, top=0.9)
    return figure, figure.add_subplot()


def _empty(figure, axes, text):
    axes.set_axis_off()
    axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="grey", transform=axes.transAxes)
    return figure


def _class_colours(count):
    from matplotlib import colormaps

    palette = colormaps["tab20"]
    return [palette(i % 20) for i in range(count)]


def _dates(seconds):
    # Naive UTC datetimes: matplotlib's date axis then labels them in UTC, whatever the server's zone.
    return np.round(np.asarray(seconds, dtype=np.float64)).astype(np.int64).astype("datetime64[s]")


def _date_axis(figure, axes, starts):
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    width = starts[1] - starts[0] if len(starts) > 1 else 60.0
    axes.set_xlim(*_dates([starts[0], starts[-1] + width]))  # the whole span, even with one point
    locator = AutoDateLocator(maxticks=6)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.set_xlabel("time (UTC)")
