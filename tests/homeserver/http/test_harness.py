"""Tests for the unit-test harness itself (tests/unittest.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.web.server import Request

from homeserver.http.server import JsonResource
from tests.unittest import HomeserverTestCase, TimedOutError, encode_content, override_config


class HarnessTests(HomeserverTestCase):
    """make_request, pump, get_success, get_failure and override_config."""

    def default_config(self) -> dict[str, Any]:
        return {"server_name": "test", "nested": {"a": 1, "b": 2}}

    def make_homeserver(self, reactor: Any, clock: Any) -> Any:
        return {"made_with": (reactor, clock)}

    def prepare(self, reactor: Any, clock: Any, homeserver: Any) -> None:
        self.prepared = homeserver

    def register_servlets(self, resource: JsonResource) -> None:
        async def later(request: Request) -> tuple[int, dict[str, Any]]:
            deferred: Deferred[None] = Deferred()
            self.reactor.callLater(5, deferred.callback, None)
            await deferred
            return 200, {"done": True}

        async def never(request: Request) -> tuple[int, dict[str, Any]]:
            await Deferred()
            return 200, {}

        resource.register("GET", "/later", later)
        resource.register("GET", "/never", never)

    def test_hooks_called(self) -> None:
        """make_homeserver gets the fake reactor and clock; prepare gets its result."""
        self.assertIs(self.hs["made_with"][0], self.reactor)
        self.assertIs(self.prepared, self.hs)
        self.assertEqual(self.config, {"server_name": "test", "nested": {"a": 1, "b": 2}})

    @override_config({"nested": {"b": 3}, "extra": True})
    def test_override_config(self) -> None:
        """@override_config deep-merges into default_config for one test."""
        self.assertEqual(self.config["nested"], {"a": 1, "b": 3})
        self.assertTrue(self.config["extra"])

    def test_fake_clock(self) -> None:
        """The clock reads the fake reactor's time and moves only when pumped."""
        start = self.clock.time_msec()
        self.pump(2.0)
        self.assertEqual(self.clock.time_msec() - start, 2000)

    def test_request_waits_for_fake_time(self) -> None:
        """make_request advances fake time until the handler's timer fires."""
        channel = self.make_request("GET", "/later")
        self.assertEqual(channel.json_body, {"done": True})

    def test_request_times_out(self) -> None:
        """A request that never completes raises TimedOutError instead of hanging."""
        channel = self.make_request("GET", "/never", await_result=False)
        self.assertFalse(channel.is_finished())
        with self.assertRaises(TimedOutError):
            channel.await_result(timeout=1)
        with self.assertRaises(AssertionError):
            _ = channel.result

    def test_get_success_and_failure(self) -> None:
        """get_success returns results; get_failure returns the Failure of the expected type."""

        async def ok() -> int:
            return 5

        async def fails() -> None:
            raise KeyError("x")

        self.assertEqual(self.get_success(ok()), 5)
        self.assertEqual(self.get_success(succeed(6)), 6)
        failure = self.get_failure(fails(), KeyError)
        self.assertTrue(failure.check(KeyError))

    def test_get_success_pumps(self) -> None:
        """get_success(by=...) advances the clock so timers can fire."""
        deferred: Deferred[str] = Deferred()
        self.reactor.callLater(1, deferred.callback, "late")
        self.assertEqual(self.get_success(deferred, by=1.0), "late")

    def test_encode_content(self) -> None:
        """Bodies may be None, bytes, str or JSON values."""
        self.assertEqual(encode_content(None), b"")
        self.assertEqual(encode_content(b"x"), b"x")
        self.assertEqual(encode_content("é"), "é".encode())
        self.assertEqual(encode_content({"a": 1}), b'{"a": 1}')
