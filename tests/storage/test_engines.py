"""Engine selection, settings validation, dialect conversion and connection set-up."""

from __future__ import annotations

import sqlite3

import pytest

from homeserver.storage.engines import (
    DatabaseSettings,
    DatabaseSettingsError,
    PostgresEngine,
    SqliteEngine,
    check_identifier,
    create_engine,
)
from homeserver.storage.engines.postgres import qmark_to_pyformat
from homeserver.storage.engines.sqlite import parse_sqlite_url
from tests.storage.harness import TestDatabase


class SettingsTests:
    def test_defaults_are_valid(self) -> None:
        """A URL alone gives usable settings."""
        s = DatabaseSettings(url="sqlite://:memory:")
        assert (s.pool_min, s.pool_max, s.sqlite_synchronous) == (1, 10, "NORMAL")

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"url": ""},
            {"url": 5},
            {"pool_min": 0},
            {"pool_min": 5, "pool_max": 4},
            {"pool_max": 10_000},
            {"pool_max": "5"},
            {"pool_max": True},
            {"txn_retries": -1},
            {"txn_retries": 1000},
            {"sqlite_synchronous": "OFF"},
            {"sqlite_synchronous": "normal; DROP TABLE x"},
            {"connect_timeout": 0},
            {"connect_timeout": "10"},
            {"connect_timeout": 1e9},
        ],
    )
    def test_rejects_bad_settings(self, kwargs: dict[str, object]) -> None:
        """Every bad field raises DatabaseSettingsError (a ValueError), never a raw TypeError."""
        args: dict[str, object] = {"url": "sqlite://:memory:", **kwargs}
        with pytest.raises(DatabaseSettingsError):
            DatabaseSettings(**args)  # type: ignore[arg-type]


class CreateEngineTests:
    def test_sqlite_memory(self) -> None:
        engine = create_engine(DatabaseSettings(url="sqlite://:memory:"))
        assert isinstance(engine, SqliteEngine)
        assert engine.name == "sqlite"
        assert engine.is_memory and not engine.has_reader_connections
        assert not engine.supports_multiple_writers

    def test_sqlite_paths(self) -> None:
        """Everything after sqlite:// is the path: three slashes make it absolute."""
        assert parse_sqlite_url("sqlite:///var/lib/sc.db") == "/var/lib/sc.db"
        assert parse_sqlite_url("sqlite://data/sc.db") == "data/sc.db"
        engine = create_engine(DatabaseSettings(url="sqlite:///tmp/x.db"))
        assert isinstance(engine, SqliteEngine) and engine.has_reader_connections

    @pytest.mark.parametrize("url", ["sqlite://", "sqlite://x.db?mode=ro", "sqlite://a\x00b"])
    def test_bad_sqlite_urls(self, url: str) -> None:
        with pytest.raises(DatabaseSettingsError):
            create_engine(DatabaseSettings(url=url))

    def test_postgres(self) -> None:
        """Creating a PostgreSQL engine does not connect."""
        for url in ("postgresql://u@127.0.0.1:1/db", "postgres://u@h/db"):
            engine = create_engine(DatabaseSettings(url=url))
            assert isinstance(engine, PostgresEngine)
            assert (
                engine.name == "postgres" and engine.supports_returning and engine.supports_multiple_writers
            )

    @pytest.mark.parametrize("url", ["mysql://x/y", "x", "file:///tmp/x.db"])
    def test_unknown_scheme(self, url: str) -> None:
        with pytest.raises(DatabaseSettingsError):
            create_engine(DatabaseSettings(url=url))


class ParamStyleTests:
    def test_sqlite_is_identity(self) -> None:
        engine = create_engine(DatabaseSettings(url="sqlite://:memory:"))
        assert engine.convert_param_style("SELECT ? WHERE x LIKE '%'") == "SELECT ? WHERE x LIKE '%'"

    def test_qmark_becomes_pyformat(self) -> None:
        engine = create_engine(DatabaseSettings(url="postgresql://u@h/db"))
        assert engine.convert_param_style("SELECT a FROM t WHERE b = ? AND c = ?") == (
            "SELECT a FROM t WHERE b = %s AND c = %s"
        )

    def test_literals_comments_and_percent(self) -> None:
        """``?`` in literals/identifiers/comments stays; every ``%`` is doubled for psycopg2."""
        sql = "SELECT '?', \"a?\", x % 2 FROM t -- why?\nWHERE y LIKE 'a%' AND z = ? /* ? */"
        assert qmark_to_pyformat(sql) == (
            "SELECT '?', \"a?\", x %% 2 FROM t -- why?\nWHERE y LIKE 'a%%' AND z = %s /* ? */"
        )

    def test_unterminated_literal_does_not_crash(self) -> None:
        assert qmark_to_pyformat("SELECT 'abc ?") == "SELECT 'abc ?"
        assert qmark_to_pyformat("SELECT 1 /* ?") == "SELECT 1 /* ?"

    def test_conversion_is_cached(self) -> None:
        qmark_to_pyformat.cache_clear()
        qmark_to_pyformat("SELECT ? -- cache test")
        qmark_to_pyformat("SELECT ? -- cache test")
        assert qmark_to_pyformat.cache_info().hits == 1


class InListTests:
    engine = create_engine(DatabaseSettings(url="sqlite://:memory:"))

    def test_fragment(self) -> None:
        assert self.engine.in_list("e.event_id", ["$a", "$b"]) == ("e.event_id IN (?, ?)", ["$a", "$b"])

    def test_empty_is_always_false(self) -> None:
        assert self.engine.in_list("x", []) == ("1 = 0", [])

    def test_too_many_values(self) -> None:
        with pytest.raises(ValueError, match="in_list_batches"):
            self.engine.in_list("x", list(range(self.engine.max_in_list + 1)))

    @pytest.mark.parametrize("column", ["x; DROP TABLE t", "1x", "a.b.c", "", "x)"])
    def test_rejects_non_identifiers(self, column: str) -> None:
        with pytest.raises(ValueError):
            self.engine.in_list(column, [1])
        with pytest.raises(ValueError):
            list(self.engine.in_list_batches(column, [1]))

    def test_batches(self) -> None:
        batches = list(self.engine.in_list_batches("x", range(2500)))
        assert [len(args) for _, args in batches] == [1000, 1000, 500]
        assert [v for _, args in batches for v in args] == list(range(2500))
        assert list(self.engine.in_list_batches("x", [])) == []
        assert [len(a) for _, a in self.engine.in_list_batches("x", range(5), batch_size=2)] == [2, 2, 1]

    @pytest.mark.parametrize("size", [0, -1, 100_000])
    def test_bad_batch_size(self, size: int) -> None:
        with pytest.raises(ValueError):
            list(self.engine.in_list_batches("x", [1], batch_size=size))

    def test_check_identifier(self) -> None:
        assert check_identifier("events") == "events"
        with pytest.raises(ValueError):
            check_identifier(3)  # type: ignore[arg-type]


class RetryableTests:
    def test_sqlite_busy_and_locked(self) -> None:
        engine = create_engine(DatabaseSettings(url="sqlite://:memory:"))
        assert engine.is_retryable(sqlite3.OperationalError("database is locked"))
        assert engine.is_retryable(sqlite3.OperationalError("database table is locked: t"))
        busy = sqlite3.OperationalError("x")
        busy.sqlite_errorcode = 5 | (2 << 8)  # SQLITE_BUSY_SNAPSHOT: an extended BUSY code
        assert engine.is_retryable(busy)
        assert not engine.is_retryable(sqlite3.OperationalError("no such table: t"))
        assert not engine.is_retryable(sqlite3.IntegrityError("UNIQUE constraint failed"))
        assert not engine.is_retryable(ValueError("database is locked"))

    def test_postgres_sqlstates(self) -> None:
        engine = create_engine(DatabaseSettings(url="postgresql://u@h/db"))

        class FakePgError(Exception):
            def __init__(self, pgcode: str | None) -> None:
                self.pgcode = pgcode

        assert engine.is_retryable(FakePgError("40001"))
        assert engine.is_retryable(FakePgError("40P01"))
        assert not engine.is_retryable(FakePgError("23505"))
        assert not engine.is_retryable(FakePgError(None))
        assert not engine.is_retryable(RuntimeError())


class SqliteConnectionTests:
    def _pragma(self, conn: object, name: str) -> object:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]  # type: ignore[attr-defined]

    def test_writer_pragmas(self, tmp_path: object) -> None:
        """WAL, foreign keys, busy timeout and synchronous come from the settings."""
        engine = create_engine(
            DatabaseSettings(url=f"sqlite://{tmp_path}/a.db", sqlite_synchronous="FULL", connect_timeout=2.5)
        )
        conn = engine.connect(readonly=False)
        try:
            assert self._pragma(conn, "journal_mode") == "wal"
            assert self._pragma(conn, "foreign_keys") == 1
            assert self._pragma(conn, "synchronous") == 2  # FULL
            assert self._pragma(conn, "busy_timeout") == 2500
            assert self._pragma(conn, "query_only") == 0
        finally:
            conn.close()

    def test_reader_is_query_only(self, tmp_path: object) -> None:
        engine = create_engine(DatabaseSettings(url=f"sqlite://{tmp_path}/a.db"))
        conn = engine.connect(readonly=True)
        try:
            assert self._pragma(conn, "synchronous") == 1  # NORMAL
            assert self._pragma(conn, "query_only") == 1
            with pytest.raises(sqlite3.OperationalError):
                conn.execute("CREATE TABLE t (x INTEGER)")  # type: ignore[attr-defined]
        finally:
            conn.close()


@pytest.mark.postgres
class PostgresConnectionTests:
    def test_repeatable_read(self, postgres_database: TestDatabase) -> None:
        """Connections run at REPEATABLE READ and return BYTEA as bytes."""
        conn = postgres_database.make_engine().connect(readonly=False)
        try:
            cur = conn.cursor()
            cur.execute("SHOW transaction_isolation")
            assert cur.fetchone()[0] == "repeatable read"
            cur.execute("SELECT 'ab'::bytea")
            assert cur.fetchone()[0] == b"ab"
        finally:
            conn.close()
