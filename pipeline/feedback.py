"""Visitors' reviewed corrections as training data: python -m pipeline.build --feedback STORE.

    folder = export_corrections("state/corrections.sqlite")   # or the replicas' postgresql:// URL
"""

import shutil
from pathlib import Path

from classifier.readers import DataUnavailable


def export_corrections(store_path, accepted_only=True, cache_dir=".cache/corrections"):
    """Visitors' corrections (an app's state/corrections.sqlite) as an image-folder tree to train
    on: the accepted ones, or with accepted_only=False every one not rejected (a private
    deployment). Pictures are named by hash, so the same corrections mean the same training run."""
    import hashlib

    import storage
    from bundle.labels import CLASS_NAMES
    from service.corrections import CorrectionStore

    shared = storage.is_postgresql(str(store_path))  # the replicas' database (app.py --database)
    if not shared and not Path(store_path).is_file():
        raise DataUnavailable(f"--feedback {store_path}: no corrections store there (the app keeps it in its --state-dir).")
    kind = "accepted" if accepted_only else "all"
    identity = str(store_path) if shared else str(Path(store_path).resolve())
    folder = Path(cache_dir) / f"{hashlib.sha256(identity.encode()).hexdigest()[:12]}-{kind}"
    shutil.rmtree(folder, ignore_errors=True)
    store = CorrectionStore(store_path, CLASS_NAMES)
    try:
        report = store.export(folder, accepted_only)
    finally:
        store.close()  # not held open (a PostgreSQL connection pool) through hours of training
    print(f"[build] corrections: {report['pictures']} pictures ({kind}), {len(report['conflicting'])} left out for conflicting labels", flush=True)
    return str(folder)
