"""The seam between portable store SQL and a concrete database engine.

Stores write one SQL dialect: ``?`` placeholders, ``INSERT ... ON CONFLICT``, ``BIGINT`` ids, ``TEXT``
JSON, ``BOOLEAN`` flags and ``BYTEA`` binary columns. A :class:`DatabaseEngine` adapts that dialect and
the connection life cycle to one engine (SQLite or PostgreSQL). Anything engine-specific lives behind a
method here, never as a second copy of a query in a store.

The engine is purely synchronous: it opens connections and runs statements on whatever thread calls it.
Threads, retries and transactions are the job of :mod:`homeserver.storage.pool`.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol

#: Identifiers accepted where SQL text is assembled from names (tables, columns), optionally qualified.
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class DatabaseSettingsError(ValueError):
    """A :class:`DatabaseSettings` value or database URL is invalid.

    The config loader turns this into a ``ConfigError`` that names the YAML path.
    """


class Cursor(Protocol):
    """The part of a DB-API 2.0 cursor the storage layer uses."""

    @property
    def rowcount(self) -> int:
        """Rows affected by the last statement (-1 when unknown)."""

    @property
    def description(self) -> Any:
        """Column descriptions of the last statement's result set, ``None`` if it had none."""

    def execute(self, sql: str, args: Sequence[Any], /) -> object:
        """Run one statement."""

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> object:
        """Run one statement once per row."""

    def fetchone(self) -> Any:
        """Return the next row or ``None``."""

    def fetchall(self) -> list[Any]:
        """Return the remaining rows."""

    def close(self) -> None:
        """Release the cursor."""


class Connection(Protocol):
    """The part of a DB-API 2.0 connection the storage layer uses."""

    def cursor(self) -> Any:
        """Open a cursor."""

    def commit(self) -> None:
        """Commit the open transaction."""

    def rollback(self) -> None:
        """Roll back the open transaction."""

    def close(self) -> None:
        """Close the connection."""


class QueryRunner(Protocol):
    """Something that runs portable SQL and returns rows: a ``Txn`` in practice."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Run one statement with ``?`` placeholders."""

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Return the remaining rows of the last statement."""


@dataclasses.dataclass(frozen=True)
class DatabaseSettings:
    """How to reach the database and how to size the pool (built by the config loader).

    Attributes:
        url: ``sqlite:///abs/path.db``, ``sqlite://relative/path.db``, ``sqlite://:memory:`` or
            ``postgresql://user[:password]@host:port/dbname`` (any libpq URI). Never logged.
        pool_min: Threads (and connections) kept open. On SQLite this sizes the reader pool.
        pool_max: Most threads (and connections) open at once. On SQLite: the reader count; writes
            always use one dedicated writer connection on one thread.
        sqlite_synchronous: ``NORMAL`` (default; durable in WAL mode except for the last commits on power
            loss) or ``FULL``.
        txn_retries: How many times a transaction that failed with a retryable error (serialization
            failure, deadlock, busy database) is re-run before the error is raised.
        connect_timeout: Seconds to wait when connecting (PostgreSQL) or for a lock (SQLite busy timeout).
    """

    url: str
    pool_min: int = 1
    pool_max: int = 10
    sqlite_synchronous: str = "NORMAL"
    txn_retries: int = 5
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        """Reject settings that cannot work, with a message naming the field."""
        if not isinstance(self.url, str) or not self.url:
            raise DatabaseSettingsError("database url must be a non-empty string")
        for field in ("pool_min", "pool_max", "txn_retries"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise DatabaseSettingsError(f"database {field} must be an integer")
        if not 1 <= self.pool_min <= self.pool_max <= 1000:
            raise DatabaseSettingsError("database pool sizes must satisfy 1 <= pool_min <= pool_max <= 1000")
        if not 0 <= self.txn_retries <= 100:
            raise DatabaseSettingsError("database txn_retries must be between 0 and 100")
        if self.sqlite_synchronous not in ("NORMAL", "FULL"):
            raise DatabaseSettingsError("database sqlite_synchronous must be NORMAL or FULL")
        timeout = self.connect_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
            raise DatabaseSettingsError("database connect_timeout must be a number of seconds in (0, 3600]")


@dataclasses.dataclass(frozen=True, order=True)
class ColumnInfo:
    """One column as the engine reports it (used to compare schemas)."""

    name: str
    type: str
    not_null: bool
    default: str | None


@dataclasses.dataclass(frozen=True, order=True)
class IndexInfo:
    """One index (explicit or implied by a UNIQUE/PRIMARY KEY constraint)."""

    table: str
    name: str
    unique: bool
    columns: tuple[str, ...]
    partial: bool


@dataclasses.dataclass(frozen=True)
class SchemaDescription:
    """An engine's introspected schema: tables, their columns (as sets) and indexes.

    Column order is deliberately ignored: ``ALTER TABLE ... ADD COLUMN`` appends, and a full snapshot
    may list the column elsewhere; portable SQL never relies on column order.
    """

    tables: Mapping[str, frozenset[ColumnInfo]]
    indexes: frozenset[IndexInfo]


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain (optionally table-qualified) SQL identifier.

    Args:
        name: A table or column name that will be interpolated into SQL text.

    Returns:
        ``name`` unchanged.

    Raises:
        ValueError: ``name`` is not an identifier (guards against SQL injection through names).
    """
    if not isinstance(name, str) or not _IDENTIFIER_RE.match(name):
        raise ValueError(f"not a valid SQL identifier: {name!r}")
    return name


class DatabaseEngine(abc.ABC):
    """One database engine: dialect adaptation, connection set-up and error classification.

    Attributes:
        name: ``"sqlite"`` or ``"postgres"``.
        settings: The settings this engine was created from.
        supports_returning: Whether ``INSERT/UPDATE/DELETE ... RETURNING`` works.
        supports_multiple_writers: Whether several connections (or processes) may write at once. When
            false the pool funnels every write transaction through one writer thread.
        has_reader_connections: Whether read-only transactions get their own connections; when false
            they share the writer connection (in-memory SQLite).
        max_in_list: The most values :meth:`in_list` accepts in one fragment.
    """

    name: ClassVar[str]
    supports_returning: bool = True
    supports_multiple_writers: bool = False
    has_reader_connections: bool = True
    max_in_list: int = 1000

    def __init__(self, settings: DatabaseSettings) -> None:
        """Create an engine for ``settings``; does not connect yet."""
        self.settings = settings

    # --- dialect --------------------------------------------------------------------------------

    @abc.abstractmethod
    def convert_param_style(self, sql: str) -> str:
        """Rewrite portable SQL (``?`` placeholders) into the driver's parameter style."""

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """Build ``column IN (?, ?, ...)`` for ``values`` (no engine-specific ``= ANY(?)``).

        Args:
            column: The (optionally table-qualified) column name.
            values: At most :attr:`max_in_list` values; use :meth:`in_list_batches` for more.

        Returns:
            The SQL fragment and its arguments. An empty ``values`` gives a fragment that is always
            false, so ``WHERE`` clauses stay valid.

        Raises:
            ValueError: ``column`` is not an identifier or there are too many values.
        """
        check_identifier(column)
        if len(values) > self.max_in_list:
            raise ValueError(
                f"in_list got {len(values)} values; use in_list_batches above {self.max_in_list}"
            )
        if not values:
            return "1 = 0", []
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

    def in_list_batches(
        self, column: str, values: Iterable[Any], batch_size: int | None = None
    ) -> Iterator[tuple[str, list[Any]]]:
        """Split ``values`` into :meth:`in_list` fragments of at most ``batch_size`` values each.

        Args:
            column: The (optionally table-qualified) column name.
            values: Any number of values; nothing is yielded when it is empty.
            batch_size: Values per fragment; defaults to :attr:`max_in_list`.

        Yields:
            ``(sql_fragment, args)`` pairs; run the query once per pair and merge the results.

        Raises:
            ValueError: ``column`` is not an identifier or ``batch_size`` is out of range.
        """
        size = self.max_in_list if batch_size is None else batch_size
        if not 1 <= size <= self.max_in_list:
            raise ValueError(f"batch_size must be between 1 and {self.max_in_list}")
        check_identifier(column)
        batch: list[Any] = []
        for value in values:
            batch.append(value)
            if len(batch) == size:
                yield self.in_list(column, batch)
                batch = []
        if batch:
            yield self.in_list(column, batch)

    # --- errors ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def is_retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` means "the transaction was rolled back; running it again may succeed"."""

    def is_connection_broken(self, conn: Connection) -> bool:
        """Whether ``conn`` is unusable after an error and must be replaced."""
        return False

    # --- connections and transactions -------------------------------------------------------------

    @abc.abstractmethod
    def connect(self, *, readonly: bool) -> Connection:
        """Open a new connection and prepare it with :meth:`on_new_connection`.

        Args:
            readonly: The connection will only run read-only transactions.
        """

    @abc.abstractmethod
    def on_new_connection(self, conn: Connection, *, readonly: bool) -> None:
        """Apply per-connection settings (pragmas, isolation level, type conversion)."""

    @abc.abstractmethod
    def begin(self, cursor: Cursor, *, readonly: bool) -> None:
        """Start a transaction on ``cursor``'s connection (write or read-only)."""

    def end(self, cursor: Cursor, *, readonly: bool) -> None:
        """Undo per-transaction settings after commit or rollback (default: nothing)."""
        return None

    @abc.abstractmethod
    def execute_many(self, cursor: Cursor, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one already-converted statement for every row, as efficiently as the driver allows."""

    # --- introspection --------------------------------------------------------------------------

    @abc.abstractmethod
    def list_tables(self, txn: QueryRunner) -> list[str]:
        """Return the names of all user tables in the current database/schema, sorted."""

    def table_exists(self, txn: QueryRunner, table: str) -> bool:
        """Return whether ``table`` exists in the current database/schema."""
        return table in self.list_tables(txn)

    @abc.abstractmethod
    def describe_schema(self, txn: QueryRunner) -> SchemaDescription:
        """Introspect tables, columns and indexes (used to prove full snapshot == baseline + deltas)."""
