"""PostgreSQL engine: psycopg2 connections at REPEATABLE READ.

Every transaction runs at ``REPEATABLE READ``, so a transaction sees one snapshot and a concurrent
conflicting write makes it fail with a serialization failure (SQLSTATE 40001) instead of silently
reading skewed data; deadlocks (40P01) are treated the same. The pool re-runs such transactions (see
``DatabaseSettings.txn_retries``), so transaction functions must keep side effects outside the
database in ``call_after`` callbacks.

psycopg2 is an optional dependency (the ``postgres`` extra) and is imported only when this engine is
created.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

from homeserver.storage.engines.base import (
    ColumnInfo,
    Connection,
    Cursor,
    DatabaseEngine,
    DatabaseSettings,
    DatabaseSettingsError,
    IndexInfo,
    QueryRunner,
    SchemaDescription,
)

#: serialization_failure, deadlock_detected.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
_BATCH_PAGE_SIZE = 100


@functools.lru_cache(maxsize=4096)
def qmark_to_pyformat(sql: str) -> str:
    """Rewrite ``?`` placeholders to ``%s`` and escape literal ``%`` as ``%%`` (cached).

    A ``?`` inside a string literal, quoted identifier or comment is left alone. Every ``%`` is doubled,
    because psycopg2 formats the whole statement text whenever arguments are passed (and the pool always
    passes them). Dollar-quoted strings are not portable SQL and are not recognised.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            end = sql.find(ch, i + 1)
            end = n if end == -1 else end + 1
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end == -1 else end + 2
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        else:
            out.append("%s" if ch == "?" else "%%" if ch == "%" else ch)
            i += 1
    return "".join(out)


def _validate_postgres_url(url: str) -> None:
    if not url.startswith(("postgresql://", "postgres://")):
        raise DatabaseSettingsError("postgres database url must start with postgresql://")


class PostgresEngine(DatabaseEngine):
    """The server engine (required for workers): see the module docstring."""

    name = "postgres"
    supports_returning = True
    supports_multiple_writers = True
    has_reader_connections = False  # reads and writes share one pool of connections

    def __init__(self, settings: DatabaseSettings) -> None:
        """Create the engine; raises :class:`DatabaseSettingsError` on a bad URL or missing psycopg2."""
        super().__init__(settings)
        _validate_postgres_url(settings.url)
        try:
            # Optional dependency, imported only when this engine is used.
            import psycopg2
            import psycopg2.errors
            import psycopg2.extensions
            import psycopg2.extras
        except ImportError as exc:  # pragma: no cover - psycopg2 is installed in every test env
            raise DatabaseSettingsError("PostgreSQL needs psycopg2 (install the 'postgres' extra)") from exc
        self._psycopg2 = psycopg2
        self._retryable_classes = (psycopg2.errors.SerializationFailure, psycopg2.errors.DeadlockDetected)

    def convert_param_style(self, sql: str) -> str:
        """``?`` becomes ``%s`` and ``%`` becomes ``%%`` (see :func:`qmark_to_pyformat`)."""
        return qmark_to_pyformat(sql)

    def is_retryable(self, exc: BaseException) -> bool:
        """Serialization failures and deadlocks (by SQLSTATE or psycopg2 class) are retryable."""
        return getattr(exc, "pgcode", None) in _RETRYABLE_SQLSTATES or isinstance(
            exc, self._retryable_classes
        )

    def is_connection_broken(self, conn: Connection) -> bool:
        """psycopg2 marks a connection whose server went away with a non-zero ``closed``."""
        return bool(getattr(conn, "closed", 0))

    def connect(self, *, readonly: bool) -> Connection:
        """Open a psycopg2 connection to the configured URL."""
        conn = self._psycopg2.connect(
            self.settings.url, connect_timeout=max(1, math.ceil(self.settings.connect_timeout))
        )
        try:
            self.on_new_connection(cast(Connection, conn), readonly=readonly)
        except BaseException:
            conn.close()
            raise
        return cast(Connection, conn)

    def on_new_connection(self, conn: Connection, *, readonly: bool) -> None:
        """REPEATABLE READ, UTF-8, and BYTEA returned as ``bytes`` (as on SQLite)."""
        ext = self._psycopg2.extensions
        raw: Any = conn
        # Reader connections are read-only for their whole session, which saves a
        # "SET TRANSACTION READ ONLY" round trip per read transaction.
        raw.set_session(isolation_level=ext.ISOLATION_LEVEL_REPEATABLE_READ, autocommit=False, readonly=readonly)
        raw.set_client_encoding("UTF8")
        binary = self._psycopg2.BINARY
        bytea_as_bytes = ext.new_type(
            binary.values, "SC_BYTEA", lambda value, cur: None if value is None else bytes(binary(value, cur))
        )
        ext.register_type(bytea_as_bytes, raw)

    def begin(self, cursor: Cursor, *, readonly: bool) -> None:
        """psycopg2 opens the transaction itself on the first statement; mark read-only ones (unless the
        connection is read-only for its whole session already)."""
        if readonly and not getattr(getattr(cursor, "connection", None), "readonly", False):
            cursor.execute("SET TRANSACTION READ ONLY", ())

    def execute_many(self, cursor: Cursor, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """``execute_batch`` sends pages of statements per round trip (``rowcount`` is then unreliable)."""
        self._psycopg2.extras.execute_batch(cursor, sql, list(rows), page_size=_BATCH_PAGE_SIZE)

    def list_tables(self, txn: QueryRunner) -> list[str]:
        """Base tables in the connection's current schema."""
        txn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        return [row[0] for row in txn.fetchall()]

    def describe_schema(self, txn: QueryRunner) -> SchemaDescription:
        """Columns from ``information_schema``; indexes from ``pg_index``."""
        tables: dict[str, set[ColumnInfo]] = {name: set() for name in self.list_tables(txn)}
        txn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = current_schema()"
        )
        for table, column, data_type, nullable, default in txn.fetchall():
            if table in tables:
                tables[table].add(ColumnInfo(column, str(data_type).upper(), nullable == "NO", default))
        txn.execute(
            "SELECT t.relname, i.relname, ix.indisunique, ix.indpred IS NOT NULL,"
            " ARRAY(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)"
            "       JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.ord)"
            " FROM pg_index ix"
            " JOIN pg_class i ON i.oid = ix.indexrelid"
            " JOIN pg_class t ON t.oid = ix.indrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace"
            " WHERE n.nspname = current_schema()"
        )
        indexes = frozenset(
            IndexInfo(table, name, bool(unique), tuple(columns), bool(partial))
            for table, name, unique, partial, columns in txn.fetchall()
        )
        return SchemaDescription(tables={k: frozenset(v) for k, v in tables.items()}, indexes=indexes)
