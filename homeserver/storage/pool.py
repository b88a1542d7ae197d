"""Transactions on thread pools: ``await pool.run_txn(desc, fn, ...)``.

Theory of operation:

* A transaction function ``fn(txn, *args, **kwargs)`` is synchronous, named ``*_txn``, and runs on a
  database thread with a :class:`Txn`. It is committed when it returns and rolled back when it raises.
* If it fails with an error the engine calls retryable (serialization failure, deadlock, busy
  database), the whole function runs again on a fresh transaction, up to ``txn_retries`` times. So
  ``fn`` must not have side effects outside the database; it registers them with
  :meth:`Txn.call_after` (run on the reactor thread after a successful commit) and undoes in-memory
  reservations with :meth:`Txn.call_on_exception` (run on the reactor thread for every failed attempt).
* Lanes: SQLite sends every write to one writer connection on one thread (writes are serialised by
  the application, not by lock contention) and reads to a pool of read-only connections. PostgreSQL
  uses one pool of connections for both; read transactions are ``READ ONLY``.
* ``run_in_thread=False`` runs each transaction synchronously in the calling thread, so tests driven
  by a fake reactor get an already-fired result without running the reactor.

Invariants: a connection is used by one transaction at a time; after-commit callbacks never run for a
rolled-back attempt; transaction arguments are never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from homeserver.storage.engines.base import Connection, Cursor, DatabaseEngine, check_identifier
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)
sql_logger = logging.getLogger("homeserver.storage.sql")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_Callback = tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]


class UnstorableTextError(MatrixError):
    """A text parameter holds a NUL character, which PostgreSQL text cannot store.

    Raised on both engines alike (SQLite could store it), before the statement runs, so the same
    hostile input gets the same answer everywhere: 400 ``M_INVALID_PARAM``, and the transaction rolls
    back (nothing is written). Event JSON is never affected: its encoder escapes NUL as ``\\u0000``.
    """

    def __init__(self) -> None:
        super().__init__(400, Codes.INVALID_PARAM, "Strings may not contain NUL characters")


def _check_text(args: Sequence[Any]) -> tuple[Any, ...]:
    values = tuple(args)
    for value in values:
        if type(value) is str and "\x00" in value:
            raise UnstorableTextError()
    return values


class PoolClosedError(RuntimeError):
    """A transaction was submitted after :meth:`DatabasePool.close` started."""


class Txn:
    """One database transaction, handed to transaction functions.

    Attributes:
        engine: The engine, for :meth:`DatabaseEngine.in_list` and engine-specific branches.
        desc: The description given to ``run_txn``/``run_read`` (for logs).
    """

    def __init__(self, cursor: Cursor, engine: DatabaseEngine, desc: str) -> None:
        """Wrap ``cursor``; the pool creates these, stores never need to."""
        self._cursor = cursor
        self.engine = engine
        self.desc = desc
        self._after: list[_Callback] = []
        self._on_exception: list[_Callback] = []

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Run one statement written with ``?`` placeholders.

        Args:
            sql: Portable SQL.
            args: One value per placeholder (never logged).
        """
        converted = self.engine.convert_param_style(sql)
        start = time.perf_counter()
        try:
            self._cursor.execute(converted, _check_text(args))
        finally:
            if sql_logger.isEnabledFor(logging.DEBUG):
                sql_logger.debug("[SQL %s] %.3f ms: %s", self.desc, (time.perf_counter() - start) * 1000, sql)

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row of arguments (``rowcount`` is unreliable afterwards)."""
        converted = self.engine.convert_param_style(sql)
        start = time.perf_counter()
        try:
            self.engine.execute_many(self._cursor, converted, (_check_text(row) for row in rows))
        finally:
            if sql_logger.isEnabledFor(logging.DEBUG):
                sql_logger.debug(
                    "[SQL %s] %.3f ms (many): %s", self.desc, (time.perf_counter() - start) * 1000, sql
                )

    def fetchone(self) -> tuple[Any, ...] | None:
        """Return the next row of the last statement, or ``None`` when there are no more.

        A statement that returns no result set (DDL, UPDATE without RETURNING) gives ``None`` on both
        engines (psycopg2 would raise).
        """
        if self._cursor.description is None:
            return None
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Return the remaining rows of the last statement (``[]`` if it returns no result set)."""
        if self._cursor.description is None:
            return []
        return [tuple(row) for row in self._cursor.fetchall()]

    @property
    def rowcount(self) -> int:
        """Rows changed by the last ``execute`` (-1 when the driver does not know)."""
        return self._cursor.rowcount

    def call_after(self, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        """Run ``fn(*args, **kwargs)`` on the reactor thread once this transaction has committed.

        Callbacks run in registration order; an exception in one is logged and the rest still run.
        """
        self._after.append((fn, args, kwargs))

    def call_on_exception(self, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        """Run ``fn(*args, **kwargs)`` on the reactor thread if this attempt rolls back."""
        self._on_exception.append((fn, args, kwargs))


@dataclasses.dataclass
class _Outcome(Generic[T]):
    """What a transaction produced on the database thread, carried back to the reactor thread."""

    result: T | None = None
    error: BaseException | None = None
    after: list[_Callback] = dataclasses.field(default_factory=list)
    on_exception: list[_Callback] = dataclasses.field(default_factory=list)


class _Lane:
    """A set of connections plus the thread pool that uses them (or the caller's thread)."""

    def __init__(
        self,
        name: str,
        engine: DatabaseEngine,
        reactor: IReactorFromThreads | None,
        *,
        readonly: bool,
        min_threads: int,
        max_threads: int,
        run_in_thread: bool,
    ) -> None:
        self.name = name
        self._engine = engine
        self._reactor = reactor
        self._readonly = readonly
        self._idle: list[Connection] = []
        self._open: list[Connection] = []
        self._lock = threading.Lock()
        self._threadpool: ThreadPool | None = None
        if run_in_thread:
            self._threadpool = ThreadPool(min_threads, max_threads, name=name)
            self._threadpool.start()

    def acquire(self) -> Connection:
        """Take an idle connection or open one (thread count bounds the connection count)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        conn = self._engine.connect(readonly=self._readonly)
        with self._lock:
            self._open.append(conn)
        return conn

    def release(self, conn: Connection) -> None:
        with self._lock:
            self._idle.append(conn)

    def discard(self, conn: Connection) -> None:
        with self._lock:
            if conn in self._open:
                self._open.remove(conn)
        _close_quietly(conn)

    def submit(self, fn: Callable[[], T]) -> defer.Deferred[T]:
        """Run ``fn`` on this lane's thread pool, or right now in synchronous mode."""
        if self._threadpool is None:
            try:
                return defer.succeed(fn())
            except Exception:
                return defer.fail()
        assert self._reactor is not None
        return deferToThreadPool(self._reactor, self._threadpool, fn)

    def close(self) -> None:
        """Close every connection and stop the threads (call only when nothing is in flight)."""
        with self._lock:
            conns, self._open, self._idle = self._open, [], []
        for conn in conns:
            _close_quietly(conn)
        if self._threadpool is not None:
            self._threadpool.stop()


def _close_quietly(conn: Connection) -> None:
    try:
        conn.close()
    except Exception:  # a broken connection may fail to close; it is gone either way
        logger.debug("error closing a database connection", exc_info=True)


def _run_callbacks(kind: str, desc: str, callbacks: list[_Callback]) -> None:
    for fn, args, kwargs in callbacks:
        try:
            fn(*args, **kwargs)
        except Exception:
            logger.exception("%s callback of txn %s failed", kind, desc)


class DatabasePool:
    """Runs transaction functions on the engine's connections (see the module docstring).

    Args:
        engine: The engine from ``create_engine``.
        reactor: Used to return results from database threads; may be ``None`` when
            ``run_in_thread`` is false.
        run_in_thread: False runs every transaction synchronously in the caller's thread (tests).
    """

    def __init__(
        self, engine: DatabaseEngine, reactor: IReactorFromThreads | None, *, run_in_thread: bool = True
    ) -> None:
        """Create the lanes and start their threads (connections are opened lazily)."""
        if run_in_thread and reactor is None:
            raise ValueError("a reactor is needed to run transactions in threads")
        self.engine = engine
        settings = engine.settings

        def lane(name: str, readonly: bool, lo: int, hi: int) -> _Lane:
            return _Lane(
                name,
                engine,
                reactor,
                readonly=readonly,
                min_threads=lo,
                max_threads=hi,
                run_in_thread=run_in_thread,
            )

        if engine.supports_multiple_writers:
            # Separate lanes so read transactions run on read-only connections (fewer round trips on
            # PostgreSQL) and cannot be starved by writers.
            self._writer = lane(f"db-{engine.name}-writer", False, settings.pool_min, settings.pool_max)
            self._reader = lane(f"db-{engine.name}-reader", True, settings.pool_min, settings.pool_max)
        else:
            self._writer = lane(f"db-{engine.name}-writer", False, 1, 1)
            self._reader = (
                lane(f"db-{engine.name}-reader", True, settings.pool_min, settings.pool_max)
                if engine.has_reader_connections
                else self._writer
            )
        self._in_flight = 0
        self._closing = False
        self._drained: list[defer.Deferred[None]] = []

    async def run_txn(
        self, desc: str, fn: Callable[Concatenate[Txn, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``fn(txn, *args, **kwargs)`` in a write transaction and return its result.

        Args:
            desc: Short name for logs and metrics (for example ``"persist_event"``).
            fn: Synchronous transaction function, named ``*_txn``.
            *args: Passed to ``fn`` after the ``Txn``.
            **kwargs: Passed to ``fn``.

        Returns:
            Whatever ``fn`` returned, after commit and after the ``call_after`` callbacks ran.

        Raises:
            PoolClosedError: the pool is closing.
            Exception: whatever ``fn`` or the database raised (retryable errors after the last retry).
        """
        return await self._run(desc, fn, args, kwargs, readonly=False)

    async def run_read(
        self, desc: str, fn: Callable[Concatenate[Txn, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Like :meth:`run_txn` but in a read-only transaction (on a reader connection for SQLite).

        Writing inside ``fn`` fails with the engine's read-only error.
        """
        return await self._run(desc, fn, args, kwargs, readonly=True)

    async def _run(
        self,
        desc: str,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        readonly: bool,
    ) -> R:
        if self._closing:
            raise PoolClosedError(f"database pool is closed (txn {desc})")
        lane = self._reader if readonly else self._writer
        self._in_flight += 1
        try:
            outcome = await lane.submit(lambda: self._attempts(lane, desc, fn, args, kwargs, readonly))
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._drained:
                waiters, self._drained = self._drained, []
                for waiter in waiters:
                    waiter.callback(None)
        _run_callbacks("on_exception", desc, outcome.on_exception)
        if outcome.error is not None:
            raise outcome.error
        _run_callbacks("after", desc, outcome.after)
        return outcome.result  # type: ignore[return-value]  # result is set whenever error is None

    def _attempts(
        self,
        lane: _Lane,
        desc: str,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        readonly: bool,
    ) -> _Outcome[R]:
        """Run on the database thread: attempt the transaction, retrying retryable failures."""
        failed_callbacks: list[_Callback] = []
        retries = self.engine.settings.txn_retries
        attempt = 0
        while True:
            attempt += 1
            start = time.perf_counter()
            try:
                conn = lane.acquire()
            except Exception as exc:
                logger.warning("txn %s: cannot open a database connection: %s", desc, type(exc).__name__)
                return _Outcome(error=exc, on_exception=failed_callbacks)
            try:
                cursor = conn.cursor()
            except Exception as exc:
                lane.discard(conn)
                return _Outcome(error=exc, on_exception=failed_callbacks)
            txn = Txn(cursor, self.engine, desc)
            try:
                self.engine.begin(cursor, readonly=readonly)
                result = fn(txn, *args, **kwargs)
                conn.commit()
            except Exception as exc:
                failed_callbacks.extend(txn._on_exception)
                self._abort(lane, conn, cursor, readonly)
                elapsed = (time.perf_counter() - start) * 1000
                if attempt <= retries and self.engine.is_retryable(exc):
                    logger.info(
                        "txn %s: %s after %.3f ms; retrying (%d/%d)",
                        desc,
                        type(exc).__name__,
                        elapsed,
                        attempt,
                        retries,
                    )
                    continue
                logger.debug("txn %s failed after %.3f ms (%s)", desc, elapsed, type(exc).__name__)
                return _Outcome(error=exc, on_exception=failed_callbacks)
            self._finish(lane, conn, cursor, readonly)
            logger.debug(
                "txn %s took %.3f ms (attempt %d)", desc, (time.perf_counter() - start) * 1000, attempt
            )
            return _Outcome(result=result, after=txn._after, on_exception=failed_callbacks)

    def _finish(self, lane: _Lane, conn: Connection, cursor: Cursor, readonly: bool) -> None:
        try:
            self.engine.end(cursor, readonly=readonly)
            cursor.close()
        except Exception:
            logger.warning("could not reset a database connection; replacing it", exc_info=True)
            lane.discard(conn)
            return
        lane.release(conn)

    def _abort(self, lane: _Lane, conn: Connection, cursor: Cursor, readonly: bool) -> None:
        try:
            conn.rollback()
        except Exception:
            logger.debug("rollback failed", exc_info=True)
        if self.engine.is_connection_broken(conn):
            lane.discard(conn)
            return
        self._finish(lane, conn, cursor, readonly)

    async def close(self) -> None:
        """Refuse new transactions, wait for those in flight, then close connections and threads."""
        self._closing = True
        if self._in_flight:
            waiter: defer.Deferred[None] = defer.Deferred()
            self._drained.append(waiter)
            await waiter
        self._writer.close()
        if self._reader is not self._writer:
            self._reader.close()

    # --- simple helpers (one-table statements that every store would otherwise repeat) -------------

    async def simple_insert(self, desc: str, table: str, values: Mapping[str, Any]) -> None:
        """Insert one row (see :func:`simple_insert_txn`)."""
        await self.run_txn(desc, simple_insert_txn, table, values)

    async def simple_upsert(
        self, desc: str, table: str, keyvalues: Mapping[str, Any], values: Mapping[str, Any]
    ) -> None:
        """Insert or update one row (see :func:`simple_upsert_txn`)."""
        await self.run_txn(desc, simple_upsert_txn, table, keyvalues, values)

    async def simple_select_one_onecol(
        self, desc: str, table: str, keyvalues: Mapping[str, Any], retcol: str
    ) -> Any:
        """Read one column of one row (see :func:`simple_select_one_onecol_txn`)."""
        return await self.run_read(desc, simple_select_one_onecol_txn, table, keyvalues, retcol)

    async def simple_select_list(
        self, desc: str, table: str, keyvalues: Mapping[str, Any], retcols: Sequence[str]
    ) -> list[tuple[Any, ...]]:
        """Read columns of every matching row (see :func:`simple_select_list_txn`)."""
        return await self.run_read(desc, simple_select_list_txn, table, keyvalues, retcols)


def _where(keyvalues: Mapping[str, Any]) -> tuple[str, list[Any]]:
    if not keyvalues:
        return "", []
    clause = " AND ".join(f"{check_identifier(k)} = ?" for k in keyvalues)
    return f" WHERE {clause}", list(keyvalues.values())


def simple_insert_txn(txn: Txn, table: str, values: Mapping[str, Any]) -> None:
    """``INSERT INTO table (cols) VALUES (?, ...)``.

    Raises:
        ValueError: a name is not an identifier or ``values`` is empty.
    """
    if not values:
        raise ValueError("simple_insert needs at least one column")
    cols = ", ".join(check_identifier(c) for c in values)
    marks = ", ".join("?" * len(values))
    txn.execute(f"INSERT INTO {check_identifier(table)} ({cols}) VALUES ({marks})", list(values.values()))  # noqa: S608 - identifiers checked


def simple_upsert_txn(txn: Txn, table: str, keyvalues: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Insert a row, or update ``values`` when a row with ``keyvalues`` exists.

    Uses ``INSERT ... ON CONFLICT (keys) DO UPDATE`` (both engines), so ``keyvalues`` must be exactly
    the columns of a unique index or constraint.

    Raises:
        ValueError: a name is not an identifier or ``keyvalues`` is empty.
    """
    if not keyvalues:
        raise ValueError("simple_upsert needs key columns")
    cols = [check_identifier(c) for c in (*keyvalues, *values)]
    marks = ", ".join("?" * len(cols))
    conflict = ", ".join(keyvalues)
    if values:
        action = "DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in values)
    else:
        action = "DO NOTHING"
    txn.execute(
        f"INSERT INTO {check_identifier(table)} ({', '.join(cols)}) VALUES ({marks}) ON CONFLICT ({conflict}) {action}",  # noqa: S608 - identifiers checked
        [*keyvalues.values(), *values.values()],
    )


def simple_select_one_onecol_txn(txn: Txn, table: str, keyvalues: Mapping[str, Any], retcol: str) -> Any:
    """Return ``retcol`` of the row matching ``keyvalues``, or ``None`` when no row matches.

    Raises:
        ValueError: a name is not an identifier.
    """
    where, args = _where(keyvalues)
    txn.execute(f"SELECT {check_identifier(retcol)} FROM {check_identifier(table)}{where}", args)  # noqa: S608 - identifiers checked
    row = txn.fetchone()
    return None if row is None else row[0]


def simple_select_list_txn(
    txn: Txn, table: str, keyvalues: Mapping[str, Any], retcols: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Return ``retcols`` of every row matching ``keyvalues`` (all rows when it is empty).

    Raises:
        ValueError: a name is not an identifier or ``retcols`` is empty.
    """
    if not retcols:
        raise ValueError("simple_select_list needs at least one column")
    cols = ", ".join(check_identifier(c) for c in retcols)
    where, args = _where(keyvalues)
    txn.execute(f"SELECT {cols} FROM {check_identifier(table)}{where}", args)  # noqa: S608 - identifiers checked
    return txn.fetchall()
