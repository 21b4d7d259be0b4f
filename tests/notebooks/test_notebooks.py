"""Every notebook runs top to bottom (on small settings), so that none of them rots."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_for_data_training_and_error_analysis():
    names = [path.stem for path in NOTEBOOKS]
    assert names == ["01_data", "02_training_and_evaluation", "03_error_analysis"], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_executes(path, tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("NOTEBOOK_SMALL", "1")
    # The kernel finds the data folder as the command line does (pipeline.data_dir): the one found here.
    monkeypatch.setenv("HONEST_DATA_DIR", str(shared_data))
    monkeypatch.setenv("NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = nbformat.read(path, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit notebooks without outputs"
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert any(output.output_type == "display_data" and "image/png" in output.get("data", {}) for output in outputs), "it draws figures"
    # Small settings write into NOTEBOOK_OUT, never into the committed bundle.
    assert "small settings: True" in "".join(output.get("text", "") for output in outputs)
