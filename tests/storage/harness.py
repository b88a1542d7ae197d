"""Helpers for storage tests: drive coroutines synchronously, and a minimal threaded reactor.

Store tests take the ``database`` (empty) or ``prepared_database`` (current schema) fixture from
``tests/storage/conftest.py``; each runs once on SQLite and once on PostgreSQL when
``SC_TEST_POSTGRES`` is set. Use :meth:`TestDatabase.make_pool` for a synchronous pool and
:func:`get_success` to await it without running a reactor.
"""

from __future__ import annotations

import dataclasses
import queue
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from homeserver.storage.engines import DatabaseEngine, DatabaseSettings, create_engine
from homeserver.storage.pool import DatabasePool

T = TypeVar("T")


def get_success(awaitable: Awaitable[T]) -> T:
    """Run a coroutine that must finish without the reactor (synchronous pool) and return its result."""
    d = defer.ensureDeferred(awaitable)
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "coroutine did not complete synchronously"
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result  # type: ignore[no-any-return]


def get_failure(awaitable: Awaitable[object], exc_type: type[BaseException]) -> BaseException:
    """Run a coroutine synchronously and return the exception (of ``exc_type``) it raised."""
    d = defer.ensureDeferred(awaitable)
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "coroutine did not complete synchronously"
    failure = results[0]
    assert isinstance(failure, Failure), f"expected {exc_type.__name__}, got result {failure!r}"
    assert failure.check(exc_type), f"expected {exc_type.__name__}, got {failure.value!r}"
    return failure.value


class ThreadCallbackReactor:
    """Just enough reactor for ``deferToThreadPool``: ``callFromThread`` queues, :meth:`wait` drains.

    Lets tests use real database threads without the global reactor and without sleeping.
    """

    def __init__(self) -> None:
        self._calls: queue.Queue[tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]] = (
            queue.Queue()
        )

    def callFromThread(self, f: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        self._calls.put((f, args, kwargs))

    def wait(self, d: defer.Deferred[T], timeout: float = 10.0) -> T:
        """Run queued calls until ``d`` fires; return its result or raise its failure."""
        results: list[Any] = []
        d.addBoth(results.append)
        while not results:
            f, args, kwargs = self._calls.get(timeout=timeout)
            f(*args, **kwargs)
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]  # type: ignore[no-any-return]


@dataclasses.dataclass
class TestDatabase:
    """One throwaway database on one engine, handed to a test."""

    __test__ = False  # not a pytest test class

    engine_name: str
    url: str
    pools: list[DatabasePool] = dataclasses.field(default_factory=list)

    def settings(self, **overrides: Any) -> DatabaseSettings:
        """Settings for this database (``overrides`` replace defaults such as ``txn_retries``)."""
        return DatabaseSettings(url=self.url, **{"connect_timeout": 5.0, **overrides})

    def make_engine(self, **overrides: Any) -> DatabaseEngine:
        """A fresh engine for this database."""
        return create_engine(self.settings(**overrides))

    def make_pool(
        self, *, reactor: Any = None, run_in_thread: bool = False, **overrides: Any
    ) -> DatabasePool:
        """A pool on this database, closed automatically at the end of the test."""
        pool = DatabasePool(self.make_engine(**overrides), reactor, run_in_thread=run_in_thread)
        self.pools.append(pool)
        return pool

    def close_pools(self, reactor: ThreadCallbackReactor | None = None) -> None:
        """Close every pool this database handed out (idempotent)."""
        for pool in self.pools:
            d = defer.ensureDeferred(pool.close())
            if not d.called and reactor is not None:
                reactor.wait(d)
        self.pools.clear()
