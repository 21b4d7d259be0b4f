"""The smoke bundle: the whole build on a little data, made once for the pipeline's tests."""

import pytest

from pipeline.build import build, smoke_config


@pytest.fixture(scope="session")
def smoke_bundle(tmp_path_factory, shared_data):
    """(bundle folder, its metrics). The bundle must not be changed by a test: others read it."""
    root = tmp_path_factory.mktemp("build")
    # A report from another command (the model ladder) in the bundle that the build replaces.
    (root / "bundle" / "reports").mkdir(parents=True)
    (root / "bundle" / "reports" / "ladder.md").write_text("# Model ladder\n")
    metrics = build(smoke_config(root / "bundle", root / "runs", str(shared_data)), verbose=0)
    return root / "bundle", metrics
