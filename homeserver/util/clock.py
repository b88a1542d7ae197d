"""A thin wrapper over the reactor's time functions.

Code takes a :class:`Clock` instead of reading the time or importing the global reactor, so tests
drive time with ``twisted.internet.task.Clock`` or ``MemoryReactorClock`` and never sleep for real.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

logger = logging.getLogger(__name__)


class ReactorTime(Protocol):
    """The part of ``IReactorTime`` the clock uses (a Protocol, so mypy needs no zope plugin)."""

    def seconds(self) -> float:
        """Current time in seconds."""

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Schedules ``callable`` after ``delay`` seconds, returning an ``IDelayedCall``."""


class DelayedCall(Protocol):
    """A scheduled call (``IDelayedCall``), as returned by :meth:`Clock.call_later`."""

    def active(self) -> bool:
        """Whether the call is still pending."""

    def cancel(self) -> None:
        """Cancels the pending call."""

    def getTime(self) -> float:
        """When the call will run, in seconds."""


class Clock:
    """Time, timers and sleeps, all driven by one reactor.

    Args:
        reactor: anything providing ``IReactorTime`` (the real reactor, or ``task.Clock`` in tests).
    """

    def __init__(self, reactor: ReactorTime) -> None:
        self._reactor = reactor

    def time(self) -> float:
        """Seconds since the Unix epoch, as the reactor sees it."""
        return float(self._reactor.seconds())

    def time_msec(self) -> int:
        """Milliseconds since the Unix epoch (the unit of Matrix timestamps)."""
        return int(self._reactor.seconds() * 1000)

    def call_later(self, delay_s: float, fn: Callable[..., object], *args: Any, **kwargs: Any) -> DelayedCall:
        """Calls ``fn(*args, **kwargs)`` after ``delay_s`` seconds; cancel with ``.cancel()``."""
        call: DelayedCall = self._reactor.callLater(delay_s, fn, *args, **kwargs)
        return call

    def looping_call(self, fn: Callable[..., object], interval_s: float, *args: Any) -> task.LoopingCall:
        """Calls ``fn(*args)`` every ``interval_s`` seconds, the first call after one interval.

        ``fn`` may be a coroutine function; the next call waits until it finishes. An exception is
        logged and the loop keeps going (a failing periodic job must not silently stop for good).
        Stop it with ``.stop()``.
        """

        async def run_once() -> None:
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("looping call %r failed", getattr(fn, "__qualname__", fn))

        def tick() -> defer.Deferred[None]:
            return defer.Deferred.fromCoroutine(run_once())

        call = task.LoopingCall(tick)
        call.clock = cast(IReactorTime, self._reactor)
        call.start(interval_s, now=False)
        return call

    async def sleep(self, seconds: float) -> None:
        """Waits ``seconds`` of reactor time. Cancelling the waiting Deferred cancels the timer."""
        delayed: list[DelayedCall] = []

        def cancel(_d: defer.Deferred[None]) -> None:
            if delayed and delayed[0].active():
                delayed[0].cancel()

        d: defer.Deferred[None] = defer.Deferred(canceller=cancel)
        delayed.append(self._reactor.callLater(seconds, d.callback, None))
        await d
