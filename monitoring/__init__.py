"""Drift monitoring: per-upload metrics, a durable SQLite log of predictions, drift tests against a
reference measured at build time, and the Monitor tab's figures.

    reference = as_reference(bundle.monitoring_reference)          # once, at start-up
    log = PredictionLog("monitoring.sqlite")
    log.append({**upload_metrics(image, probabilities, reference), "answer": "cat", "answered_by": "cnn", "ood": False,
                "image": image})                                   # answer: what the person was told (None: refused)
    dashboard = render(log, reference)                             # figures, last uploads, drift markdown

Importing this package loads numpy, Pillow and SQLAlchemy (the log's store, storage/); scipy and
pandas are imported when drift is judged or the dashboard's tables made, MLflow only by
monitoring.tracking.
"""

from monitoring.dashboard import Dashboard, DashboardConfig, render
from monitoring.drift import DriftConfig, DriftReport, detect_drift
from monitoring.log import LogError, PredictionLog, PredictionRecord
from monitoring.reference import MonitoringReference, ReferenceConfig, as_reference, build_reference, upload_metrics

__all__ = [
    "Dashboard", "DashboardConfig", "render",
    "DriftConfig", "DriftReport", "detect_drift",
    "LogError", "PredictionLog", "PredictionRecord",
    "MonitoringReference", "ReferenceConfig", "as_reference", "build_reference", "upload_metrics",
]
