"""README's set-up commands stay true: CI runs exactly its test command."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_commands():
    text = (REPO / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if not line.startswith("#")]


def test_readme_opens_with_the_two_commands():
    run_app, run_tests = readme_commands()
    assert "python app.py" in run_app and "requirements.txt" in run_app
    assert "pytest" in run_tests


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci
