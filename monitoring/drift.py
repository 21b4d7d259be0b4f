"""Drift: does a recent window of uploads still look like the validation data the model was
checked on?

Data drift shows in the pictures (intensity entropy, distance of the colour histogram from the
predicted class's training histogram); concept drift shows in the model (its confidence falls).
Each of the three is compared with its validation baseline by a two-sample Kolmogorov-Smirnov test
(scipy.stats.ks_2samp): no assumption about the shape of the distributions, and sensitive to a
shift of the middle as well as of the spread.

The alarm is raised when any test's p-value is below alpha / 3 (alpha = 0.01 by default,
Bonferroni-corrected over the three tests), so that on undrifted uploads a window raises a false
alarm at most about 1% of the time. Nothing is judged before `min_window` uploads (30): the KS test
has almost no power below that, and a handful of uploads says little.

Per-class mean confidence (by predicted class) is reported against the validation mean of that
class: a class whose mean falls by more than `confidence_drop` over at least `min_class_uploads`
uploads is flagged as a warning, to say where to look; the flags do not raise the alarm themselves
(13 more tests on a few uploads each would mostly add noise).
"""

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from monitoring import metrics as measure
from monitoring.reference import BASELINE_NAMES, as_reference

TEST_LABELS = {"confidence": "confidence", "entropy": "intensity entropy", "histogram_distance": "colour-histogram distance"}


@dataclass(frozen=True)
class DriftConfig:
    window_size: int = 100  # the last N uploads ...
    window_hours: float = None  # ... or, when set, the uploads of the last so many hours
    min_window: int = 30
    alpha: float = 0.01
    bonferroni: bool = True
    confidence_drop: float = 0.15
    min_class_uploads: int = 10


@dataclass
class DriftReport:
    window_size: int
    judged: bool  # False while the window is smaller than min_window
    alarm: bool
    level: float  # the per-test significance level after correction
    p_values: dict  # test name -> p-value (None if not judged)
    statistics: dict  # test name -> KS statistic
    verdicts: dict  # test name -> "drift", "no drift" or "not judged"
    class_confidence: list = field(default_factory=list)  # dicts: class, uploads, mean, baseline, drop, flagged
    refused_fraction: float = float("nan")
    answers: dict = field(default_factory=dict)  # what the uploads were told: class (or "refused") -> count
    window_start: float = None  # UTC seconds
    window_end: float = None
    message: str = ""

    def to_dict(self):
        return asdict(self)

    def to_markdown(self):
        lines = [f"**{self.message}**", "", "| test | KS statistic | p-value | verdict |", "|---|---|---|---|"]
        for name in BASELINE_NAMES:
            p, statistic = self.p_values.get(name), self.statistics.get(name)
            lines.append(
                f"| {TEST_LABELS[name]} | {'-' if statistic is None else f'{statistic:.3f}'} | "
                f"{'-' if p is None else f'{p:.2g}'} | {self.verdicts.get(name, 'not judged')} |")
        lines.append("")
        lines.append(f"Window: {self.window_size} uploads; alarm level p < {self.level:.2g} per test"
                     f" (Bonferroni over {len(BASELINE_NAMES)} tests); refused: {_percent(self.refused_fraction)}.")
        if self.answers:
            lines += ["", "| answer given | uploads |", "|---|---|"]
            lines += [f"| {name} | {count} |" for name, count in self.answers.items()]
        shown = [row for row in self.class_confidence if row["uploads"]]
        if shown:
            lines += ["", "| CNN's class | uploads | CNN's mean confidence | validation mean | |", "|---|---|---|---|---|"]
            for row in shown:
                baseline = "-" if row["baseline"] is None else f"{row['baseline']:.2f}"
                lines.append(f"| {row['class']} | {row['uploads']} | {row['mean']:.2f} | {baseline} | "
                             f"{'confidence dropped' if row['flagged'] else ''} |")
        return "\n".join(lines)


def detect_drift(source, reference, config=DriftConfig(), now=None):
    """Compare a window of uploads with the reference. `source` is a PredictionLog (the window is
    taken from it per `config`) or a dict of window columns as PredictionLog.window returns."""
    reference = as_reference(reference)
    if reference is None:
        raise ValueError("No monitoring reference: this bundle was built without monitoring_reference.json.")
    window = window_of(source, config, now) if hasattr(source, "window") else source
    size = len(window["confidence"])
    level = config.alpha / len(BASELINE_NAMES) if config.bonferroni else config.alpha
    p_values, statistics, verdicts = {}, {}, {}
    judged = size >= config.min_window
    for name in BASELINE_NAMES:
        values = np.asarray(window[name], dtype=np.float64)
        values = values[np.isfinite(values)]
        if not judged or len(values) < config.min_window:
            p_values[name], statistics[name], verdicts[name] = None, None, "not judged"
            continue
        result = _ks_2samp(values, reference.baseline[name])
        p_values[name], statistics[name] = float(result.pvalue), float(result.statistic)
        verdicts[name] = "drift" if result.pvalue < level else "no drift"
    drifted = [name for name in BASELINE_NAMES if verdicts[name] == "drift"]
    answered_by = np.asarray(window.get("answered_by", []), dtype=object)
    times = np.asarray(window.get("time", []), dtype=np.float64)
    report = DriftReport(
        window_size=size, judged=judged, alarm=bool(drifted), level=level,
        p_values=p_values, statistics=statistics, verdicts=verdicts,
        class_confidence=_class_confidence(window, reference, config),
        refused_fraction=float(np.mean(answered_by == "refused")) if len(answered_by) else float("nan"),
        answers=_answers(window),
        window_start=float(times.min()) if len(times) else None,
        window_end=float(times.max()) if len(times) else None,
    )
    report.message = _message(report, drifted, config)
    return report


def _ks_2samp(sample, baseline):
    from scipy.stats import ks_2samp  # scipy is imported only when drift is judged

    return ks_2samp(sample, baseline)


def window_of(log, config=DriftConfig(), now=None, histograms=False):
    """The window `config` asks for: the last window_size uploads, or those of the last window_hours."""
    if config.window_hours is not None:
        import time

        since = (time.time() if now is None else now) - config.window_hours * 3600.0
        return log.window(since=since, histograms=histograms)
    return log.window(last=config.window_size, histograms=histograms)


def _answers(window):
    """What the uploads of the window were told, most frequent first (None: refused)."""
    if "answer" not in window:
        return {}
    names, counts = np.unique(np.array(["refused" if a is None else a for a in window["answer"]], dtype=object), return_counts=True)
    return {str(n): int(c) for n, c in sorted(zip(names, counts), key=lambda item: -item[1])}


def _class_confidence(window, reference, config):
    # By the CNN's class and with its own confidence, not by the answer: the validation baseline
    # is the CNN's confidence by its predicted class, and a fallback answer says nothing of how
    # sure the CNN is. What people were told is tabled apart (_answers).
    classes = np.asarray(window["predicted_class"], dtype=object)
    confidence = np.asarray(window["confidence"], dtype=np.float64)
    rows = []
    for name in reference.class_names:
        values = confidence[classes == name]
        baseline = reference.class_confidence.get(name, {}).get("mean")
        mean = float(values.mean()) if len(values) else float("nan")
        drop = baseline - mean if baseline is not None and len(values) else float("nan")
        flagged = bool(len(values) >= config.min_class_uploads and drop > config.confidence_drop)
        rows.append({"class": name, "uploads": int(len(values)), "mean": mean, "baseline": baseline,
                     "drop": drop, "flagged": flagged})
    return rows


def _message(report, drifted, config):
    flagged = [row["class"] for row in report.class_confidence if row["flagged"]]
    warning = f" Confidence dropped for: {', '.join(flagged)}." if flagged else ""
    if not report.judged:
        return (f"Not enough uploads to judge drift yet: {report.window_size} in the window, "
                f"{config.min_window} needed.{warning}")
    if drifted:
        tests = ", ".join(f"{TEST_LABELS[name]} (p = {report.p_values[name]:.2g})" for name in drifted)
        verb = "differs" if len(drifted) == 1 else "differ"
        return (f"Drift alarm: over the last {report.window_size} uploads the {tests} {verb} from the "
                f"validation baseline. Check the recent uploads; retrain or relabel if they are real.{warning}")
    smallest = min(p for p in report.p_values.values() if p is not None)
    return (f"No drift: the last {report.window_size} uploads look like the validation data "
            f"(smallest p = {smallest:.2g}, alarm below {report.level:.2g}).{warning}")


def _percent(value):
    return "-" if value is None or math.isnan(value) else f"{value:.0%}"


def picture_window_columns(images, probabilities, reference):
    """Window columns (as PredictionLog.window gives them) for a batch of images, without a log."""
    predicted = np.argmax(probabilities, axis=1)
    histograms = measure.colour_histograms(images, reference.config.bins)
    return {
        "confidence": measure.confidences(probabilities),
        "entropy": measure.intensity_entropies(images),
        "histogram_distance": measure.hellinger_distances(histograms, reference.class_histograms[predicted]),
        "predicted_class": np.array(reference.class_names, dtype=object)[predicted],
    }


def replay_windows(columns, reference, drift_config=DriftConfig(), seed=0):
    """Shuffle the uploads once, cut them into consecutive windows of window_size, judge each."""
    size = len(columns["confidence"])
    order = np.random.default_rng(seed).permutation(size)
    reports = []
    for start in range(0, size - drift_config.window_size + 1, drift_config.window_size):
        part = order[start:start + drift_config.window_size]
        reports.append(detect_drift({name: np.asarray(values)[part] for name, values in columns.items()}, reference, drift_config))
    min_p = [min(r.p_values.values()) for r in reports]
    return {
        "windows": len(reports),
        "alarm_rate": round(float(np.mean([r.alarm for r in reports])), 4) if reports else None,
        "min_p_value_median": round(float(np.median(min_p)), 4) if reports else None,
        "reports": reports,
    }
