"""The outbound client on the fake reactor: signing, resolution, address policy, limits, errors.

Connections are in-memory (``twisted.test.iosim``) and plain TCP (the connector's test-only mode);
TLS, SNI and certificate checks are exercised over real loopback sockets in
``tests/integration/test_federation_tls.py``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from federation.discovery import ServerNameResolver, WellKnownResponse
from federation.interfaces import FederationRequest, JsonDict, RemoteHttpError, RemoteUnreachable
from federation.transport.client import FederationClient, build_uri
from federation.transport.connect import AddressPolicy, CheckedConnector, DestinationRefused
from federation.transport.server import FederationTransport
from homeserver.config.federation import FederationConfig
from homeserver.http.server import JsonResource
from homeserver.http.site import SCSite
from sc_proto.crypto.keys import generate_signing_key, get_verify_key
from sc_proto.crypto.signing import verify_request
from sc_proto.json import decode_json
from tests.federation.fakes import FakeDns, FakeKeys, FakeWellKnown, accept_connections

US = "us.example"
OUR_KEY = generate_signing_key("k1")
REMOTE = "remote.example:8448"


class _RawServer(Protocol):
    """Answers the first request with canned bytes (or never), optionally streaming without end."""

    def __init__(self, answer: bytes | None, stream_forever: bool = False) -> None:
        self.answer = answer
        self.stream_forever = stream_forever
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.answer is not None and b"\r\n\r\n" in self.received:
            self.transport.write(self.answer)  # type: ignore[union-attr]
            self.answer = None
            if self.stream_forever:
                self.keep_streaming()

    def keep_streaming(self) -> None:
        if not self.lost:
            self.transport.write(b"1000\r\n" + b"x" * 0x1000 + b"\r\n")  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True


class _Recorder(Resource):
    """Records the raw request and answers a fixed JSON body."""

    isLeaf = True

    def __init__(self, status: int = 200, body: bytes = b'{"ok": true}') -> None:
        super().__init__()
        self.requests: list[tuple[str, str, dict[str, list[str]], bytes]] = []
        self.status = status
        self.body = body

    def render(self, request: Request) -> bytes:
        headers = {k.decode().lower(): [x.decode() for x in v] for k, v in request.requestHeaders.getAllRawHeaders()}
        content = request.content.read() if request.content is not None else b""
        self.requests.append((request.method.decode(), request.uri.decode(), headers, content))
        request.setResponseCode(self.status)
        request.setHeader(b"Content-Type", b"application/json")
        return self.body


class _ClientCase(SynchronousTestCase):
    config_overrides: dict[str, Any] = {}

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_700_000_000)
        self.dns = FakeDns({
            "remote.example": ["1.2.3.4"],
            "localhost": ["127.0.0.1", "::1"],
            "mixed.example": ["10.1.2.3", "5.6.7.8"],
            "mapped.example": ["::ffff:127.0.0.1"],
            "fed.example.org": ["2001:4860::8"],
        })
        self.well_known = FakeWellKnown()
        self.config = FederationConfig(**{"max_response_bytes": 10_000, "request_timeout_s": 30,
                                          **self.config_overrides})
        connector = CheckedConnector(self.reactor, self.dns, AddressPolicy.from_config(self.config), tls=None)
        resolver = ServerNameResolver(self.dns, self.well_known, self.reactor.seconds, rand=None)
        self.client = FederationClient(self.reactor, US, OUR_KEY, self.config, resolver, connector)

    def start(self, coro: Any) -> Deferred[Any]:
        return ensureDeferred(coro)

    def serve(self, factory: Any) -> list[tuple[str, int, Any]]:
        """Accepts pending connections with ``factory`` and flushes every connection (pooled ones too)."""
        accepted = accept_connections(self.reactor, factory)
        self.pumps = [*getattr(self, "pumps", []), *(pump for _, _, pump in accepted)]
        for pump in self.pumps:
            pump.flush()
        return accepted

    def site(self, resource: Resource) -> SCSite:
        return SCSite(resource, self.reactor, 1024 * 1024)

    def raw(self, server: _RawServer) -> Factory:
        return Factory.forProtocol(lambda: server)


class SigningTests(_ClientCase):
    """Our requests carry X-Matrix signatures that verify, over what is actually sent."""

    def test_get_is_signed_for_the_destination(self) -> None:
        """GET with query args: Host is the server name, the signature verifies with sc_proto.verify_request."""
        recorder = _Recorder()
        d = self.start(self.client.get_json(REMOTE, "/_matrix/federation/v1/query/profile",
                                            {"user_id": ["@a:remote.example"], "field": ["displayname"]}))
        [(host, port, _)] = self.serve(self.site(recorder))
        assert (host, port) == ("1.2.3.4", 8448)
        assert self.successResultOf(d) == {"ok": True}
        method, uri, headers, _body = recorder.requests[0]
        assert uri == "/_matrix/federation/v1/query/profile?user_id=%40a%3Aremote.example&field=displayname"
        assert headers["host"] == [REMOTE]
        auth = verify_request(method=method, uri=uri, destination=REMOTE, content=None,
                              auth=headers["authorization"][0], verify_key=get_verify_key(OUR_KEY))
        assert (auth.origin, auth.destination) == (US, REMOTE)

    def test_put_body_is_canonical_and_signed(self) -> None:
        """PUT sends canonical JSON with Content-Type, and the signature covers it."""
        recorder = _Recorder()
        content = {"b": 1, "a": ["é"]}
        d = self.start(self.client.put_json(REMOTE, "/_matrix/federation/v1/send/1", content))
        self.serve(self.site(recorder))
        self.successResultOf(d)
        method, uri, headers, body = recorder.requests[0]
        assert body == '{"a":["é"],"b":1}'.encode()
        assert headers["content-type"] == ["application/json"]
        verify_request(method=method, uri=uri, destination=REMOTE, content=decode_json(body),
                       auth=headers["authorization"][0], verify_key=get_verify_key(OUR_KEY))

    def test_unsigned_request(self) -> None:
        """signed=False (key fetches) sends no Authorization header."""
        recorder = _Recorder()
        d = self.start(self.client.get_json(REMOTE, "/_matrix/key/v2/server", signed=False))
        self.serve(self.site(recorder))
        self.successResultOf(d)
        assert "authorization" not in recorder.requests[0][2]

    def test_round_trip_through_our_server(self) -> None:
        """Our client's request is accepted by our own inbound transport holding our key."""
        resource = JsonResource("remote")
        keys = FakeKeys()
        keys.add(US, OUR_KEY)
        transport = FederationTransport(resource, REMOTE, FederationConfig(), lambda: 1, keys)

        async def handler(request: FederationRequest) -> tuple[int, JsonDict]:
            return 200, {"origin": request.origin, "content": request.content, "q": dict(request.query)}

        transport.register("POST", "/_matrix/federation/v1/user/keys/query", handler)
        d = self.start(self.client.post_json(REMOTE, "/_matrix/federation/v1/user/keys/query",
                                             {"device_keys": {}}, {"x": ["a b/c"]}))
        self.serve(self.site(resource))
        assert self.successResultOf(d) == {"origin": US, "content": {"device_keys": {}}, "q": {"x": ["a b/c"]}}

    def test_delegation_keeps_signed_destination(self) -> None:
        """Through a well-known delegation, Host follows the delegation but the signature names the server name."""
        self.well_known.answers["example.org"] = WellKnownResponse(200, b'{"m.server": "fed.example.org:443"}', {})
        recorder = _Recorder()
        d = self.start(self.client.get_json("example.org", "/_matrix/federation/v1/version"))
        [(host, port, _)] = self.serve(self.site(recorder))
        self.successResultOf(d)
        assert (host, port) == ("2001:4860::8", 443)
        method, uri, headers, _ = recorder.requests[0]
        assert headers["host"] == ["fed.example.org:443"]
        verify_request(method=method, uri=uri, destination="example.org", content=None,
                       auth=headers["authorization"][0], verify_key=get_verify_key(OUR_KEY))


class AddressPolicyTests(_ClientCase):
    """Deny-listed addresses are never connected to."""

    def refused(self, destination: str) -> None:
        d = self.start(self.client.get_json(destination, "/_matrix/federation/v1/version"))
        self.failureResultOf(d, DestinationRefused)
        assert self.reactor.tcpClients == []

    def test_ip_literals_refused(self) -> None:
        """Loopback, private and mapped IP-literal server names are refused before connecting."""
        for destination in ["127.0.0.1:8448", "127.0.0.1", "[::1]:8448", "10.0.0.1", "[::ffff:127.0.0.1]",
                            "192.168.1.1:443", "[fe80::1]", "169.254.169.254"]:
            self.refused(destination)

    def test_hostname_resolving_to_loopback_refused(self) -> None:
        """A name whose every address is loopback (or IPv4-mapped loopback) is refused."""
        self.refused("localhost:8448")
        self.refused("mapped.example:8448")

    def test_only_allowed_addresses_are_tried(self) -> None:
        """Of a name with a private and a public address, only the public one is connected to."""
        d = self.start(self.client.get_json("mixed.example:8448", "/x"))
        assert [c[:2] for c in self.reactor.tcpClients] == [("5.6.7.8", 8448)]
        self.serve(self.site(_Recorder()))
        self.successResultOf(d)

    def test_invalid_or_unlisted_destination(self) -> None:
        """Malformed server names are refused without DNS."""
        for destination in ["", "bad name", "a:0", "[::1"]:
            self.failureResultOf(self.start(self.client.get_json(destination, "/x")), DestinationRefused)
        assert self.dns.address_lookups == []

    def test_unresolvable(self) -> None:
        """A name without addresses is unreachable (not refused)."""
        failure = self.failureResultOf(self.start(self.client.get_json("nowhere.example:1", "/x")), RemoteUnreachable)
        assert not failure.check(DestinationRefused)

    def test_next_address_after_connection_refused(self) -> None:
        """When the first SRV target refuses the connection, the next one is tried."""
        self.dns.addresses["a.example"] = ["5.5.5.5"]
        self.dns.addresses["b.example"] = ["6.6.6.6"]
        from sc_proto.federation import SrvRecord

        self.dns.srv["_matrix-fed._tcp.srv.example"] = [SrvRecord(1, 0, 1, "a.example"), SrvRecord(2, 0, 2, "b.example")]
        d = self.start(self.client.get_json("srv.example", "/x"))
        host, port, factory, _, _ = self.reactor.tcpClients.pop(0)
        assert (host, port) == ("5.5.5.5", 1)
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        [(host, port, _)] = self.serve(self.site(_Recorder()))
        assert (host, port) == ("6.6.6.6", 2)
        self.successResultOf(d)


class WhitelistedLoopbackTests(_ClientCase):
    """ip_range_whitelist opens the deny list (test setups)."""

    config_overrides = {"ip_range_whitelist": ("127.0.0.0/8",)}

    def test_loopback_allowed(self) -> None:
        """With 127.0.0.0/8 whitelisted, localhost is reached on 127.0.0.1 (::1 stays refused)."""
        d = self.start(self.client.get_json("localhost:8448", "/x"))
        assert [c[:2] for c in self.reactor.tcpClients] == [("127.0.0.1", 8448)]
        self.serve(self.site(_Recorder()))
        self.successResultOf(d)


class DomainWhitelistTests(_ClientCase):
    """domain_whitelist limits outbound destinations."""

    config_overrides = {"domain_whitelist": ("remote.example:8448",)}

    def test_unlisted_refused(self) -> None:
        """Servers outside the list are refused without any lookup; listed ones are reached."""
        self.failureResultOf(self.start(self.client.get_json("other.example:8448", "/x")), DestinationRefused)
        assert self.dns.address_lookups == []
        d = self.start(self.client.get_json(REMOTE, "/x"))
        self.serve(self.site(_Recorder()))
        self.successResultOf(d)


class AnswerTests(_ClientCase):
    """Status codes and bodies become results or errors."""

    def test_error_status(self) -> None:
        """A non-2xx answer raises RemoteHttpError with its JSON body."""
        d = self.start(self.client.get_json(REMOTE, "/x"))
        self.serve(self.site(_Recorder(404, b'{"errcode": "M_UNRECOGNIZED", "error": "no"}')))
        error = self.failureResultOf(d, RemoteHttpError).value
        assert (error.status, error.body["errcode"]) == (404, "M_UNRECOGNIZED")

    def test_error_status_without_json(self) -> None:
        """A non-JSON error body gives an empty body."""
        d = self.start(self.client.get_json(REMOTE, "/x"))
        self.serve(self.site(_Recorder(502, b"<html>bad gateway</html>")))
        assert self.failureResultOf(d, RemoteHttpError).value.body == {}

    def test_success_must_be_a_json_object(self) -> None:
        """A 2xx answer that is not a strict JSON object means no usable answer."""
        recorder = _Recorder(200)
        site = self.site(recorder)
        for body in [b"[]", b"not json", b'{"a": NaN}', b'{"a": 1, "a": 2}']:
            recorder.body = body
            d = self.start(self.client.get_json(REMOTE, "/x"))
            self.serve(site)
            self.failureResultOf(d, RemoteUnreachable)
        assert len(recorder.requests) == 4

    def test_path_must_be_absolute(self) -> None:
        """build_uri refuses relative paths and percent-encodes every query character."""
        assert build_uri("/p", {"a": ["x y", "&="]}) == "/p?a=x%20y&a=%26%3D"
        try:
            build_uri("p", None)
        except Exception as error:
            assert type(error).__name__ == "LocalProtocolError"
        else:
            raise AssertionError("relative path accepted")


class LimitTests(_ClientCase):
    """Time and size limits end requests and their connections."""

    def test_server_never_answers(self) -> None:
        """A connected server that never answers: RemoteUnreachable after request_timeout_s, connection closed."""
        server = _RawServer(None)
        d = self.start(self.client.get_json(REMOTE, "/x"))
        self.serve(self.raw(server))
        self.reactor.advance(29)
        self.assertNoResult(d)
        self.reactor.advance(2)
        assert "30s" in self.failureResultOf(d, RemoteUnreachable).value.reason
        for pump in self.pumps:
            pump.flush()
        assert server.lost

    def test_connection_never_established(self) -> None:
        """A connect that never completes is bounded by the same timeout (or the call's own)."""
        d = self.start(self.client.get_json(REMOTE, "/x", timeout_s=5))
        assert self.reactor.tcpClients
        self.reactor.advance(5.1)
        self.failureResultOf(d, RemoteUnreachable)

    def test_stream_forever_is_cut_at_the_size_limit(self) -> None:
        """A chunked body that never ends is aborted once past max_response_bytes."""
        server = _RawServer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", stream_forever=True)
        d = self.start(self.client.get_json(REMOTE, "/x"))
        [(_, _, pump)] = accept_connections(self.reactor, self.raw(server))
        for _ in range(10):
            server.keep_streaming()
            pump.pump()
            if d.called:
                break
        assert "max_response_bytes" in self.failureResultOf(d, RemoteUnreachable).value.reason
        pump.flush()
        assert server.lost

    def test_declared_length_too_large(self) -> None:
        """A Content-Length over the limit fails at once without reading the body."""
        server = _RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n{")
        d = self.start(self.client.get_json(REMOTE, "/x"))
        self.serve(self.raw(server))
        self.failureResultOf(d, RemoteUnreachable)

    def test_garbage_response(self) -> None:
        """Bytes that are not HTTP: RemoteUnreachable, not an exception of another type."""
        server = _RawServer(b"\x00\x01garbage\r\n\r\n")
        d = self.start(self.client.get_json(REMOTE, "/x"))
        self.serve(self.raw(server))
        self.failureResultOf(d, RemoteUnreachable)
