"""--share on a machine without internet: a plain message, and the local app keeps serving."""

import urllib.request

from bench.app_server import running_app
from tests.app.conftest import ASSETS


def test_share_offline_says_so_and_keeps_serving(tmp_path):
    with running_app(ASSETS, tmp_path, extra_args=("--share",)) as (url, _):
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
        log = (tmp_path / "server.log").read_text()
    assert "Could not create a public --share link" in log and "keeps running locally" in log
