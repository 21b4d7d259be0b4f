"""How fast is logging a prediction, and drawing the Monitor tab from a large log?

    python -m bench.monitoring_speed               # 100,000 logged rows

The log is filled with 100,000 synthetic but plausible rows through PredictionLog.append: spread
over 30 days, classes in the validation proportions, confidence/entropy/histogram distance drawn
from the reference's validation baselines, colour histograms around their class's mean, and real
CIFAR-10 images (cycled) as thumbnails. Then timed on that full log: upload_metrics + append of one
prediction (median, p95), and render() of the dashboard's tables, alone and with each table turned
into what the browser gets by the Monitor tab's native plots (gr.LinePlot, gr.ScatterPlot,
gr.BarPlot .postprocess), as Gradio does on every refresh. Goal: <= 0.5 s from 100,000 rows. The reference is assets/monitoring_reference.json, else the one
bench/drift_replay.py wrote to .cache/monitoring/. Every upload is logged with what it was told:
the CNN's class, the fallback's (here: the same), or nothing when refused.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifier.dataset import DataConfig, prepare_dataset  # noqa: E402
from monitoring import PredictionLog, as_reference, render, upload_metrics  # noqa: E402


def find_reference():
    for path in (ROOT / "assets" / "monitoring_reference.json", ROOT / ".cache" / "monitoring" / "monitoring_reference.json"):
        if path.exists():
            return path
    sys.exit("No monitoring reference: build assets/ or run python -m bench.drift_replay first.")


def fill(log, reference, images, rows, seed=0):
    rng = np.random.default_rng(seed)
    counts = np.array([reference.class_confidence[name]["count"] for name in reference.class_names], float)
    classes = rng.choice(len(reference.class_names), rows, p=counts / counts.sum())
    draws = {name: rng.choice(values, rows) for name, values in reference.baseline.items()}
    end = time.time()
    times = np.sort(rng.uniform(end - 30 * 86400, end, rows))
    answered_by = rng.choice(["cnn", "fallback", "refused"], rows, p=[0.85, 0.05, 0.10])
    for i in range(rows):
        # A histogram near its class's mean: a Dirichlet draw centred on it, as concentrated as
        # 1,024 pixels allow.
        mean = reference.class_histograms[classes[i]]
        histogram = np.stack([rng.dirichlet(channel * 200 + 1e-3) for channel in mean])
        log.append({
            "predicted_class": reference.class_names[classes[i]], "confidence": draws["confidence"][i],
            "entropy": draws["entropy"][i], "histogram_distance": draws["histogram_distance"][i],
            "answered_by": answered_by[i], "ood": answered_by[i] == "refused", "time": times[i],
            "answer": None if answered_by[i] == "refused" else reference.class_names[classes[i]],
            "colour_histogram": histogram, "image": images[i % len(images)],
        })


def native_plots():
    """The Monitor tab's plots as app.build_admin makes them (the columns they draw)."""
    import gradio as gr

    return (gr.LinePlot(x="intensity", y="difference", color="channel"), gr.ScatterPlot(x="time", y="change", color="class"),
            gr.LinePlot(x="time", y="entropy", color="series"), gr.BarPlot(x="answer", y="uploads"))


def main(rows, repeats, data_dir=None):
    from pipeline.data_dir import resolve_data_dir

    reference_path = find_reference()
    reference = as_reference(reference_path)
    dataset = prepare_dataset(DataConfig(data_dir=resolve_data_dir(data_dir), limit_per_class=40))
    images = dataset.x_test
    probabilities = np.random.default_rng(1).dirichlet(np.ones(len(reference.class_names)) * 0.3, 1000)
    print(f"reference: {reference_path.relative_to(ROOT)}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.sqlite"
        with PredictionLog(path) as log:
            started = time.perf_counter()
            fill(log, reference, images, rows)
            print(f"filled {log.count():,} synthetic rows in {time.perf_counter() - started:.0f} s "
                  f"({path.stat().st_size / 1e6:.0f} MB)")

            metric_times, append_times = [], []
            for i in range(1000):
                image = images[i % len(images)]
                started = time.perf_counter()
                record = upload_metrics(image, probabilities[i], reference)
                middle = time.perf_counter()
                log.append({**record, "answer": record["predicted_class"], "answered_by": "cnn", "ood": False, "image": image})
                metric_times.append(middle - started)
                append_times.append(time.perf_counter() - middle)
            for name, values in (("upload_metrics", metric_times), ("append (log one prediction)", append_times),
                                 ("both", np.add(metric_times, append_times))):
                print(f"{name:28s} median {np.median(values) * 1000:.3f} ms, p95 {np.percentile(values, 95) * 1000:.3f} ms"
                      f" (1,000 predictions into a {rows:,}-row log)")

            plots = native_plots()
            started = time.perf_counter()
            render(log, reference)
            print(f"render, first call (imports pandas, scipy): {time.perf_counter() - started:.2f} s")
            alone, drawn = [], []
            for _ in range(repeats):
                started = time.perf_counter()
                dashboard = render(log, reference)
                alone.append(time.perf_counter() - started)
                for plot, frame in zip(plots, dashboard.frames):
                    plot.postprocess(frame)
                drawn.append(time.perf_counter() - started)
            print(f"render from {log.count():,} rows: median {np.median(alone):.3f} s, max {np.max(alone):.3f} s; "
                  f"with the 4 tables made ready for the native plots: median {np.median(drawn):.3f} s, "
                  f"max {np.max(drawn):.3f} s ({repeats} runs; goal <= 0.5 s)")
            print("rows sent to the plots: " + ", ".join(
                f"{name} {len(frame)}" for name, frame in zip(("histogram", "confidence", "entropy", "answers"), dashboard.frames)))
            print(f"drift verdict: {dashboard.drift_report.message}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--data-dir", default=None, help="the development data folder (default $HONEST_DATA_DIR or ../shared/data)")
    arguments = parser.parse_args()
    main(arguments.rows, arguments.repeats, arguments.data_dir)
