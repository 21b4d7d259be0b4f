"""The database layer: which target the app's stores use, plain messages, and the few pieces of
SQL that differ between SQLite and PostgreSQL (run on both, the second a real server)."""

import threading
import time

import pytest
import sqlalchemy as sa

import storage
from bundle.labels import CLASS_NAMES
from monitoring.log import LogError, PredictionLog
from service.corrections import CorrectionStore


def test_the_command_line_wins_then_the_environment_then_sqlite_in_the_state_folder(tmp_path):
    url = "postgresql://app@db.example:5432/honest"
    assert storage.configured_url("postgresql://cli@h/db", {storage.ENVIRONMENT_VARIABLE: url}) == "postgresql://cli@h/db"
    assert storage.configured_url(None, {storage.ENVIRONMENT_VARIABLE: url}) == url
    assert storage.configured_url(None, {}) is None
    assert storage.state_targets(url, tmp_path) == storage.StateTargets(url, url, shared=True)
    default = storage.state_targets(None, tmp_path)
    assert (default.log, default.corrections, default.shared) == (
        str(tmp_path / "monitoring.sqlite"), str(tmp_path / "corrections.sqlite"), False)
    folder = storage.state_targets(f"sqlite:///{tmp_path}/elsewhere", tmp_path)
    assert folder.log == f"{tmp_path}/elsewhere/monitoring.sqlite"


def test_a_password_never_reaches_a_message():
    shown = storage.describe("postgresql://app:s3cret@db.example:5432/honest")
    assert "s3cret" not in shown and "db.example:5432/honest" in shown


def test_an_unreachable_server_is_one_plain_sentence_at_once():
    started = time.perf_counter()
    with pytest.raises(LogError, match=r"Could not open the prediction log postgresql://app:\*\*\*@127.0.0.1:1/none: .*refused"):
        PredictionLog("postgresql://app:s3cret@127.0.0.1:1/none")
    assert time.perf_counter() - started < 10


def test_whole_minutes_are_truncated_on_both_dialects(store_target):
    engine = storage.open_engine(store_target, schema="public" if "postgresql" in store_target else None)
    with engine.connect() as connection:
        values = [connection.execute(sa.select(storage.floor_integer(sa.literal(x, sa.Double())))).scalar()
                  for x in (0.0, 0.4, 0.5, 0.99, 1.0, 2.5, 59.9)]
    assert values == [0, 0, 0, 0, 1, 2, 59]
    engine.dispose()


def test_replicas_starting_at_once_create_the_tables_once(store_target):
    """Four processes' stores opening one empty database at the same moment (PostgreSQL would
    otherwise race on its catalogue and fail one of them)."""
    errors, stores, barrier = [], [], threading.Barrier(4)

    def start():
        barrier.wait()
        try:
            stores.append(CorrectionStore(store_target, CLASS_NAMES))
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(stores) == 4
    stores[0].vote(b"png", "0" * 32, "cat", None, "refused", "v", "s")
    assert [len(store.votes()) for store in stores] == [1, 1, 1, 1]
    for store in stores:
        store.close()


def test_the_three_stores_share_one_postgresql_database_in_schemas_of_their_own(postgres_server):
    import psycopg

    from service.limits import SharedCounters

    url = postgres_server.new_database()
    PredictionLog(url).close()
    CorrectionStore(url, CLASS_NAMES).close()
    SharedCounters(url).close()
    with psycopg.connect(url) as connection:
        tables = connection.execute("SELECT table_schema, table_name FROM information_schema.tables"
                                    " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
    assert tables == [("corrections", "pictures"), ("corrections", "votes"), ("limits", "counts"),
                      ("monitoring", "pictures"), ("monitoring", "predictions")]


def test_a_sqlite_reader_never_waits_for_the_writer(tmp_path):
    writer_engine = storage.open_engine(str(tmp_path / "x.sqlite"), "x")
    reader_engine = storage.open_engine(str(tmp_path / "x.sqlite"), "x", busy_timeout_s=5.0)
    with writer_engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (a INTEGER)")
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")
    with writer_engine.begin() as writer:
        writer.exec_driver_sql("INSERT INTO t VALUES (2)")  # the write lock is held from here
        started = time.perf_counter()
        assert storage.read(reader_engine, sa.text("SELECT count(*) FROM t")) == [(1,)], "the last committed snapshot"
        assert time.perf_counter() - started < 1.0, "a reader behind BEGIN IMMEDIATE would wait up to 5 s"
    assert storage.read(reader_engine, sa.text("SELECT count(*) FROM t")) == [(2,)]
