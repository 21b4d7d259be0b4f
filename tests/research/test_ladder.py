"""A tiny real ladder end to end: two presets, one epoch, a little data."""

import json

import pytest

from classifier.dataset import DataConfig
from classifier.train import TrainConfig
from research.ladder import LadderConfig, run_ladder

PRESETS = ("pets_small", "fastnet_small")


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("ladder")
    config = LadderConfig(
        presets=PRESETS,
        train=TrainConfig(epochs=1, batch_size=64, data=DataConfig(data_dir=str(shared_data), limit_per_class=20)),
        runs_dir=str(root / "runs"), out_dir=str(root / "reports"),
    )
    rows = run_ladder(config, verbose=0, command="python -m research.ladder --test")
    return config, rows, root / "reports"


def test_a_row_per_preset_with_sane_figures(ladder):
    _, rows, _ = ladder
    assert [row["preset"] for row in rows] == list(PRESETS)
    for row in rows:
        assert row["parameters"] > 0 and row["epochs_run"] == 1 and row["fit_seconds"] > 0
        for key in ("best_val_accuracy", "test_accuracy", "cifar10_test_accuracy_10_class", "extra_classes_test_accuracy"):
            assert 0.0 <= row[key] <= 1.0, key
        assert row["test_loss"] > 0 and row["predict_ms_per_image"] > 0
    assert rows[0]["parameters"] != rows[1]["parameters"]


def test_json_and_markdown_reports(ladder):
    config, rows, reports = ladder
    report = json.loads((reports / "ladder.json").read_text())
    assert report["rows"] == json.loads(json.dumps(rows))
    assert report["command"] == "python -m research.ladder --test"
    assert report["config"]["presets"] == list(PRESETS) and report["config"]["train"]["epochs"] == 1
    assert report["images"]["test"] > 0 and "CPU cores" in report["machine"]
    markdown = (reports / "ladder.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(PRESETS)  # header and one row per preset
    for preset, line in zip(PRESETS, table[1:]):
        assert line.startswith(f"| {preset} |")
    assert "made by: `python -m research.ladder --test`" in markdown
    assert "at most 20 images per class" in markdown
    assert not list(reports.glob("*.tmp"))


def test_a_second_call_reuses_the_runs(ladder):
    config, rows, _ = ladder
    again = run_ladder(config, verbose=0)
    assert [row["run"] for row in again] == [row["run"] for row in rows]
    assert [row["fit_seconds"] for row in again] == [row["fit_seconds"] for row in rows]
    assert len(list((ladder[2].parent / "runs").iterdir())) == len(PRESETS)


def test_importing_loads_no_deep_learning_framework():
    import subprocess
    import sys

    code = "import sys, research.ladder; print(any(m in sys.modules for m in ('keras', 'tensorflow', 'jax', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_transfer_rung_joins_the_report_beside_the_kept_rows(ladder, tmp_path, data_path):
    """mobilenet_v2_tflite on the same 20 pictures a class, added with keep_rows to a copy of the report."""
    import shutil
    from dataclasses import replace

    from classifier.transfer import TFLITE_FILE_NAME, TransferConfig

    config, rows, reports = ladder
    shutil.copytree(reports, tmp_path / "reports")
    before = json.loads((tmp_path / "reports" / "ladder.json").read_text())["rows"]
    transfer = TransferConfig(tflite_model=str(data_path("imagenet-models", TFLITE_FILE_NAME)), head_epochs=20, flip_copies=False)
    config = replace(config, presets=("mobilenet_v2_tflite",), train=replace(config.train, transfer=transfer),
                     runs_dir=str(tmp_path / "runs"), out_dir=str(tmp_path / "reports"), keep_rows=True)
    merged = run_ladder(config, verbose=0, command="python -m research.ladder --test-transfer")
    assert [row["preset"] for row in merged] == list(PRESETS) + ["mobilenet_v2_tflite"]
    assert merged[:2] == before  # kept as they were
    row = merged[-1]
    assert row["epochs_run"] == 20 and row["predict_ms_per_image"] > 0
    # Pretrained features on 20 pictures a class beat one epoch from scratch by far.
    assert row["test_accuracy"] > max(r["test_accuracy"] for r in rows) + 0.1 and row["test_accuracy"] > 0.4
    markdown = (tmp_path / "reports" / "ladder.md").read_text()
    assert "| mobilenet_v2_tflite |" in markdown and "rows of other presets kept from `" in markdown
    assert "parameters count the head only" in markdown


def test_kept_rows_must_come_from_the_same_data(ladder, tmp_path):
    import shutil
    from dataclasses import replace

    config, _, reports = ladder
    shutil.copytree(reports, tmp_path / "reports")
    other = replace(config, out_dir=str(tmp_path / "reports"), keep_rows=True,
                    train=replace(config.train, data=replace(config.train.data, limit_per_class=10)))
    with pytest.raises(ValueError, match="other data or epochs"):
        run_ladder(other, verbose=0)
