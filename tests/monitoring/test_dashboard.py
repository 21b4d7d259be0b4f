import io

import matplotlib
import numpy as np
from matplotlib.figure import Figure

matplotlib.use("Agg")
import matplotlib.pyplot as pyplot  # noqa: E402

from monitoring import DashboardConfig, PredictionLog, render, upload_metrics


def test_dashboard_renders_from_real_uploads(tmp_path, real_reference):
    reference, images, probabilities = real_reference
    with PredictionLog(tmp_path / "log.sqlite") as log:
        for i, (image, probability) in enumerate(zip(images[:120], probabilities[:120])):
            answered_by = ("cnn", "fallback", "refused")[i % 3]
            log.append({**upload_metrics(image, probability, reference), "image": image,
                        "answered_by": answered_by, "ood": answered_by == "refused", "time": 1.7e9 + 600 * i})
        log.tag(120, "cat")
        figures_before = pyplot.get_fignums()
        dashboard = render(log, reference)

    assert dashboard.uploads_logged == 120
    for figure in dashboard.figures:
        assert isinstance(figure, Figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        assert buffer.getvalue().startswith(b"\x89PNG")
    assert len(dashboard.histogram_figure.axes[0].lines) >= 3  # red, green, blue
    assert pyplot.get_fignums() == figures_before  # nothing left registered with pyplot to leak

    assert len(dashboard.last_uploads) == 10
    image, caption = dashboard.last_uploads[0]
    scale = DashboardConfig().gallery_scale
    np.testing.assert_array_equal(image[::scale, ::scale], images[119])  # newest first, pixels kept
    assert caption.startswith("#120 ") and "tagged cat" in caption and "UTC" in caption
    assert dashboard.drift_report.judged
    assert dashboard.drift_report.message in dashboard.drift_markdown and "120 uploads logged" in dashboard.drift_markdown


def test_empty_log_and_missing_reference_render_placeholders(tmp_path, small_dataset):
    with PredictionLog(tmp_path / "log.sqlite") as log:
        dashboard = render(log, None)
        assert dashboard.drift_markdown == "**No uploads logged yet.**" and dashboard.last_uploads == []
        image = small_dataset.x_test[0]
        log.append({**upload_metrics(image, np.full(13, 1 / 13), None, small_dataset.class_names), "image": image})
        dashboard = render(log, None)
    assert "No monitoring reference" in dashboard.drift_markdown and dashboard.drift_report is None
    for figure in dashboard.figures:
        figure.savefig(io.BytesIO(), format="png")
