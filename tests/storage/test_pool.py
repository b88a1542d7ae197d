"""DatabasePool and Txn on every engine: commit/rollback, callbacks, retries, threads, helpers."""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

import pytest
from twisted.internet import defer

from homeserver.storage.pool import (
    DatabasePool,
    PoolClosedError,
    Txn,
    simple_insert_txn,
    simple_select_list_txn,
    simple_upsert_txn,
)
from tests.storage.harness import TestDatabase, ThreadCallbackReactor, get_failure, get_success

_CREATE = "CREATE TABLE kv (k TEXT NOT NULL PRIMARY KEY, v BIGINT, flag BOOLEAN, blob BYTEA)"


class Boom(Exception):
    """A deliberate failure inside a transaction function."""


def _make_table(pool: DatabasePool) -> None:
    def create_txn(txn: Txn) -> None:
        txn.execute(_CREATE)

    get_success(pool.run_txn("create", create_txn))


def _count(pool: DatabasePool) -> int:
    def count_txn(txn: Txn) -> int:
        txn.execute("SELECT COUNT(*) FROM kv")
        row = txn.fetchone()
        assert row is not None
        return int(row[0])

    return get_success(pool.run_read("count", count_txn))


@pytest.fixture
def pool(database: TestDatabase) -> DatabasePool:
    p = database.make_pool()
    _make_table(p)
    return p


class TransactionTests:
    def test_commit_and_read_back(self, pool: DatabasePool) -> None:
        """A returned txn function commits; a later read transaction sees the rows."""

        def insert_txn(txn: Txn, k: str, v: int) -> str:
            txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (k, v))
            assert txn.rowcount == 1
            return "done"

        assert get_success(pool.run_txn("insert", insert_txn, "a", 1)) == "done"
        assert get_success(pool.run_txn("insert", insert_txn, k="b", v=2)) == "done"

        def read_txn(txn: Txn) -> list[tuple[Any, ...]]:
            txn.execute("SELECT k, v FROM kv ORDER BY k")
            return txn.fetchall()

        assert get_success(pool.run_read("read", read_txn)) == [("a", 1), ("b", 2)]

    def test_rollback_on_exception(self, pool: DatabasePool) -> None:
        """An exception rolls back every statement of the transaction and reaches the caller."""

        def failing_txn(txn: Txn) -> None:
            txn.execute("INSERT INTO kv (k, v) VALUES ('a', 1)")
            raise Boom()

        get_failure(pool.run_txn("fail", failing_txn), Boom)
        assert _count(pool) == 0

    def test_sql_error_rolls_back_and_pool_recovers(self, pool: DatabasePool) -> None:
        """A constraint violation propagates and the connection is usable afterwards."""

        def dup_txn(txn: Txn) -> None:
            txn.execute("INSERT INTO kv (k) VALUES ('x')")
            txn.execute("INSERT INTO kv (k) VALUES ('x')")

        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            get_success(pool.run_txn("dup", dup_txn))
        assert _count(pool) == 0
        get_success(pool.simple_insert("ok", "kv", {"k": "y"}))
        assert _count(pool) == 1

    def test_read_transaction_cannot_write(self, pool: DatabasePool) -> None:
        """run_read is read-only on both engines, and the pool still writes afterwards."""

        def write_txn(txn: Txn) -> None:
            txn.execute("INSERT INTO kv (k) VALUES ('a')")

        with pytest.raises(Exception, match=r"(?i)read.?only"):
            get_success(pool.run_read("sneaky", write_txn))
        get_success(pool.run_txn("fine", write_txn))
        assert _count(pool) == 1

    def test_execute_many_and_fetchone(self, pool: DatabasePool) -> None:
        def many_txn(txn: Txn) -> tuple[Any, ...] | None:
            txn.execute_many("INSERT INTO kv (k, v) VALUES (?, ?)", [(f"k{i}", i) for i in range(250)])
            txn.execute("SELECT SUM(v) FROM kv")
            first = txn.fetchone()
            assert txn.fetchone() is None
            return first

        assert get_success(pool.run_txn("many", many_txn)) == (sum(range(250)),)

    def test_fetch_after_statement_without_results(self, pool: DatabasePool) -> None:
        """fetchall/fetchone after DDL or UPDATE give []/None on both engines (psycopg2 would raise)."""

        def txn_fn(txn: Txn) -> tuple[Any, Any]:
            txn.execute("UPDATE kv SET v = 1")
            return txn.fetchall(), txn.fetchone()

        assert get_success(pool.run_txn("nores", txn_fn)) == ([], None)


class CallbackTests:
    def test_call_after_runs_only_after_commit(self, pool: DatabasePool) -> None:
        """call_after callbacks run after commit, in order, with their arguments."""
        calls: list[Any] = []

        def txn_fn(txn: Txn) -> None:
            txn.execute("INSERT INTO kv (k) VALUES ('a')")
            txn.call_after(calls.append, "first")
            txn.call_after(lambda *, x: calls.append(x), x="second")
            txn.call_on_exception(calls.append, "never")
            assert calls == []

        get_success(pool.run_txn("cb", txn_fn))
        assert calls == ["first", "second"]

    def test_call_after_not_run_on_failure(self, pool: DatabasePool) -> None:
        """A failed txn skips call_after and runs call_on_exception instead."""
        calls: list[str] = []

        def txn_fn(txn: Txn) -> None:
            txn.call_after(calls.append, "after")
            txn.call_on_exception(calls.append, "undo")
            raise Boom()

        get_failure(pool.run_txn("cb", txn_fn), Boom)
        assert calls == ["undo"]

    def test_failing_callback_is_logged_not_raised(self, pool: DatabasePool, caplog: Any) -> None:
        """A broken callback does not turn a committed txn into an error or stop later callbacks."""
        calls: list[str] = []

        def txn_fn(txn: Txn) -> int:
            txn.call_after(lambda: 1 / 0)
            txn.call_after(calls.append, "still runs")
            return 7

        with caplog.at_level(logging.ERROR, logger="homeserver.storage.pool"):
            assert get_success(pool.run_txn("cbfail", txn_fn)) == 7
        assert calls == ["still runs"]
        assert "after callback of txn cbfail failed" in caplog.text


class TypeNormalisationTests:
    def test_booleans_are_bools(self, pool: DatabasePool) -> None:
        """BOOLEAN columns come back as bool on both engines (SQLite stores 0/1); NULL stays None."""

        def txn_fn(txn: Txn) -> list[tuple[Any, ...]]:
            txn.execute_many(
                "INSERT INTO kv (k, flag) VALUES (?, ?)", [("t", True), ("f", False), ("n", None)]
            )
            txn.execute("SELECT k, flag FROM kv ORDER BY k")
            return txn.fetchall()

        rows = get_success(pool.run_txn("bools", txn_fn))
        assert rows == [("f", False), ("n", None), ("t", True)]
        assert [type(flag) for _, flag in rows] == [bool, type(None), bool]

    def test_binary_is_bytes(self, pool: DatabasePool) -> None:
        """BYTEA columns come back as bytes on both engines (psycopg2 would give memoryview)."""
        get_success(pool.simple_insert("bin", "kv", {"k": "b", "blob": b"\x00\xffab"}))
        value = get_success(pool.simple_select_one_onecol("bin", "kv", {"k": "b"}, "blob"))
        assert value == b"\x00\xffab" and type(value) is bytes

    def test_placeholders_in_literals_and_percent(self, pool: DatabasePool) -> None:
        """``?`` inside a literal is not a placeholder; ``%`` survives on PostgreSQL."""

        def txn_fn(txn: Txn) -> list[tuple[Any, ...]]:
            txn.execute("INSERT INTO kv (k, v) VALUES ('what?', ?)", (1,))
            txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", ("100%", 2))
            txn.execute("SELECT k, v FROM kv WHERE k LIKE '%?' OR k LIKE ? ORDER BY v", ("%\\%%",))
            return txn.fetchall()

        rows = get_success(pool.run_txn("lit", txn_fn))
        assert rows[0] == ("what?", 1)


class InListTests:
    def test_many_values_in_batches(self, pool: DatabasePool) -> None:
        """in_list_batches finds every row among thousands of values; in_list handles one batch."""
        keys = [f"k{i}" for i in range(2500)]

        def txn_fn(txn: Txn) -> tuple[set[str], int, list[tuple[Any, ...]]]:
            txn.execute_many("INSERT INTO kv (k, v) VALUES (?, ?)", [(k, i) for i, k in enumerate(keys)])
            found: set[str] = set()
            batches = 0
            for clause, args in txn.engine.in_list_batches("k", [*keys, "missing"]):
                batches += 1
                txn.execute(f"SELECT k FROM kv WHERE {clause}", args)
                found.update(row[0] for row in txn.fetchall())
            clause, args = txn.engine.in_list("kv.k", keys[:3])
            txn.execute(f"SELECT v FROM kv WHERE {clause} ORDER BY v", args)
            return found, batches, txn.fetchall()

        found, batches, first = get_success(pool.run_txn("inlist", txn_fn))
        assert found == set(keys) and batches == 3
        assert first == [(0,), (1,), (2,)]

    def test_empty_list_matches_nothing(self, pool: DatabasePool) -> None:
        def txn_fn(txn: Txn) -> list[tuple[Any, ...]]:
            txn.execute("INSERT INTO kv (k) VALUES ('a')")
            clause, args = txn.engine.in_list("k", [])
            txn.execute(f"SELECT k FROM kv WHERE {clause}", args)
            return txn.fetchall()

        assert get_success(pool.run_txn("empty", txn_fn)) == []


class RetryTests:
    def test_injected_retryable_error_is_retried(self, database: TestDatabase) -> None:
        """A retryable error re-runs the whole function on a clean transaction; callbacks follow attempts."""
        pool = database.make_pool(txn_retries=3)
        _make_table(pool)
        attempts: list[int] = []
        calls: list[str] = []

        def flaky_txn(txn: Txn) -> int:
            attempts.append(1)
            txn.execute("INSERT INTO kv (k, v) VALUES ('a', ?)", (len(attempts),))
            txn.call_after(calls.append, f"after{len(attempts)}")
            txn.call_on_exception(calls.append, f"undo{len(attempts)}")
            if len(attempts) < 3:
                raise _retryable_error(database.engine_name)
            return len(attempts)

        assert get_success(pool.run_txn("flaky", flaky_txn)) == 3
        assert calls == ["undo1", "undo2", "after3"]
        assert get_success(pool.simple_select_list("read", "kv", {}, ["k", "v"])) == [("a", 3)]

    def test_retries_are_bounded(self, database: TestDatabase) -> None:
        pool = database.make_pool(txn_retries=2)
        attempts: list[int] = []

        def always_txn(txn: Txn) -> None:
            attempts.append(1)
            raise _retryable_error(database.engine_name)

        get_failure(pool.run_txn("always", always_txn), Exception)
        assert len(attempts) == 3

    def test_other_errors_are_not_retried(self, pool: DatabasePool) -> None:
        attempts: list[int] = []

        def bad_txn(txn: Txn) -> None:
            attempts.append(1)
            raise Boom()

        get_failure(pool.run_txn("bad", bad_txn), Boom)
        assert attempts == [1]


def _retryable_error(engine_name: str) -> Exception:
    if engine_name == "sqlite":
        return sqlite3.OperationalError("database is locked")
    import psycopg2.errors

    return psycopg2.errors.SerializationFailure("could not serialize access")


@pytest.mark.postgres
class PostgresSerializationTests:
    def _setup(self, db: TestDatabase) -> DatabasePool:
        pool = db.make_pool(txn_retries=3)
        _make_table(pool)
        get_success(pool.simple_insert("seed", "kv", {"k": "counter", "v": 0}))
        return pool

    def test_concurrent_update_is_a_serialization_failure(self, postgres_database: TestDatabase) -> None:
        """Two REPEATABLE READ txns updating one row: the second fails with a retryable error."""
        self._setup(postgres_database)
        engine = postgres_database.make_engine()
        a, b = engine.connect(readonly=False), engine.connect(readonly=False)
        try:
            ca, cb = a.cursor(), b.cursor()
            ca.execute("SELECT v FROM kv WHERE k = 'counter'")
            cb.execute("SELECT v FROM kv WHERE k = 'counter'")
            cb.execute("UPDATE kv SET v = v + 1 WHERE k = 'counter'")
            b.commit()
            with pytest.raises(Exception) as info:
                ca.execute("UPDATE kv SET v = v + 1 WHERE k = 'counter'")
            assert engine.is_retryable(info.value)
            a.rollback()
        finally:
            a.close()
            b.close()

    def test_pool_retries_serialization_failure(self, postgres_database: TestDatabase) -> None:
        """A txn that loses a race is re-run on a fresh snapshot and both increments survive."""
        pool = self._setup(postgres_database)
        rival = postgres_database.make_engine().connect(readonly=False)
        attempts: list[int] = []

        def increment_txn(txn: Txn) -> int:
            attempts.append(1)
            txn.execute("SELECT v FROM kv WHERE k = 'counter'")
            row = txn.fetchone()
            assert row is not None
            if len(attempts) == 1:  # a concurrent txn commits after our snapshot was taken
                cur = rival.cursor()
                cur.execute("UPDATE kv SET v = v + 1 WHERE k = 'counter'")
                rival.commit()
            txn.execute("UPDATE kv SET v = ? WHERE k = 'counter'", (row[0] + 1,))
            return int(row[0]) + 1

        try:
            assert get_success(pool.run_txn("increment", increment_txn)) == 2
        finally:
            rival.close()
        assert len(attempts) == 2
        assert get_success(pool.simple_select_one_onecol("get", "kv", {"k": "counter"}, "v")) == 2

    def test_broken_connection_is_replaced(self, postgres_database: TestDatabase) -> None:
        """After the server drops a connection, the failing txn errors and the next one reconnects."""
        pool = self._setup(postgres_database)

        def kill_self_txn(txn: Txn) -> None:
            txn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        get_failure(pool.run_txn("kill", kill_self_txn), Exception)
        assert get_success(pool.simple_select_one_onecol("get", "kv", {"k": "counter"}, "v")) == 0


class ThreadedTests:
    def test_concurrent_writes_serialise_on_writer_thread(self, database: TestDatabase) -> None:
        """20 concurrent read-modify-write increments on real threads all land.

        SQLite: every write runs on one writer thread. PostgreSQL: conflicting increments fail with
        serialization errors and are retried (each loss means another increment won, so 20 retries
        always suffice).
        """
        reactor = ThreadCallbackReactor()
        pool = database.make_pool(reactor=reactor, run_in_thread=True, pool_max=4, txn_retries=20)
        try:
            self._run_increments(database, reactor, pool)
        finally:
            database.close_pools(reactor)

    def _run_increments(
        self, database: TestDatabase, reactor: ThreadCallbackReactor, pool: DatabasePool
    ) -> None:
        reactor.wait(defer.ensureDeferred(pool.run_txn("create", lambda txn: txn.execute(_CREATE))))
        reactor.wait(defer.ensureDeferred(pool.simple_insert("seed", "kv", {"k": "n", "v": 0})))
        writer_threads: set[int] = set()
        reader_threads: set[int] = set()

        def increment_txn(txn: Txn) -> None:
            writer_threads.add(threading.get_ident())
            txn.execute("SELECT v FROM kv WHERE k = 'n'")
            row = txn.fetchone()
            assert row is not None
            txn.execute("UPDATE kv SET v = ? WHERE k = 'n'", (row[0] + 1,))

        def read_txn(txn: Txn) -> Any:
            reader_threads.add(threading.get_ident())
            txn.execute("SELECT v FROM kv WHERE k = 'n'")
            return txn.fetchall()

        d = defer.gatherResults(
            [defer.ensureDeferred(pool.run_txn(f"inc{i}", increment_txn)) for i in range(20)]
            + [defer.ensureDeferred(pool.run_read(f"read{i}", read_txn)) for i in range(5)]
        )
        reactor.wait(d)
        assert reactor.wait(defer.ensureDeferred(pool.run_read("final", read_txn))) == [(20,)]
        assert threading.get_ident() not in writer_threads | reader_threads
        if database.engine_name == "sqlite":
            assert len(writer_threads) == 1
            assert not writer_threads & reader_threads

    def test_close_waits_for_in_flight(self, database: TestDatabase) -> None:
        """close() waits for a running txn, then refuses new ones."""
        reactor = ThreadCallbackReactor()
        pool = database.make_pool(reactor=reactor, run_in_thread=True)
        started, release = threading.Event(), threading.Event()

        def slow_txn(txn: Txn) -> str:
            started.set()
            assert release.wait(10)
            return "finished"

        running = defer.ensureDeferred(pool.run_txn("slow", slow_txn))
        assert started.wait(10)
        closing = defer.ensureDeferred(pool.close())
        assert not closing.called
        release.set()
        assert reactor.wait(running) == "finished"
        reactor.wait(closing)
        with pytest.raises(PoolClosedError):
            get_success(pool.run_txn("late", slow_txn))
        database.pools.clear()

    def test_threaded_pool_needs_reactor(self, database: TestDatabase) -> None:
        with pytest.raises(ValueError):
            DatabasePool(database.make_engine(), None, run_in_thread=True)


class HelperTests:
    def test_insert_upsert_select(self, pool: DatabasePool) -> None:
        get_success(pool.simple_insert("ins", "kv", {"k": "a", "v": 1}))
        get_success(pool.simple_upsert("ups", "kv", {"k": "a"}, {"v": 2, "flag": True}))
        get_success(pool.simple_upsert("ups", "kv", {"k": "b"}, {"v": 3}))
        get_success(pool.simple_upsert("ups", "kv", {"k": "b"}, {}))  # DO NOTHING on conflict
        assert get_success(pool.simple_select_one_onecol("sel", "kv", {"k": "a"}, "v")) == 2
        assert get_success(pool.simple_select_one_onecol("sel", "kv", {"k": "zz"}, "v")) is None
        rows = sorted(get_success(pool.simple_select_list("list", "kv", {}, ["k", "v", "flag"])))
        assert rows == [("a", 2, True), ("b", 3, None)]

    @pytest.mark.parametrize(
        "call",
        [
            lambda txn: simple_insert_txn(txn, "kv; DROP TABLE kv", {"k": "a"}),
            lambda txn: simple_insert_txn(txn, "kv", {"k) VALUES ('x'); --": "a"}),
            lambda txn: simple_insert_txn(txn, "kv", {}),
            lambda txn: simple_upsert_txn(txn, "kv", {}, {"v": 1}),
            lambda txn: simple_select_list_txn(txn, "kv", {"k": "a"}, []),
            lambda txn: simple_select_list_txn(txn, "kv", {"1=1 OR k": "a"}, ["k"]),
        ],
    )
    def test_bad_identifiers_rejected(self, pool: DatabasePool, call: Any) -> None:
        get_failure(pool.run_txn("bad", call), ValueError)
        assert _count(pool) == 0


class LoggingTests:
    def test_txn_logged_with_desc_never_args(self, pool: DatabasePool, caplog: Any) -> None:
        """Each txn is logged at DEBUG with its desc and duration; argument values never appear."""

        def secret_txn(txn: Txn, password: str) -> None:
            txn.execute("INSERT INTO kv (k) VALUES (?)", (password,))

        with caplog.at_level(logging.DEBUG, logger="homeserver.storage"):
            get_success(pool.run_txn("store_password_hash", secret_txn, "hunter2-secret"))
        assert "hunter2-secret" not in caplog.text
        assert any(
            "store_password_hash" in r.getMessage() and " ms" in r.getMessage() for r in caplog.records
        )
        assert any(r.name == "homeserver.storage.sql" for r in caplog.records)
