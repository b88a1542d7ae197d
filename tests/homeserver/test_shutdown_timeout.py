"""Shutdown gives up on connections that do not close, and still closes the database (issue 13).

Found by the cross-server tests: a peer's idle TLS keep-alive connection never finished closing, the
timeout cancelled the ``gatherResults`` of the close waiters, which fails with ``FirstError`` (not
``TimeoutError``), so ``shutdown`` raised before closing the database and its threads kept the
process alive after the reactor stopped.
"""

from __future__ import annotations

from twisted.internet import defer, task

from homeserver.app.composition import _with_timeout


def test_timeout_over_gathered_waiters_is_absorbed() -> None:
    clock = task.Clock()
    waiter: defer.Deferred[None] = defer.Deferred()
    done = defer.ensureDeferred(_with_timeout(defer.gatherResults([waiter], consumeErrors=True), clock, 5.0))
    clock.advance(4.9)
    assert not done.called
    clock.advance(0.2)
    assert done.called
    assert done.result is None  # no exception escapes: shutdown goes on to close the database


def test_waiters_that_finish_in_time() -> None:
    clock = task.Clock()
    waiter: defer.Deferred[None] = defer.Deferred()
    done = defer.ensureDeferred(_with_timeout(defer.gatherResults([waiter], consumeErrors=True), clock, 5.0))
    waiter.callback(None)
    assert done.called and done.result is None
    assert not clock.getDelayedCalls()


def test_a_real_failure_still_propagates() -> None:
    clock = task.Clock()
    done = defer.ensureDeferred(_with_timeout(defer.fail(ValueError("boom")), clock, 5.0))
    assert done.called
    failure = done.result
    assert failure.check(ValueError)
    done.addErrback(lambda _: None)
