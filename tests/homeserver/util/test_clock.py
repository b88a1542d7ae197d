"""Tests for the reactor clock wrapper, on a fake reactor clock."""

from __future__ import annotations

import logging

import pytest
from twisted.internet import defer, task

from homeserver.util.clock import Clock


def make() -> tuple[task.Clock, Clock]:
    reactor = task.Clock()
    reactor.advance(1_700_000_000.25)
    return reactor, Clock(reactor)


class TestTime:
    def test_time_and_msec_follow_the_reactor(self) -> None:
        """time() is seconds and time_msec() integer milliseconds of reactor time."""
        reactor, clock = make()
        assert clock.time() == 1_700_000_000.25
        assert clock.time_msec() == 1_700_000_000_250
        reactor.advance(1.5)
        assert clock.time_msec() == 1_700_000_001_750


class TestCallLater:
    def test_runs_after_the_delay(self) -> None:
        """call_later runs the function with its arguments once the delay has passed."""
        reactor, clock = make()
        calls: list[tuple[int, str]] = []
        clock.call_later(2, lambda a, b: calls.append((a, b)), 1, b="x")
        reactor.advance(1.9)
        assert calls == []
        reactor.advance(0.1)
        assert calls == [(1, "x")]

    def test_can_be_cancelled(self) -> None:
        """The returned delayed call can be cancelled."""
        reactor, clock = make()
        calls: list[int] = []
        call = clock.call_later(1, calls.append, 1)
        assert call.active()
        call.cancel()
        reactor.advance(5)
        assert calls == []


class TestLoopingCall:
    def test_calls_every_interval(self) -> None:
        """The first call is after one interval, then every interval until stopped."""
        reactor, clock = make()
        calls: list[str] = []
        loop = clock.looping_call(calls.append, 10, "tick")
        reactor.advance(9)
        assert calls == []
        reactor.pump([1, 10, 10])
        assert calls == ["tick"] * 3
        loop.stop()
        reactor.advance(100)
        assert len(calls) == 3

    def test_survives_exceptions(self, caplog: pytest.LogCaptureFixture) -> None:
        """A failing call is logged and the loop keeps running."""
        reactor, clock = make()
        calls: list[int] = []

        def flaky() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("boom")

        with caplog.at_level(logging.ERROR, logger="homeserver.util.clock"):
            loop = clock.looping_call(flaky, 1)
            reactor.pump([1, 1])
        assert len(calls) == 2
        assert "looping call" in caplog.text
        loop.stop()

    def test_waits_for_async_functions(self) -> None:
        """An async function's next call waits until the previous one finished."""
        reactor, clock = make()
        started: list[float] = []

        async def slow() -> None:
            started.append(reactor.seconds())
            await clock.sleep(25)

        loop = clock.looping_call(slow, 10)
        reactor.pump([5] * 12)
        # Starts at +10; finishes at +35; LoopingCall then skips to the next slot at +40.
        assert [t - started[0] for t in started] == [0, 30]
        loop.stop()


class TestSleep:
    def test_sleep_resumes_after_the_delay(self) -> None:
        """sleep() completes only once the reactor has advanced that far."""
        reactor, clock = make()
        done: list[None] = []
        defer.ensureDeferred(clock.sleep(3)).addCallback(done.append)
        reactor.advance(2.9)
        assert done == []
        reactor.advance(0.1)
        assert done == [None]

    def test_cancelling_sleep_cancels_the_timer(self) -> None:
        """Cancelling the sleeping coroutine removes its pending timer."""
        reactor, clock = make()
        d = defer.ensureDeferred(clock.sleep(3))
        assert len(reactor.getDelayedCalls()) == 1
        d.cancel()
        assert reactor.getDelayedCalls() == []
        failures: list[object] = []
        d.addErrback(failures.append)
        assert len(failures) == 1
