"""Tests for homeserver.http.site: body limits while receiving, client IP, access log."""

from __future__ import annotations

import json
import logging
from typing import Any

from twisted.web.server import Request

from homeserver.http.server import JsonResource
from homeserver.http.servlet import read_body
from homeserver.http.site import SCRequest, SCSite, client_ip_of
from tests.unittest import HomeserverTestCase

LIMIT = 1000


class BodyLimitTests(HomeserverTestCase):
    """Oversized bodies are refused with 413 M_TOO_LARGE before being read."""

    max_request_body_size = LIMIT

    def register_servlets(self, resource: JsonResource) -> None:
        self.seen: list[int] = []

        async def echo_size(request: Request) -> tuple[int, dict[str, Any]]:
            size = len(read_body(request))
            self.seen.append(size)
            return 200, {"size": size}

        resource.register("POST", "/echo", echo_size)
        resource.register("POST", "/upload", echo_size, max_body_size=10 * LIMIT)

    def assert_too_large(self, channel: Any) -> None:
        self.assertEqual(channel.code, 413)
        self.assertEqual(channel.json_body["errcode"], "M_TOO_LARGE")
        self.assertEqual(channel.header("Access-Control-Allow-Origin"), "*")
        self.assertTrue(channel.transport.disconnecting)
        self.assertEqual(self.seen, [])

    def test_body_at_limit_is_accepted(self) -> None:
        """A body of exactly the limit is read and handled."""
        channel = self.make_request("POST", "/echo", b"x" * LIMIT)
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.json_body, {"size": LIMIT})

    def test_content_length_over_limit(self) -> None:
        """A declared Content-Length over the limit is refused at once."""
        self.assert_too_large(self.make_request("POST", "/echo", b"x" * (LIMIT + 1)))

    def test_declared_length_refused_before_body_arrives(self) -> None:
        """The 413 is sent as soon as the headers are in, without waiting for the body."""
        channel = self.make_request("POST", "/echo", b"", content_length=10**12)
        self.assert_too_large(channel)

    def test_chunked_body_over_limit(self) -> None:
        """A chunked body is refused once it grows past the limit, and not buffered."""
        channel = self.make_request("POST", "/echo", b"x" * (LIMIT * 5), chunked=True)
        self.assert_too_large(channel)
        request = channel.request
        self.assertIsInstance(request, SCRequest)
        self.assertTrue(request.body_rejected)
        self.assertLessEqual(request.content.seek(0, 2), LIMIT)

    def test_chunked_body_under_limit(self) -> None:
        """A chunked body within the limit is handled normally."""
        channel = self.make_request("POST", "/echo", b"x" * (LIMIT - 1), chunked=True)
        self.assertEqual(channel.json_body, {"size": LIMIT - 1})

    def test_route_may_raise_the_limit(self) -> None:
        """A route with its own larger limit (e.g. media upload) accepts bigger bodies."""
        channel = self.make_request("POST", "/upload", b"x" * (LIMIT * 5))
        self.assertEqual(channel.json_body, {"size": LIMIT * 5})
        self.seen.clear()
        self.assert_too_large(self.make_request("POST", "/upload", b"x" * (LIMIT * 10 + 1)))

    def test_expect_continue_not_sent_after_413(self) -> None:
        """With ``Expect: 100-continue`` the client gets the 413 and no ``100 Continue``."""
        channel = self.make_request(
            "POST", "/echo", b"", content_length=LIMIT + 1, headers=[("Expect", "100-continue")]
        )
        self.assert_too_large(channel)
        self.assertNotIn(b"100 Continue", channel.transport.value())

    def test_413_is_access_logged_without_query(self) -> None:
        """The refusal is logged, without the query string."""
        with self.assertLogs("homeserver.http.access", logging.INFO) as logs:
            self.make_request("POST", "/echo?access_token=secret", b"x" * (LIMIT + 1))
        output = "\n".join(logs.output)
        self.assertIn("413", output)
        self.assertNotIn("secret", output)

    def test_negative_limit_rejected(self) -> None:
        """A negative site limit is a configuration error."""
        with self.assertRaises(ValueError):
            SCSite(self.resource, self.reactor, -1)

    def test_failing_limit_lookup_falls_back_to_default(self) -> None:
        """If the per-route lookup crashes, the site default applies."""

        def broken(method: bytes, path: bytes) -> int | None:
            raise RuntimeError("boom")

        site = SCSite(self.resource, self.reactor, 5, body_limit_lookup=broken)
        with self.assertLogs("homeserver.http.site", logging.ERROR):
            self.assertEqual(site.body_limit_for(b"POST", b"/echo"), 5)


class ClientAddressTests(HomeserverTestCase):
    """Client IP, user agent and access logging."""

    def register_servlets(self, resource: JsonResource) -> None:
        async def whoami(request: Request) -> tuple[int, dict[str, Any]]:
            assert isinstance(request, SCRequest)
            return 200, {"ip": client_ip_of(request), "ua": request.get_user_agent()}

        resource.register("GET", "/ip", whoami)

    def test_peer_address_used_by_default(self) -> None:
        """Without proxy trust, X-Forwarded-For is ignored."""
        channel = self.make_request(
            "GET", "/ip", client_ip="192.0.2.7", headers=[("X-Forwarded-For", "203.0.113.9")]
        )
        self.assertEqual(channel.json_body["ip"], "192.0.2.7")

    def test_forwarded_for_trusted_when_configured(self) -> None:
        """Behind a trusted proxy, the last X-Forwarded-For entry (the proxy's) is used."""
        self.site = SCSite(self.resource, self.reactor, LIMIT, trust_x_forwarded_for=True)
        channel = self.make_request(
            "GET", "/ip", client_ip="10.0.0.1", headers=[("X-Forwarded-For", "6.6.6.6, 203.0.113.9")]
        )
        self.assertEqual(channel.json_body["ip"], "203.0.113.9")
        channel = self.make_request("GET", "/ip", client_ip="10.0.0.1")
        self.assertEqual(channel.json_body["ip"], "10.0.0.1")

    def test_user_agent_truncated(self) -> None:
        """Very long User-Agent headers are truncated."""
        channel = self.make_request("GET", "/ip", headers=[("User-Agent", "a" * 5000)])
        self.assertEqual(len(channel.json_body["ua"]), 512)

    def test_access_log_omits_query_string(self) -> None:
        """Access-log lines never include the query string (it may hold an access token)."""
        with self.assertLogs("homeserver.http.access", logging.INFO) as logs:
            channel = self.make_request("GET", "/ip?access_token=syt_secret&x=1")
        self.assertEqual(channel.code, 200)
        output = "\n".join(logs.output)
        self.assertIn("GET /ip 200", output)
        self.assertNotIn("syt_secret", output)


class GracefulCloseTests:
    """SCSite tracks its connections so shutdown can flush and close them."""

    def test_close_connections_waits_for_every_connection(self) -> None:
        from twisted.internet.address import IPv4Address
        from twisted.internet.error import ConnectionDone
        from twisted.internet.testing import MemoryReactorClock, StringTransport
        from twisted.python.failure import Failure

        from homeserver.http.server import JsonResource
        from homeserver.http.site import SCSite

        site = SCSite(JsonResource("t"), MemoryReactorClock(), 1024)
        assert site.close_connections().called  # nothing open: fires at once
        protocols, transports = [], []
        for port in (1, 2):
            protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
            transport = StringTransport()
            protocol.makeConnection(transport)
            protocols.append(protocol)
            transports.append(transport)
        assert site.open_connections == 2
        closed = site.close_connections()
        assert all(t.disconnecting for t in transports)  # loseConnection: flush, then close
        assert not closed.called
        protocols[0].connectionLost(Failure(ConnectionDone()))
        assert not closed.called
        protocols[1].connectionLost(Failure(ConnectionDone()))
        assert closed.called
        assert site.open_connections == 0


class UnparseableRequestTests(HomeserverTestCase):
    """Requests too large to parse get a Matrix error body, not a bare 400 or a dropped connection (issue 12)."""

    def _exchange(self, raw: bytes) -> tuple[int, dict[str, Any], Any]:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {k.decode().lower(): v.decode() for k, _, v in (line.partition(b": ") for line in lines[1:])}
        return status, headers, json.loads(body)

    def test_overlong_request_line_is_414(self) -> None:
        """A 70,000-character path (an overlong state key) answers 414 M_TOO_LARGE."""
        path = b"/_matrix/client/v3/rooms/!r:x/state/m.custom/" + b"a" * 70_000
        status, headers, body = self._exchange(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((status, body["errcode"]), (414, "M_TOO_LARGE"))
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["connection"], "close")

    def test_request_line_over_the_limit_is_414(self) -> None:
        """A request line just over MAX_REQUEST_LINE_BYTES (shorter than a header line may be) is 414."""
        from homeserver.http.site import MAX_REQUEST_LINE_BYTES

        path = b"/" + b"a" * MAX_REQUEST_LINE_BYTES
        status, _, body = self._exchange(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((status, body["errcode"]), (414, "M_TOO_LARGE"))

    def test_oversized_header_is_431(self) -> None:
        """One header line longer than the header limit answers 431 M_TOO_LARGE."""
        status, _, body = self._exchange(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        self.assertEqual((status, body["errcode"]), (431, "M_TOO_LARGE"))

    def test_too_many_header_bytes_is_431(self) -> None:
        """Many headers that together exceed the limit answer 431 M_TOO_LARGE."""
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
        status, _, body = self._exchange(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        self.assertEqual((status, body["errcode"]), (431, "M_TOO_LARGE"))

    def test_garbage_is_400_with_a_matrix_body(self) -> None:
        """A request line Twisted cannot parse answers 400 M_UNKNOWN with a JSON body."""
        status, _, body = self._exchange(b"\x00\x01 NOT HTTP AT ALL\r\n\r\n")
        self.assertEqual((status, body["errcode"]), (400, "M_UNKNOWN"))

    def test_normal_request_still_parses(self) -> None:
        """A request within the limits reaches the resource (404 M_UNRECOGNIZED for an unknown path)."""
        status, _, body = self._exchange(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual((status, body["errcode"]), (404, "M_UNRECOGNIZED"))
