"""MLflow runs of the build and the ladder, written to a real local store and read back."""

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="the MLflow extra is not installed (pip install -r requirements-mlflow.txt)")

from pipeline.build import smoke_config  # noqa: E402
from pipeline.tracking import BUILD_EXPERIMENT, LADDER_EXPERIMENT, log_build_run, log_ladder_run  # noqa: E402
from tests.monitoring.test_tracking import search_runs  # noqa: E402

ASSETS = Path(__file__).resolve().parents[2] / "assets"
SMALL_FILES = ("bundle.json", "config.json", "metrics.json", "history.json", "noise_gate.json", "answer_rule.json")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The default store (mlruns.db) in a folder of its own, whatever the environment says."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "tracking"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The committed bundle's small files and figures: what a build leaves, without the big models."""
    folder = tmp_path_factory.mktemp("bundle") / "assets"
    folder.mkdir()
    for name in SMALL_FILES:
        shutil.copy(ASSETS / name, folder / name)
    shutil.copytree(ASSETS / "figures", folder / "figures")
    return folder


def read(path):
    return json.loads(Path(path).read_text())


def test_a_build_is_one_run_with_its_configs_curves_figures_and_bundle(store, bundle):
    from mlflow.tracking import MlflowClient

    config = smoke_config(bundle, store / "runs", "../shared/data")
    metrics, history = read(bundle / "metrics.json"), read(bundle / "history.json")
    run_id = log_build_run(config, metrics, history, bundle, folder=store)

    uri = f"sqlite:///{store / 'mlruns.db'}"
    runs = search_runs(uri, BUILD_EXPERIMENT)
    assert list(runs["run_id"]) == [run_id] and runs["status"][0] == "FINISHED"
    run = MlflowClient(uri).get_run(run_id)
    params, logged = run.data.params, run.data.metrics
    # Every stage's config: the training one, nested data settings, and each stage's own config.
    assert params["train.preset"] == "fastnet_small" and params["train.epochs"] == "1"
    assert params["train.data.limit_per_class"] == "40" and params["train.data.preprocessing.height"] == "32"
    assert params["stage_configs.ood.n_estimators"] == "50" and params["stage_configs.gallery.per_class"] == "20"
    # A stage the config leaves to its defaults shows them.
    assert params["stage_configs.monitoring.bins"] == "16" and params["stage_configs.errors.kmeans_clusters"] == "6"
    assert params["stage_configs.fallback.tune"] == "false"
    assert params["stages"] == json.dumps(list(config.stages))
    # metrics.json's numbers, nested names dotted.
    assert logged["classifier.test_accuracy"] == pytest.approx(metrics["classifier"]["test_accuracy"])
    assert logged["classifier.per_class.cat.recall"] == pytest.approx(metrics["classifier"]["per_class"]["cat"]["recall"])
    assert logged["build_seconds"] == pytest.approx(metrics["build_seconds"])
    # The training curves, one step per epoch.
    curve = MlflowClient(uri).get_metric_history(run_id, "val_accuracy")
    assert [point.step for point in curve] == list(range(1, len(history["val_accuracy"]) + 1))
    assert [point.value for point in curve] == pytest.approx(history["val_accuracy"])
    # The figures, and the bundle itself, in the artifact folder beside the store.
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(store / "mlruns")
    assert sorted(p.name for p in (artifacts / "figures").iterdir()) == sorted(p.name for p in (bundle / "figures").iterdir())
    assert read(artifacts / "bundle" / "metrics.json") == metrics
    assert (artifacts / "bundle" / "figures" / "curves.png").read_bytes() == (bundle / "figures" / "curves.png").read_bytes()


def test_the_ladder_is_one_run_per_preset(store):
    report = read(ASSETS / "reports" / "ladder.json")
    for row in report["rows"]:
        log_ladder_run(row["preset"], row, report["config"], folder=store, ladder="committed table")

    runs = search_runs(f"sqlite:///{store / 'mlruns.db'}", LADDER_EXPERIMENT)
    assert sorted(runs["tags.preset"]) == sorted(row["preset"] for row in report["rows"])
    assert set(runs["tags.ladder"]) == {"committed table"} and set(runs["status"]) == {"FINISHED"}
    for row in report["rows"]:
        run = runs[runs["tags.preset"] == row["preset"]].iloc[0]
        assert run["params.train.preset"] == row["preset"]  # each rung's own preset, not the config's default
        assert run["params.train.epochs"] == str(report["config"]["train"]["epochs"])
        assert run["metrics.test_accuracy"] == pytest.approx(row["test_accuracy"])
        assert run["metrics.parameters"] == row["parameters"]
        assert run["tags.training_run"] == row["run"]


def test_mlflow_tracking_uri_is_honoured(tmp_path, monkeypatch, bundle):
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    history = read(bundle / "history.json")
    run_id = log_ladder_run("bootcamp", {"preset": "bootcamp", "test_accuracy": 0.5}, {"train": {"epochs": 2}},
                            history, folder=tmp_path / "unused")
    assert elsewhere.exists() and not (tmp_path / "unused" / "mlruns.db").exists()
    runs = search_runs(f"sqlite:///{elsewhere}", LADDER_EXPERIMENT)
    assert list(runs["run_id"]) == [run_id] and runs["metrics.test_accuracy"][0] == 0.5
    assert runs["metrics.loss"][0] == pytest.approx(history["loss"][-1])  # the last epoch's value
