"""Which bundle version serves: the champion, named by one row that every replica reads.

    registry = BundleRegistry("state/corrections.sqlite")       # or the replicas' postgresql:// URL
    registry.register("20261207-2210-ab12cd34", "state/bundles/20261207-2210-ab12cd34", gate={...})
    registry.promote("20261207-2210-ab12cd34")                  # the champion from now on
    registry.rollback()                                         # back to the one before
    watcher = BundleWatcher(registry, predictor).start()        # each replica: load and swap in the background

A version is a bundle folder (or a Hub repo id) written beside the others, never over one. The
"serving" row names the champion and the one it replaced, so a rollback is the same operation as
a promotion. Replicas poll the row (every `poll_s`) and load a new champion off the request path;
the predictor then switches between two requests (service.predictor.Predictor.swap), and the old
bundle is dropped once the requests that hold it finish: at most one old bundle is in memory.
"""

import json
import logging
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

import storage

LOGGER = logging.getLogger(__name__)

METADATA = sa.MetaData()
VERSIONS = sa.Table(
    "bundle_versions", METADATA,
    sa.Column("version", sa.Text(), primary_key=True),
    sa.Column("path", sa.Text(), nullable=False),
    sa.Column("created", sa.Double(), nullable=False),
    sa.Column("parent", sa.Text()),
    sa.Column("gate", sa.Text()),  # the gate's JSON (pipeline.gate): its table, whether it passed, why
)
SERVING = sa.Table(
    "serving", METADATA,
    sa.Column("slot", sa.Integer(), primary_key=True),  # always 1: one champion
    sa.Column("version", sa.Text(), nullable=False),
    sa.Column("previous", sa.Text()),
    sa.Column("changed", sa.Double(), nullable=False),
)


class RegistryError(ValueError):
    """A promotion or rollback that cannot be made; the message says why, for the operator."""


@dataclass(frozen=True)
class Version:
    version: str
    path: str
    created: float
    parent: str | None
    gate: dict | None


class BundleRegistry:
    def __init__(self, target, busy_timeout_s=10.0):
        self.target = str(target)
        self.engine = storage.open_engine(self.target, schema="registry", synchronous="FULL", busy_timeout_s=busy_timeout_s)
        storage.create_tables(self.engine, METADATA)

    def register(self, version, path, parent=None, gate=None):
        """Record a bundle version (idempotent: a version's folder never changes)."""
        values = dict(version=str(version), path=str(path), created=time.time(), parent=parent,
                      gate=None if gate is None else json.dumps(gate))
        with self.engine.begin() as connection:
            storage.insert_ignoring_duplicates(connection, VERSIONS, values, key=["version"])
        return self.version(version)

    def version(self, version):
        rows = storage.read(self.engine, sa.select(VERSIONS).where(VERSIONS.c.version == str(version)))
        return _version(rows[0]) if rows else None

    def versions(self):
        """Every registered version, newest first."""
        return [_version(row) for row in storage.read(self.engine, sa.select(VERSIONS).order_by(VERSIONS.c.created.desc()))]

    def serving(self):
        """(champion version, the one before it) or (None, None) before any promotion."""
        rows = storage.read(self.engine, sa.select(SERVING.c.version, SERVING.c.previous).where(SERVING.c.slot == 1))
        return tuple(rows[0]) if rows else (None, None)

    def champion(self):
        """The Version that serves, or None (the app's own --assets serve)."""
        version, _ = self.serving()
        return None if version is None else self.version(version)

    def promote(self, version, require_passed=True):
        """Make `version` the champion. With require_passed, only a version whose gate passed."""
        found = self.version(version)
        if found is None:
            raise RegistryError(f"No bundle version {version!r} is registered.")
        if require_passed and not (found.gate or {}).get("passed"):
            reasons = "; ".join((found.gate or {}).get("reasons", ["it was never checked against the champion"]))
            raise RegistryError(f"Version {version} did not pass the gate: {reasons}.")
        self._set(found.version)
        return found

    def rollback(self):
        """Serve the version the champion replaced; returns it."""
        current, previous = self.serving()
        if previous is None:
            raise RegistryError("There is no earlier version to roll back to.")
        self._set(previous)
        return self.version(previous)

    def _set(self, version):
        with self.engine.begin() as connection:
            current = connection.execute(sa.select(SERVING.c.version).where(SERVING.c.slot == 1)).scalar()
            if current == version:
                return
            if current is None:
                connection.execute(sa.insert(SERVING).values(slot=1, version=version, previous=None, changed=time.time()))
            else:
                connection.execute(sa.update(SERVING).where(SERVING.c.slot == 1).values(
                    version=version, previous=current, changed=time.time()))

    def close(self):
        self.engine.dispose()


def _version(row):
    return Version(row.version, row.path, row.created, row.parent, None if row.gate is None else json.loads(row.gate))


class BundleWatcher:
    """Keeps a predictor serving the registry's champion: polls the serving row, loads a new
    champion in this thread (off the request path) and swaps it in between requests."""

    def __init__(self, registry, predictor, load, poll_s=2.0):
        self.registry, self.predictor, self.load, self.poll_s = registry, predictor, load, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bundle-watcher", daemon=True)

    def start(self):
        self.check()
        self._thread.start()
        return self

    def check(self):
        """Load and swap in the champion if it is not the one serving; returns the version serving."""
        champion = self.registry.champion()
        if champion is not None and champion.version != self.predictor.bundle.version:
            bundle = self.load(champion.path)
            if bundle.version != champion.version:
                raise RegistryError(f"{champion.path} holds bundle version {bundle.version}, not {champion.version}.")
            self.predictor.swap(bundle)
            LOGGER.info("now serving bundle version %s", champion.version)
        return self.predictor.bundle.version

    def stop(self):
        self._stop.set()

    def _run(self):
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # a bundle that fails to load must not stop the watch, nor the serving one
                LOGGER.exception("could not switch to the registry's champion; still serving %s", self.predictor.bundle.version)
