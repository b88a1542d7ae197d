"""SQLite engine: WAL, one writer connection, read-only reader connections.

Theory of operation: SQLite allows one writer at a time per database file. Rather than letting
connections race for the lock and back off (``SQLITE_BUSY``), the pool sends every write transaction
to one dedicated connection on one thread, which opens it with ``BEGIN IMMEDIATE`` (Dendrite's
"exclusive writer" lesson). Readers use their own connections with ``query_only`` set; in WAL mode
they see the last committed snapshot without blocking the writer. ``sqlite://:memory:`` (tests) uses a
single connection for both roles, because each in-memory connection is a separate database.

Booleans: SQLite stores ``BOOLEAN`` as 0/1. Connections parse declared column types, and a converter
registered for ``BOOLEAN`` turns those values back into ``bool``, so stores see the same types on both
engines without a hand-kept list of boolean columns.
"""

from __future__ import annotations

import sqlite3
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

_MEMORY = ":memory:"
#: Primary result codes meaning "someone else holds a lock; try again".
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_RETRYABLE_MESSAGES = ("database is locked", "database table is locked", "database is busy")
#: ``ON CONFLICT`` upserts need 3.24; ``RETURNING`` needs 3.35.
_MIN_VERSION = (3, 24, 0)


def _convert_boolean(value: bytes) -> bool:
    """Turn a stored BOOLEAN (``b"0"``/``b"1"``) into ``bool``; NULL never reaches converters."""
    return value not in (b"0", b"", b"0.0")


# Process-wide, but it only affects connections opened with PARSE_DECLTYPES (ours).
sqlite3.register_converter("BOOLEAN", _convert_boolean)


def parse_sqlite_url(url: str) -> str:
    """Return the file path (or ``:memory:``) of a ``sqlite://`` URL.

    ``sqlite:///var/lib/sc.db`` is the absolute path ``/var/lib/sc.db``; ``sqlite://data/sc.db`` is
    relative to the working directory; ``sqlite://:memory:`` is a private in-memory database.

    Raises:
        DatabaseSettingsError: not a usable ``sqlite://`` URL.
    """
    prefix = "sqlite://"
    if not url.startswith(prefix):
        raise DatabaseSettingsError("sqlite database url must start with sqlite://")
    path = url[len(prefix) :]
    if not path or "?" in path or "\x00" in path:
        raise DatabaseSettingsError("sqlite database url needs a file path (or :memory:) and no query")
    return path


class SqliteEngine(DatabaseEngine):
    """The embedded engine (monolith only): see the module docstring."""

    name = "sqlite"
    supports_multiple_writers = False

    def __init__(self, settings: DatabaseSettings) -> None:
        """Create the engine; raises :class:`DatabaseSettingsError` on a bad URL or old library."""
        super().__init__(settings)
        self.path = parse_sqlite_url(settings.url)
        self.is_memory = self.path == _MEMORY
        self.has_reader_connections = not self.is_memory
        if sqlite3.sqlite_version_info < _MIN_VERSION:
            raise DatabaseSettingsError(f"SQLite {sqlite3.sqlite_version} is too old; need >= 3.24")
        self.supports_returning = sqlite3.sqlite_version_info >= (3, 35, 0)

    def convert_param_style(self, sql: str) -> str:
        """Return ``sql`` unchanged: sqlite3 uses ``?`` natively."""
        return sql

    def is_retryable(self, exc: BaseException) -> bool:
        """``SQLITE_BUSY``/``SQLITE_LOCKED`` (including extended codes) are retryable."""
        if not isinstance(exc, sqlite3.OperationalError):
            return False
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return True
        message = str(exc).lower()
        return any(text in message for text in _RETRYABLE_MESSAGES)

    def connect(self, *, readonly: bool) -> Connection:
        """Open a connection in autocommit mode (the pool issues BEGIN/COMMIT itself)."""
        conn = sqlite3.connect(
            self.path,
            timeout=self.settings.connect_timeout,
            isolation_level=None,
            # The pool hands a connection to one thread at a time, but not always the same thread
            # (close() runs on the reactor; synchronous test mode runs on the caller's thread).
            check_same_thread=False,
            detect_types=sqlite3.PARSE_DECLTYPES,
            cached_statements=256,
        )
        try:
            self.on_new_connection(cast(Connection, conn), readonly=readonly)
        except BaseException:
            conn.close()
            raise
        return cast(Connection, conn)

    def on_new_connection(self, conn: Connection, *, readonly: bool) -> None:
        """WAL, busy timeout, foreign keys, synchronous level; ``query_only`` on reader connections."""
        cur = conn.cursor()
        try:
            busy_ms = int(self.settings.connect_timeout * 1000)
            if not self.is_memory:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute(f"PRAGMA synchronous = {self.settings.sqlite_synchronous}")
            if readonly and not self.is_memory:
                cur.execute("PRAGMA query_only = ON")
        finally:
            cur.close()

    def begin(self, cursor: Cursor, *, readonly: bool) -> None:
        """``BEGIN IMMEDIATE`` for writes (take the write lock now); deferred ``BEGIN`` for reads."""
        if readonly:
            if self.is_memory:
                # The single in-memory connection also writes, so guard this txn only.
                cursor.execute("PRAGMA query_only = ON", ())
            cursor.execute("BEGIN", ())
        else:
            cursor.execute("BEGIN IMMEDIATE", ())

    def end(self, cursor: Cursor, *, readonly: bool) -> None:
        """Lift the per-transaction ``query_only`` guard on the shared in-memory connection."""
        if readonly and self.is_memory:
            cursor.execute("PRAGMA query_only = OFF", ())

    def execute_many(self, cursor: Cursor, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Use sqlite3's own ``executemany`` (in-process, so no batching is needed)."""
        cursor.executemany(sql, rows)

    def list_tables(self, txn: QueryRunner) -> list[str]:
        """User tables from ``sqlite_master`` (SQLite's internal ``sqlite_*`` tables excluded)."""
        txn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            " ORDER BY name"
        )
        return [row[0] for row in txn.fetchall()]

    def describe_schema(self, txn: QueryRunner) -> SchemaDescription:
        """Columns via ``pragma_table_info``; indexes via ``pragma_index_list``/``pragma_index_info``."""
        tables: dict[str, frozenset[ColumnInfo]] = {}
        indexes: set[IndexInfo] = set()
        for table in self.list_tables(txn):
            txn.execute('SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?)', (table,))
            tables[table] = frozenset(
                # An INTEGER PRIMARY KEY is implicitly NOT NULL (it is the rowid).
                ColumnInfo(name, str(ctype).upper(), bool(notnull) or bool(pk), default)
                for name, ctype, notnull, default, pk in txn.fetchall()
            )
            txn.execute('SELECT name, "unique", partial FROM pragma_index_list(?)', (table,))
            for index_name, unique, partial in txn.fetchall():
                txn.execute("SELECT name FROM pragma_index_info(?) ORDER BY seqno", (index_name,))
                columns = tuple(str(row[0]) for row in txn.fetchall())
                indexes.add(IndexInfo(table, index_name, bool(unique), columns, bool(partial)))
        return SchemaDescription(tables=tables, indexes=frozenset(indexes))
