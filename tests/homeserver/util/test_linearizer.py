"""The keyed Linearizer behind the per-room input queue."""

from __future__ import annotations

from twisted.internet import defer

from homeserver.util.linearizer import Linearizer


async def _hold(lin: Linearizer, key: str, gate: defer.Deferred[None], log: list[str], name: str) -> None:
    async with lin.queue(key):
        log.append(f"{name}+")
        await gate
        log.append(f"{name}-")


class LinearizerTests:
    def test_one_holder_per_key_in_arrival_order(self) -> None:
        lin = Linearizer("t")
        log: list[str] = []
        gates = [defer.Deferred() for _ in range(3)]
        runs = [defer.ensureDeferred(_hold(lin, "room", g, log, n)) for g, n in zip(gates, "abc", strict=True)]
        assert log == ["a+"]
        gates[1].callback(None)  # b may not run before a leaves
        assert log == ["a+"]
        gates[0].callback(None)
        assert log == ["a+", "a-", "b+", "b-", "c+"]
        gates[2].callback(None)
        assert all(r.called for r in runs)
        assert not lin.is_queued("room")

    def test_keys_do_not_block_each_other(self) -> None:
        lin = Linearizer("t")
        log: list[str] = []
        gate_a: defer.Deferred[None] = defer.Deferred()
        defer.ensureDeferred(_hold(lin, "a", gate_a, log, "a"))
        done = defer.ensureDeferred(_hold(lin, "b", defer.succeed(None), log, "b"))
        assert done.called and log == ["a+", "b+", "b-"]

    def test_cancelled_waiter_leaves_the_queue(self) -> None:
        lin = Linearizer("t")
        log: list[str] = []
        gate: defer.Deferred[None] = defer.Deferred()
        first = defer.ensureDeferred(_hold(lin, "k", gate, log, "a"))
        second = defer.ensureDeferred(_hold(lin, "k", defer.succeed(None), log, "b"))
        third = defer.ensureDeferred(_hold(lin, "k", defer.succeed(None), log, "c"))
        second.cancel()
        second.addErrback(lambda f: f.trap(defer.CancelledError))
        gate.callback(None)
        assert first.called and third.called
        assert log == ["a+", "a-", "c+", "c-"]
        assert not lin.is_queued("k")

    def test_exception_in_holder_releases_the_key(self) -> None:
        lin = Linearizer("t")

        async def boom() -> None:
            async with lin.queue("k"):
                raise ValueError("x")

        failed = defer.ensureDeferred(boom())
        failed.addErrback(lambda f: f.trap(ValueError))
        log: list[str] = []
        assert defer.ensureDeferred(_hold(lin, "k", defer.succeed(None), log, "n")).called
