"""Where the app's state lives: a SQLite file (the embedded default) or a PostgreSQL database
that several app processes share. The stores (monitoring.log, service.corrections,
service.limits) write one dialect-neutral SQLAlchemy Core code path over the engine made here.

    url = configured_url(args.database)       # --database, else $HONEST_DATABASE_URL, else None
    targets = state_targets(url, "state")      # where the log, the corrections and the counters go
    engine = open_engine("state/monitoring.sqlite", schema="monitoring", synchronous="NORMAL")
    engine = open_engine("postgresql://app@db.example:5432/honest", schema="monitoring")
    create_tables(engine, metadata)            # safe when two replicas start at once

A target is a PostgreSQL URL (postgresql://user:password@host:port/database, or
postgresql://user@/database?host=/socket/dir) or a SQLite file (a path or sqlite:///path).
On PostgreSQL each store keeps its tables in a schema of its own (monitoring, corrections,
limits), so that one database holds all three while the table names stay those of the SQLite
files written before (both files have a table called "pictures").
"""

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.compiler import compiles

ENVIRONMENT_VARIABLE = "HONEST_DATABASE_URL"
SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")
# A replica answers up to 8 requests at once (the app's queue workers), each holding a
# connection for one short transaction: 4 kept open, up to 12 in all, per store and process.
POOL_SIZE, POOL_OVERFLOW = 4, 8


class DatabaseError(RuntimeError):
    """The database cannot be reached, opened or used; the message says which and why."""


@dataclass(frozen=True)
class StateTargets:
    log: str  # the monitoring log (monitoring.PredictionLog)
    corrections: str  # visitors' votes and pictures (service.corrections.CorrectionStore)
    shared: bool  # True: several processes share it, so the rate-limit counters go there too


def configured_url(value=None, environ=os.environ):
    """The database the command line or the environment names, or None (SQLite in the state folder)."""
    return value or environ.get(ENVIRONMENT_VARIABLE) or None


def is_postgresql(target):
    return isinstance(target, str) and target.startswith(SCHEMES)


def state_targets(database, state_dir):
    """Targets of the app's stores: all in one PostgreSQL database, or two SQLite files in a
    folder (`database` as a folder or sqlite:///folder; default the state folder)."""
    if is_postgresql(database):
        return StateTargets(database, database, shared=True)
    folder = Path(_sqlite_path(database)) if database else Path(state_dir)
    return StateTargets(str(folder / "monitoring.sqlite"), str(folder / "corrections.sqlite"), shared=False)


def describe(target):
    """The target as it may be shown in a message: never with its password."""
    if is_postgresql(target):
        return sa.make_url(target).render_as_string(hide_password=True)
    return str(target)


def open_engine(target, schema, synchronous="NORMAL", busy_timeout_s=10.0):
    """An engine for one store. SQLite: WAL (readers never wait for the writer), `synchronous`
    (FULL: a commit is on disk before it returns), a busy timeout instead of 'database is
    locked', foreign keys on, and BEGIN IMMEDIATE so that two writers queue instead of
    deadlocking. PostgreSQL: a small pool, tables in `schema`; every commit is durable there
    (synchronous_commit is on by default)."""
    if is_postgresql(target):
        engine = sa.create_engine(_driver_url(target), pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW,
                                  pool_pre_ping=True, pool_timeout=busy_timeout_s,
                                  connect_args={"connect_timeout": max(1, int(busy_timeout_s))})
        return engine.execution_options(schema_translate_map={None: schema})
    path = Path(_sqlite_path(target))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Votes, pictures and the log are the owner's alone; SQLite gives its -wal and -shm files the
    # database file's own mode.
    path.touch(mode=0o600)
    path.chmod(0o600)
    engine = sa.create_engine(
        f"sqlite:///{path}", pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_timeout=busy_timeout_s,
        connect_args={"timeout": busy_timeout_s, "isolation_level": None, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def configure(connection, _record):
        # The busy timeout first: replicas opening one new file at once queue on its lock.
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        # Bigger pages hold three 2.5 kB thumbnails where 4 kB pages hold one (no effect on an
        # existing file); both settings must precede the first write of a new file.
        connection.execute("PRAGMA page_size = 8192")
        _set_wal(connection, busy_timeout_s)
        connection.execute(f"PRAGMA synchronous = {synchronous}")
        connection.execute("PRAGMA foreign_keys = ON")

    @sa.event.listens_for(engine, "begin")
    def begin(connection):
        # A reader (`read`) takes a snapshot with a deferred BEGIN and never holds the write lock.
        connection.exec_driver_sql("BEGIN" if connection.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def _set_wal(connection, busy_timeout_s):
    """journal_mode=WAL, retried: switching a new file's journal needs its lock for a moment, and
    SQLite answers "database is locked" at once, without the busy timeout, when another connection
    is creating the same file's tables."""
    import time

    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


READ_ONLY = "honest_read_only"  # an execution option: this connection only reads


def read(engine, query):
    """All rows of `query`, in a transaction that only reads (on SQLite: without the write lock)."""
    with engine.connect() as connection:
        return connection.execution_options(**{READ_ONLY: True}).execute(query).all()


def create_tables(engine, metadata):
    """Create what is missing of `metadata`'s tables. On PostgreSQL the schema too, under an
    advisory lock: two replicas starting at once would otherwise race on the catalogue. A table
    that exists without all of today's columns was made by an older version: DatabaseError, with
    a plain "move it aside" (nothing is migrated)."""
    with engine.begin() as connection:
        schema = None
        if connection.dialect.name == "postgresql":
            schema = connection.get_execution_options()["schema_translate_map"][None]
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:schema))"), {"schema": schema})
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        metadata.create_all(connection, checkfirst=True)
        inspector = sa.inspect(connection)
        for table in metadata.tables.values():
            present = {column["name"] for column in inspector.get_columns(table.name, schema=schema)}
            missing = sorted({column.name for column in table.columns} - present)
            if missing:
                raise DatabaseError(f"Table {table.name} in {describe(str(engine.url))} was made by an older version "
                                    f"(it lacks {', '.join(missing)}); move that store aside, or give another state "
                                    "folder or database, and start again.")


def insert_ignoring_duplicates(connection, table, values, key):
    """INSERT ... ON CONFLICT (key) DO NOTHING, which both dialects speak; any other failure
    (a missing value) still raises."""
    insert = postgresql_dialect.insert if connection.dialect.name == "postgresql" else sqlite_dialect.insert
    return connection.execute(insert(table).values(**values).on_conflict_do_nothing(index_elements=key))


def upsert_returning(connection, table, values, key, set_, where, returning):
    """INSERT ... ON CONFLICT (key) DO UPDATE SET ... WHERE ... RETURNING ...: one atomic step
    in both dialects; None when the row exists and `where` did not hold."""
    insert = postgresql_dialect.insert if connection.dialect.name == "postgresql" else sqlite_dialect.insert
    statement = insert(table).values(**values)
    statement = statement.on_conflict_do_update(index_elements=key, set_=set_(statement.excluded), where=where)
    return connection.execute(statement.returning(returning)).scalar()


def is_duplicate(error):
    """Whether an IntegrityError is a unique-key violation (not a missing value or a foreign key)."""
    original = getattr(error, "orig", error)
    return getattr(original, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(original)


def error_text(error):
    """The driver's own one-line message, without SQLAlchemy's echo of the statement and its
    parameters (a picture's bytes have no place in a message)."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


def database_errors():
    """The exceptions a store turns into its own plain error."""
    errors = [sa.exc.SQLAlchemyError, sqlite3.Error]
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:
        pass
    return tuple(errors)


class floor_integer(sa.sql.functions.FunctionElement):
    """The integer part of a non-negative number: CAST(x AS INTEGER) truncates in SQLite but
    rounds in PostgreSQL, hence FLOOR first there."""

    type = sa.Integer()
    inherit_cache = True


@compiles(floor_integer)
def _floor_integer(element, compiler, **kw):
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"


@compiles(floor_integer, "postgresql")
def _floor_integer_postgresql(element, compiler, **kw):
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)}) AS INTEGER)"


def _driver_url(target):
    """postgresql://… -> the URL of psycopg 3, the driver requirements.txt pins."""
    for scheme in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if target.startswith(scheme):
            return "postgresql+psycopg://" + target[len(scheme):]
    raise ValueError(f"Not a PostgreSQL URL: {target!r}")


def _sqlite_path(target):
    target = str(target)
    return target[len("sqlite:///"):] if target.startswith("sqlite:///") else target
