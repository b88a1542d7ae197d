"""Tests for homeserver.http.server: routing, error rendering, CORS, disconnects, in-flight."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from homeserver.http.server import (
    JsonResource,
    compile_template,
    encode_json_body,
    snake_case,
)
from homeserver.logging.context import request_id as request_id_var
from sc_proto.errors import Codes, MatrixError
from tests.unittest import HomeserverTestCase, make_request

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
}


class TemplateTests(SynchronousTestCase):
    """Path-template compilation (pure)."""

    def test_placeholders_become_snake_case_kwargs(self) -> None:
        """camelCase placeholder names map to snake_case keyword names."""
        regex, params = compile_template("/rooms/{roomId}/send/{eventType}/{txnId}")
        assert params == (("roomId", "room_id"), ("eventType", "event_type"), ("txnId", "txn_id"))
        assert regex.match("/rooms/a/send/b/c")
        assert not regex.match("/rooms/a/send/b/c/d")
        assert not regex.match("/rooms//send/b/c")

    def test_custom_segment_regex(self) -> None:
        """``{name:regex}`` replaces the default one-segment regex (e.g. empty state keys)."""
        regex, _ = compile_template("/state/{eventType}/{stateKey:[^/]*}")
        assert regex.match("/state/m.room.name/")
        found = regex.match("/state/m.room.name/")
        assert found is not None and found.group("stateKey") == ""

    def test_literal_regex_characters_are_escaped(self) -> None:
        """Dots and other regex metacharacters in literals match only themselves."""
        regex, _ = compile_template("/.well-known/matrix/client")
        assert regex.match("/.well-known/matrix/client")
        assert not regex.match("/Xwell-known/matrix/client")

    def test_malformed_templates_are_rejected(self) -> None:
        """Malformed templates fail at registration time with ValueError."""
        for template in (
            "no/leading/slash",
            "/a/{unclosed",
            "/a/stray}",
            "/a/{1bad}",
            "/a/{x}/{x}",
            "/a/{roomId}/{room_id}",
            "/a/{x:(capturing)}",
            "/a/{x:[}",
        ):
            with self.subTest(template=template), pytest.raises(ValueError):
                compile_template(template)

    def test_snake_case(self) -> None:
        """snake_case converts camelCase and leaves snake_case alone."""
        assert snake_case("roomId") == "room_id"
        assert snake_case("serverName") == "server_name"
        assert snake_case("already_snake") == "already_snake"


class RegistrationTests(SynchronousTestCase):
    """Registration errors (pure)."""

    async def _handler(self, request: Request) -> tuple[int, dict[str, Any]]:
        return 200, {}

    def test_duplicate_registration_rejected(self) -> None:
        """Registering the same method and template twice is a programming error."""
        resource = JsonResource()
        resource.register("GET", "/a", self._handler)
        with pytest.raises(ValueError):
            resource.register("GET", "/a", self._handler)

    def test_bad_methods_rejected(self) -> None:
        """HEAD and OPTIONS are implicit; unknown methods are refused."""
        for method in ("HEAD", "OPTIONS", "BREW"):
            with self.subTest(method=method), pytest.raises(ValueError):
                JsonResource().register(method, "/a", self._handler)

    def test_negative_body_limit_rejected(self) -> None:
        """A negative max_body_size is refused."""
        with pytest.raises(ValueError):
            JsonResource().register("POST", "/a", self._handler, max_body_size=-1)

    def test_max_body_size_for(self) -> None:
        """The site can ask a route's body limit before reading the body."""
        resource = JsonResource()
        resource.register("POST", "/upload/{name}", self._handler, max_body_size=99)
        resource.register("GET", "/upload/{name}", self._handler)
        assert resource.max_body_size_for(b"POST", b"/upload/x?y=1") == 99
        assert resource.max_body_size_for(b"GET", b"/upload/x") is None
        assert resource.max_body_size_for(b"PUT", b"/upload/x") is None
        assert resource.max_body_size_for(b"POST", b"/elsewhere") is None

    def test_encode_json_body_is_compact_utf8(self) -> None:
        """Responses are compact and do not escape non-ASCII."""
        assert encode_json_body({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()


class RoutingTests(HomeserverTestCase):
    """Requests through the real Site: routing, decoding, error rendering and headers."""

    def register_servlets(self, resource: JsonResource) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

        async def send(request: Request, **kwargs: str) -> tuple[int, dict[str, Any]]:
            self.calls.append(("send", kwargs))
            return 200, dict(kwargs)

        async def state(request: Request, room_id: str, event_type: str, state_key: str = "") -> Any:
            return 200, {"room_id": room_id, "event_type": event_type, "state_key": state_key}

        async def fail_matrix(request: Request) -> Any:
            raise MatrixError(403, Codes.FORBIDDEN, "nope", extra={"extra_field": 1})

        async def fail_limit(request: Request) -> Any:
            raise MatrixError(429, Codes.LIMIT_EXCEEDED, "slow down", extra={"retry_after_ms": 1500})

        async def fail_crash(request: Request) -> Any:
            raise RuntimeError("secret-internal-detail at /srv/db.py")

        async def bad_return(request: Request) -> Any:
            return {"not": "a tuple"}

        async def unencodable(request: Request) -> Any:
            return 200, {"x": object()}

        async def request_id(request: Request) -> Any:
            return 200, {"id": request_id_var.get()}

        async def custom_cache(request: Request) -> Any:
            request.setHeader(b"Cache-Control", b"max-age=3600")
            return 200, {}

        resource.register("PUT", "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", send)
        resource.register(
            "GET",
            [
                "/_matrix/client/v3/rooms/{roomId}/state/{eventType}",
                "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey:[^/]*}",
            ],
            state,
        )
        resource.register("GET", ["/r0/matrix_error", "/v3/matrix_error"], fail_matrix)
        resource.register("GET", "/limit", fail_limit)
        resource.register("GET", "/crash", fail_crash)
        resource.register("GET", "/bad_return", bad_return)
        resource.register("GET", "/unencodable", unencodable)
        resource.register("GET", "/request_id", request_id)
        resource.register("GET", "/custom_cache", custom_cache)

    def assert_cors(self, channel: Any) -> None:
        for name, value in CORS.items():
            self.assertEqual(channel.header(name), value)

    def test_path_params_are_url_decoded(self) -> None:
        """Percent-encoded path segments reach the handler decoded as UTF-8."""
        channel = self.make_request(
            "PUT", "/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/%E2%9C%93%2F1", {}
        )
        self.assertEqual(channel.code, 200)
        self.assertEqual(
            channel.json_body,
            {"room_id": "!room:example.org", "event_type": "m.room.message", "txn_id": "✓/1"},
        )

    def test_invalid_utf8_path_param(self) -> None:
        """A path parameter that decodes to invalid UTF-8 is a 400, not a crash."""
        channel = self.make_request("PUT", "/_matrix/client/v3/rooms/%FF/send/m.room.message/1", {})
        self.assertEqual(channel.code, 400)
        self.assertEqual(channel.json_body["errcode"], "M_INVALID_PARAM")

    def test_optional_trailing_segment(self) -> None:
        """Two templates can share a handler; an empty state key matches ``{stateKey:[^/]*}``."""
        base = "/_matrix/client/v3/rooms/!r:x/state/m.room.name"
        self.assertEqual(self.make_request("GET", base).json_body["state_key"], "")
        self.assertEqual(self.make_request("GET", base + "/").json_body["state_key"], "")
        self.assertEqual(self.make_request("GET", base + "/%40u%3Ax").json_body["state_key"], "@u:x")

    def test_query_string_does_not_affect_routing(self) -> None:
        """The query string is not part of the matched path."""
        channel = self.make_request("GET", "/_matrix/client/v3/rooms/!r:x/state/m.room.name?x=1")
        self.assertEqual(channel.code, 200)

    def test_unknown_path_is_404_unrecognized(self) -> None:
        """An unknown path answers 404 M_UNRECOGNIZED with CORS headers."""
        channel = self.make_request("GET", "/_matrix/client/v3/nothing_here")
        self.assertEqual(channel.code, 404)
        self.assertEqual(channel.json_body["errcode"], "M_UNRECOGNIZED")
        self.assert_cors(channel)

    def test_wrong_method_is_405_unrecognized(self) -> None:
        """A known path with the wrong method answers 405 M_UNRECOGNIZED and an Allow header."""
        channel = self.make_request("DELETE", "/_matrix/client/v3/rooms/!r:x/send/m.room.message/1")
        self.assertEqual(channel.code, 405)
        self.assertEqual(channel.json_body["errcode"], "M_UNRECOGNIZED")
        self.assertEqual(channel.header("Allow"), "OPTIONS, PUT")
        self.assert_cors(channel)
        self.assertEqual(self.calls, [])

    def test_options_preflight(self) -> None:
        """OPTIONS answers 200 {} with CORS headers and runs no endpoint logic."""
        for path in ("/_matrix/client/v3/rooms/!r:x/send/m.room.message/1", "/unknown/path"):
            channel = self.make_request("OPTIONS", path)
            self.assertEqual(channel.code, 200)
            self.assertEqual(channel.json_body, {})
            self.assert_cors(channel)
        self.assertEqual(self.calls, [])

    def test_head_is_answered_like_get_without_body(self) -> None:
        """HEAD reaches the GET handler; Twisted suppresses the body."""
        channel = self.make_request("HEAD", "/_matrix/client/v3/rooms/!r:x/state/m.room.name")
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.result["body"], b"")

    def test_success_headers(self) -> None:
        """JSON responses carry Content-Type, Content-Length, Cache-Control and CORS headers."""
        channel = self.make_request("PUT", "/_matrix/client/v3/rooms/!r:x/send/m.room.message/1", {})
        self.assertEqual(channel.header("Content-Type"), "application/json")
        self.assertEqual(int(channel.header("Content-Length") or -1), len(channel.result["body"]))
        self.assertEqual(channel.header("Cache-Control"), "no-cache, no-store, must-revalidate")
        self.assertEqual(channel.header("Server"), "SecureConnect")
        self.assert_cors(channel)

    def test_handler_may_set_cache_control(self) -> None:
        """A handler's own Cache-Control header is kept."""
        self.assertEqual(self.make_request("GET", "/custom_cache").header("Cache-Control"), "max-age=3600")

    def test_matrix_error_rendering(self) -> None:
        """MatrixError becomes its status and {errcode, error, **extra}, on every prefix."""
        for path in ("/r0/matrix_error", "/v3/matrix_error"):
            channel = self.make_request("GET", path)
            self.assertEqual(channel.code, 403)
            self.assertEqual(
                channel.json_body, {"errcode": "M_FORBIDDEN", "error": "nope", "extra_field": 1}
            )
            self.assert_cors(channel)

    def test_rate_limit_error_sets_retry_after(self) -> None:
        """429 responses carry a Retry-After header in whole seconds (rounded up)."""
        channel = self.make_request("GET", "/limit")
        self.assertEqual(channel.code, 429)
        self.assertEqual(channel.json_body["retry_after_ms"], 1500)
        self.assertEqual(channel.header("Retry-After"), "2")

    def test_unexpected_exception_is_500_without_details(self) -> None:
        """Any other exception is 500 M_UNKNOWN; the traceback is logged, never sent."""
        with self.assertLogs("homeserver.http.server", logging.ERROR) as logs:
            channel = self.make_request("GET", "/crash")
        self.assertEqual(channel.code, 500)
        self.assertEqual(channel.json_body, {"errcode": "M_UNKNOWN", "error": "Internal server error"})
        self.assertNotIn(b"secret", channel.result["body"])
        self.assertNotIn(b"Traceback", channel.result["body"])
        self.assert_cors(channel)
        self.assertIn("secret-internal-detail", "\n".join(logs.output))

    def test_bad_handler_return_is_500(self) -> None:
        """A handler returning something other than (int, mapping) is a 500."""
        with self.assertLogs("homeserver.http.server", logging.ERROR):
            channel = self.make_request("GET", "/bad_return")
        self.assertEqual(channel.code, 500)

    def test_unencodable_response_is_500(self) -> None:
        """A body that cannot be JSON-encoded becomes a 500, not a half-written response."""
        with self.assertLogs("homeserver.http.server", logging.ERROR):
            channel = self.make_request("GET", "/unencodable")
        self.assertEqual(channel.code, 500)
        self.assertEqual(channel.json_body["errcode"], "M_UNKNOWN")

    def test_request_id_is_set_per_request(self) -> None:
        """Each request runs with its own request id in the contextvar."""
        first = self.make_request("GET", "/request_id").json_body["id"]
        second = self.make_request("GET", "/request_id").json_body["id"]
        self.assertTrue(first.startswith("test-"))
        self.assertNotEqual(first, second)
        self.assertIsNone(request_id_var.get())

    def test_plain_resource_is_wrapped_in_a_site(self) -> None:
        """make_request accepts a bare resource and wraps it in an SCSite."""
        channel = make_request(self.reactor, self.resource, "GET", "/v3/matrix_error")
        self.assertEqual(channel.code, 403)


class AsyncBehaviourTests(HomeserverTestCase):
    """Slow handlers: disconnects, cancellation, in-flight tracking and concurrency."""

    def register_servlets(self, resource: JsonResource) -> None:
        self.pending: dict[str, Deferred[int]] = {}
        self.cancelled: list[str] = []
        self.finished: list[str] = []

        async def slow(request: Request, key: str) -> tuple[int, dict[str, Any]]:
            deferred: Deferred[int] = Deferred()
            self.pending[key] = deferred
            try:
                value = await deferred
            except BaseException:
                self.cancelled.append(key)
                raise
            self.finished.append(key)
            return 200, {"key": key, "value": value}

        resource.register("GET", "/slow/{key}", slow)
        resource.register("GET", "/cancellable/{key}", slow, cancellable=True)
        resource.register("POST", "/small", slow, max_body_size=10)

    def test_many_requests_in_flight_resolve_independently(self) -> None:
        """Concurrent requests finish in any order, each with its own response."""
        channels = {
            str(i): self.make_request("GET", f"/slow/{i}", await_result=False) for i in range(20)
        }
        self.pump()
        self.assertEqual(self.resource.inflight_count, 20)
        for i in reversed(range(20)):
            self.pending[str(i)].callback(i * 10)
            self.assertTrue(channels[str(i)].is_finished())
            if i:
                self.assertFalse(channels[str(i - 1)].is_finished())
        for key, channel in channels.items():
            self.assertEqual(channel.json_body, {"key": key, "value": int(key) * 10})
        self.assertEqual(self.resource.inflight_count, 0)

    def test_wait_for_inflight(self) -> None:
        """wait_for_inflight fires only once every request in flight has completed."""
        idle = self.resource.wait_for_inflight()
        self.assertEqual(self.successResultOf(idle), None)
        self.make_request("GET", "/slow/a", await_result=False)
        self.make_request("GET", "/slow/b", await_result=False)
        waiter = self.resource.wait_for_inflight()
        self.pending["a"].callback(1)
        self.assertNoResult(waiter)
        self.pending["b"].callback(2)
        self.successResultOf(waiter)

    def test_disconnected_client_gets_no_write(self) -> None:
        """A response is not written after the client went away (and nothing crashes)."""
        channel = self.make_request("GET", "/slow/x", await_result=False)
        channel.disconnect()
        with self.assertLogs("homeserver.http.server", logging.INFO) as logs:
            self.pending["x"].callback(1)
        self.assertEqual(channel.transport.value(), b"")
        self.assertIn("connection closed", "\n".join(logs.output))
        self.assertEqual(self.resource.inflight_count, 0)
        # Non-cancellable handlers run to completion.
        self.assertEqual(self.finished, ["x"])

    def test_cancellable_handler_is_cancelled_on_disconnect(self) -> None:
        """A route marked cancellable has its handler cancelled when the client disconnects."""
        channel = self.make_request("GET", "/cancellable/y", await_result=False)
        channel.disconnect()
        self.pump()
        self.assertEqual(self.cancelled, ["y"])
        self.assertEqual(channel.transport.value(), b"")
        self.assertEqual(self.resource.inflight_count, 0)

    def test_route_body_limit_checked_after_read(self) -> None:
        """A route's smaller limit is enforced (here already by the site, before reading)."""
        channel = self.make_request("POST", "/small", b"x" * 11)
        self.assertEqual(channel.code, 413)
        self.assertEqual(channel.json_body["errcode"], "M_TOO_LARGE")
