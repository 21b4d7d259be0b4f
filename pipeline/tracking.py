"""MLflow runs of the build and the model ladder (the optional extra: pip install -r requirements-mlflow.txt).

    log_build_run(config, metrics, history, "assets")   # python -m pipeline.build --mlflow: one run
    log_ladder_run(preset, row, config, history)         # python -m research.ladder --mlflow: one run per preset
    log_gate_runs(report, champion_dir, challenger_dir, promoted)  # python -m pipeline.gate --mlflow: two runs

The store is $MLFLOW_TRACKING_URI, else mlruns.db in `folder` (default: where the command runs),
with artifacts in folder/mlruns (monitoring.tracking): `mlflow ui --backend-store-uri
sqlite:///mlruns.db` then compares the builds, and the ladder's presets side by side.

A build's run holds every stage's config as parameters (the config flattened to dotted names:
train.epochs, train.data.preprocessing.height, stage_configs.ood.n_estimators; a stage given no
config shows its defaults), the per-epoch
training curves (history.json, step = epoch), every number of metrics.json as a metric (nested
names dotted: classifier.test_accuracy, ood.near_ood_auroc), the figures, and the bundle folder
itself as an artifact.

A gate's two runs (the champion and the challenger, measured on the same pictures) hold the gate's
rows as metrics; each bundle version is registered once as a version of the registered model
REGISTERED_MODEL (tagged with its bundle version, its source the bundle folder), and the alias
`champion` names the version the gate promoted (or, before any promotion, the first champion).
"""

import json
import math
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

from monitoring.tracking import open_experiment

BUILD_EXPERIMENT, LADDER_EXPERIMENT, GATE_EXPERIMENT = "builds", "model ladder", "gate"
REGISTERED_MODEL, CHAMPION_ALIAS = "honest-classifier", "champion"
MAX_PARAM_CHARS = 6000  # MLflow refuses longer parameter values
MAX_PARAMS, MAX_METRICS = 100, 1000  # MLflow's limits on one log_batch call


def log_build_run(config, metrics, history, bundle_dir, folder=".", run_name=None):
    """One run for a finished build; returns its run id. `config` is the BuildConfig (or its
    dict, as config.json holds it), `metrics` metrics.json's dict, `history` history.json's."""
    bundle_dir = Path(bundle_dir)
    client, experiment_id = open_experiment(BUILD_EXPERIMENT, folder)
    config = build_parameters(config)
    preset = config.get("train", {}).get("preset", "build")
    run = client.create_run(experiment_id, run_name=run_name or f"{preset} {bundle_dir.name}",
                            tags={"kind": "build", "bundle": str(bundle_dir.resolve())})
    run_id = run.info.run_id
    try:
        _log_values(client, run_id, flatten(config), numbers(metrics), history)
        figures = bundle_dir / "figures"
        if figures.is_dir():
            client.log_artifacts(run_id, str(figures), "figures")
        client.log_artifacts(run_id, str(bundle_dir), "bundle")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


def build_parameters(config):
    """A BuildConfig as a dict with every stage's config as it ran: the one given in stage_configs,
    else the stage's default (a dict, as config.json holds it, is taken as it is)."""
    if not is_dataclass(config):
        return dict(config)
    from monitoring.reference import ReferenceConfig
    from pipeline import errors_stage, fallback_stage, gallery_stage, ood_stage

    defaults = {"ood": ood_stage.OODConfig, "gallery": gallery_stage.GalleryConfig, "monitoring": ReferenceConfig,
                "fallback": fallback_stage.FallbackConfig, "errors": errors_stage.ErrorAnalysisConfig}
    given = dict(config.stage_configs)
    return {**asdict(config), "stage_configs": {
        stage: asdict(given[stage] if stage in given else defaults[stage]()) for stage in config.stages if stage in defaults}}


def log_ladder_run(preset, row, config, history=None, folder=".", ladder=None):
    """One run for one rung of the ladder; returns its run id. `row` is the rung's table row,
    `config` the LadderConfig (its train config is logged with this preset), `history` the rung's
    training history; `ladder` (a tag) groups the rungs of one ladder, by default today's date."""
    client, experiment_id = open_experiment(LADDER_EXPERIMENT, folder)
    config = _as_dict(config)
    train = {**config.get("train", {}), "preset": preset}
    settings = {key: value for key, value in config.items() if key not in ("train", "presets")}
    tags = {"kind": "ladder rung", "preset": preset, "ladder": ladder or time.strftime("%Y-%m-%d", time.gmtime())}
    if row.get("run"):
        tags["training_run"] = str(row["run"])
    run = client.create_run(experiment_id, run_name=preset, tags=tags)
    run_id = run.info.run_id
    try:
        _log_values(client, run_id, {**flatten(train, "train"), **flatten(settings)}, numbers(row), history or {})
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


def log_gate_runs(report, champion_dir, challenger_dir, promoted, folder="."):
    """Log a gate's report (pipeline.gate.compare) as one run per bundle, register both bundles and
    move the `champion` alias to the challenger when `promoted`; returns {bundle version: model version}."""
    from mlflow.exceptions import MlflowException

    client, experiment_id = open_experiment(GATE_EXPERIMENT, folder)
    try:
        client.get_registered_model(REGISTERED_MODEL)
    except MlflowException:
        client.create_registered_model(REGISTERED_MODEL, description="The bundles the learning loop's gate measured.")
    registered = {version.tags.get("bundle_version"): version.version
                  for version in client.search_model_versions(f"name='{REGISTERED_MODEL}'")}
    versions = {}
    for role, directory in (("champion", champion_dir), ("challenger", challenger_dir)):
        bundle_version = report[role]
        run = client.create_run(experiment_id, run_name=f"{role} {bundle_version}", tags={
            "kind": "gate", "role": role, "bundle_version": bundle_version, "passed": str(report["passed"])})
        run_id = run.info.run_id
        try:
            _log_values(client, run_id, {"bundle": str(Path(directory).resolve()), **flatten(report["tolerances"], "tolerance")},
                        {row["row"]: row[role] for row in report["rows"] if row[role] is not None}, {})
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id)
        if bundle_version not in registered:
            registered[bundle_version] = client.create_model_version(
                REGISTERED_MODEL, Path(directory).resolve().as_uri(), run_id, tags={"bundle_version": bundle_version}).version
        versions[bundle_version] = registered[bundle_version]
    try:
        client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS)
        has_champion = True
    except MlflowException:
        has_champion = False
    if promoted or not has_champion:
        client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION_ALIAS,
                                          versions[report["challenger" if promoted else "champion"]])
    return versions


def flatten(value, prefix=""):
    """A config as {dotted name: text}: dicts and (name, config) pairs open up, other lists are JSON."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)) and value and all(
            isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str) for pair in value):
        items = value  # BuildConfig.stage_configs: (stage name, config) pairs
    else:
        text = value if isinstance(value, str) else json.dumps(value)
        return {prefix: text[:MAX_PARAM_CHARS]}
    flat = {}
    for key, inner in items:
        flat.update(flatten(_as_dict(inner) if is_dataclass(inner) else inner, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def numbers(value, prefix=""):
    """Every finite number in nested dicts, as {dotted name: float}; text, lists and flags are left out."""
    if isinstance(value, dict):
        found = {}
        for key, inner in value.items():
            found.update(numbers(inner, f"{prefix}.{key}" if prefix else str(key)))
        return found
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return {_metric_name(prefix): float(value)}
    return {}


def _log_values(client, run_id, params, metrics, history):
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    params = [Param(_metric_name(name), value) for name, value in params.items()]
    for start in range(0, len(params), MAX_PARAMS):
        client.log_batch(run_id, params=params[start:start + MAX_PARAMS], synchronous=True)
    entries = [Metric(name, value, now, 0) for name, value in metrics.items()]
    for name, values in history.items():
        # Per-epoch lists (loss, accuracy, val_...); numbers that are not a curve are not epochs.
        if isinstance(values, list):
            entries += [Metric(_metric_name(name), float(v), now, epoch) for epoch, v in enumerate(values, start=1)
                        if isinstance(v, (int, float)) and math.isfinite(v)]
    for start in range(0, len(entries), MAX_METRICS):
        client.log_batch(run_id, metrics=entries[start:start + MAX_METRICS], synchronous=True)


def _metric_name(name):
    # MLflow allows letters, digits and _ - . / and space in names; anything else becomes _.
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def _as_dict(config):
    return asdict(config) if is_dataclass(config) else dict(config)
