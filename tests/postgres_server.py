"""A throwaway PostgreSQL server for tests and benches: Debian's `postgresql` package, a cluster
made with initdb in a temporary folder, listening on a free localhost port and a socket in that
folder, stopped and deleted afterwards.

    with PostgresServer() as server:          # skips a test when the binaries are missing
        url = server.new_database()           # postgresql://postgres@127.0.0.1:PORT/db_1

PostgreSQL refuses to run as root: as root (CI, the dev machines) initdb and pg_ctl run as the
`postgres` user the package creates (runuser); as anyone else, as that user.

Fixtures (tests/conftest.py imports them): `postgres_server` (one per session) and
`store_target` (parametrized: a fresh SQLite file, then a fresh PostgreSQL database), so that
both back ends pass the same store tests.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

INSTALL_HINT = "apt-get install -y postgresql"


def postgres_binaries():
    """The folder of initdb, pg_ctl and postgres (newest version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    def __init__(self, max_connections=200):
        self.binaries = postgres_binaries()
        if self.binaries is None:
            raise FileNotFoundError(f"No PostgreSQL server binaries (initdb, pg_ctl) on this machine: {INSTALL_HINT}")
        self.max_connections = max_connections
        self.folder = None
        self.port = None
        self._databases = 0

    def __enter__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="honest-postgres-"))
        self.port = _free_port()
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.folder / "data"), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   f"-c max_connections={self.max_connections} -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "server.log"), "-o", options,
                  "-w", "-t", "60", "start")
        return self

    def __exit__(self, *exc):
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def url(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self):
        """A new, empty database; returns its URL."""
        import psycopg

        self._databases += 1
        name = f"db_{self._databases}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, program, *arguments):
        command = [str(self.binaries / program), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder)
        if done.returncode != 0:
            log = self.folder / "server.log"
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}\n"
                               + (log.read_text()[-2000:] if log.exists() else ""))
        return done


@pytest.fixture(scope="session")
def postgres_server():
    if postgres_binaries() is None:
        pytest.skip(f"needs a PostgreSQL server: {INSTALL_HINT}")
    started = time.perf_counter()
    with PostgresServer() as server:
        server.started_in_s = time.perf_counter() - started
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path):
    """Where a store under test keeps its data: a fresh SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("postgres_server").new_database()
