"""The host side of server-name resolution: well-known cache, HTTPS fetcher, twisted.names lookups."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns, error
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from federation.discovery import ServerNameResolver, TwistedDns, WellKnownClient, WellKnownResponse
from federation.transport.connect import AddressPolicy, CheckedConnector, DestinationRefused
from homeserver.config.federation import DEFAULT_IP_RANGE_BLACKLIST
from homeserver.http.site import SCSite
from sc_proto.federation import WELL_KNOWN_DEFAULT_CACHE_S, WELL_KNOWN_ERROR_CACHE_MIN_S, Resolved, SrvRecord
from tests.federation.fakes import FakeDns, FakeWellKnown, accept_connections

VALID = WellKnownResponse(200, b'{"m.server": "deleg.example.net:443"}', {})


class ResolverCacheTests(SynchronousTestCase):
    """Well-known outcomes are cached per the spec's rules."""

    def setUp(self) -> None:
        self.now = 1_700_000_000.0
        self.dns = FakeDns()
        self.well_known = FakeWellKnown({"example.org": VALID})
        self.resolver = ServerNameResolver(self.dns, self.well_known, lambda: self.now, max_entries=3, rand=None)

    def resolve(self, name: str) -> Resolved:
        return self.successResultOf(ensureDeferred(self.resolver.resolve(name)))

    def test_valid_answer_cached_24h(self) -> None:
        """A valid answer without headers is reused for 24 hours, then fetched again."""
        first = self.resolve("example.org")
        assert first.host_header == "deleg.example.net:443"
        self.now += WELL_KNOWN_DEFAULT_CACHE_S - 1
        assert self.resolve("example.org") == first
        assert self.well_known.fetches == ["example.org"]
        self.now += 2
        self.resolve("example.org")
        assert self.well_known.fetches == ["example.org", "example.org"]

    def test_cache_control_respected(self) -> None:
        """max-age sets the lifetime (within the bounds)."""
        self.well_known.answers["example.org"] = WellKnownResponse(
            200, VALID.body, {"Cache-Control": "max-age=600"}
        )
        self.resolve("example.org")
        self.now += 599
        self.resolve("example.org")
        self.now += 2
        self.resolve("example.org")
        assert len(self.well_known.fetches) == 2

    def test_errors_back_off(self) -> None:
        """A failure is cached 2 min; repeated failures double the period."""
        self.resolve("down.example")
        self.now += WELL_KNOWN_ERROR_CACHE_MIN_S - 1
        self.resolve("down.example")
        assert self.well_known.fetches == ["down.example"]
        self.now += 2
        self.resolve("down.example")  # second failure: 4 min
        self.now += 2 * WELL_KNOWN_ERROR_CACHE_MIN_S - 1
        self.resolve("down.example")
        assert len(self.well_known.fetches) == 2
        self.now += 2
        self.resolve("down.example")
        assert len(self.well_known.fetches) == 3

    def test_invalid_answer_is_an_error(self) -> None:
        """A 200 that is not valid JSON is an error: SRV then 8448 on the original name."""
        self.well_known.answers["bad.example"] = WellKnownResponse(200, b"<html>", {})
        result = self.resolve("bad.example")
        assert result.endpoints == (("bad.example", 8448),)
        assert self.dns.srv_lookups == ["_matrix-fed._tcp.bad.example", "_matrix._tcp.bad.example"]

    def test_cache_is_bounded(self) -> None:
        """The least recently used hostname is dropped beyond max_entries."""
        for name in ["a.example", "b.example", "c.example", "d.example"]:
            self.resolve(name)
        assert self.resolver.cache_size == 3
        self.resolve("a.example")
        assert self.well_known.fetches.count("a.example") == 2

    def test_concurrent_resolutions_share_a_fetch(self) -> None:
        """Two resolutions of one hostname while its fetch is pending cause one fetch."""
        pending: defer.Deferred[WellKnownResponse] = defer.Deferred()
        calls: list[str] = []

        class Slow:
            async def fetch(self, hostname: str) -> WellKnownResponse:
                calls.append(hostname)
                return await pending

        resolver = ServerNameResolver(self.dns, Slow(), lambda: self.now, rand=None)
        first = ensureDeferred(resolver.resolve("example.org"))
        second = ensureDeferred(resolver.resolve("example.org"))
        pending.callback(VALID)
        assert self.successResultOf(first) == self.successResultOf(second)
        assert calls == ["example.org"]

    def test_srv_answers_used(self) -> None:
        """The SRV step uses the DNS answers."""
        self.dns.srv["_matrix-fed._tcp.srv.example"] = [SrvRecord(0, 0, 1234, "t.example.")]
        assert self.resolve("srv.example").endpoints == (("t.example", 1234),)


class _WellKnownResource(Resource):
    isLeaf = True

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        super().__init__()
        self.routes = routes
        self.hosts: list[str] = []

    def render(self, request: Request) -> bytes:
        self.hosts.append(request.getHeader(b"host").decode())
        status, headers, body = self.routes.get(request.uri.decode(), (404, {}, b""))
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode())
        return body


class WellKnownClientTests(SynchronousTestCase):
    """The HTTPS fetcher: redirects, size, address policy (plain TCP in memory here)."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.dns = FakeDns({"example.org": ["1.2.3.4"], "other.example": ["5.6.7.8"], "inside.example": ["10.0.0.5"]})
        connector = CheckedConnector(self.reactor, self.dns, AddressPolicy(DEFAULT_IP_RANGE_BLACKLIST), tls=None)
        self.client = WellKnownClient(self.reactor, connector)

    def fetch(self, hostname: str, resource: Resource) -> Any:
        d = ensureDeferred(self.client.fetch(hostname))
        site = SCSite(resource, self.reactor, 1024)
        for _ in range(10):
            accepted = accept_connections(self.reactor, site)
            for _h, port, pump in accepted:
                assert port == 443
                pump.flush()
            if d.called:
                break
        return d

    def test_fetch(self) -> None:
        """GET /.well-known/matrix/server on port 443, Host is the hostname, headers returned."""
        resource = _WellKnownResource({"/.well-known/matrix/server": (200, {"Cache-Control": "max-age=60"}, b"{}")})
        response = self.successResultOf(self.fetch("example.org", resource))
        assert (response.status, response.body) == (200, b"{}")
        assert response.headers["Cache-Control"] == "max-age=60"
        assert resource.hosts == ["example.org"]

    def test_redirect_followed(self) -> None:
        """A 30x to another https host is followed."""
        resource = _WellKnownResource({
            "/.well-known/matrix/server": (302, {"Location": "https://other.example/wk"}, b""),
            "/wk": (200, {}, b'{"m.server": "x.example"}'),
        })
        response = self.successResultOf(self.fetch("example.org", resource))
        assert response.body == b'{"m.server": "x.example"}'
        assert resource.hosts == ["example.org", "other.example"]

    def test_redirect_loop_and_http_refused(self) -> None:
        """A loop, or a redirect to plain http, fails the fetch."""
        loop = _WellKnownResource({"/.well-known/matrix/server": (301, {"Location": "/.well-known/matrix/server"}, b"")})
        self.failureResultOf(self.fetch("example.org", loop))
        http = _WellKnownResource({"/.well-known/matrix/server": (301, {"Location": "http://example.org/x"}, b"")})
        self.failureResultOf(self.fetch("example.org", http))

    def test_redirect_to_private_address_refused(self) -> None:
        """A redirect cannot lead into our network: the target's addresses are checked too."""
        resource = _WellKnownResource({"/.well-known/matrix/server": (302, {"Location": "https://inside.example/"}, b"")})
        self.failureResultOf(self.fetch("example.org", resource), DestinationRefused)

    def test_body_bounded(self) -> None:
        """A huge body fails the fetch."""
        resource = _WellKnownResource({"/.well-known/matrix/server": (200, {}, b" " * 100_000)})
        self.failureResultOf(self.fetch("example.org", resource))

    def test_timeout(self) -> None:
        """A fetch that gets no answer fails after its time limit."""
        d = ensureDeferred(self.client.fetch("example.org"))
        self.reactor.advance(11)
        self.failureResultOf(d)


class _FakeResolver:
    """An IResolver answering from a table of (name, type) -> answers or an exception."""

    def __init__(self, table: dict[tuple[str, int], Any]) -> None:
        self.table = table

    def _answer(self, name: str, kind: int) -> defer.Deferred[Any]:
        value = self.table.get((name, kind), error.DNSNameError(name))
        if isinstance(value, Exception):
            return defer.fail(value)
        return defer.succeed((value, [], []))

    def lookupService(self, name: str) -> defer.Deferred[Any]:
        return self._answer(name, dns.SRV)

    def lookupAddress(self, name: str) -> defer.Deferred[Any]:
        return self._answer(name, dns.A)

    def lookupIPV6Address(self, name: str) -> defer.Deferred[Any]:
        return self._answer(name, dns.AAAA)


def _rr(name: str, kind: int, payload: Any) -> dns.RRHeader:
    return dns.RRHeader(name=name.encode(), type=kind, payload=payload)


class TwistedDnsTests(SynchronousTestCase):
    """twisted.names answers become SrvRecords and address strings."""

    def test_srv_and_addresses(self) -> None:
        """SRV, A and AAAA records are converted; other record types in the answer are skipped."""
        resolver = _FakeResolver({
            ("_matrix-fed._tcp.example.org", dns.SRV): [
                _rr("_matrix-fed._tcp.example.org", dns.SRV, dns.Record_SRV(10, 5, 8448, b"fed.example.org")),
                _rr("x", dns.CNAME, dns.Record_CNAME(b"y")),
            ],
            ("fed.example.org", dns.A): [_rr("fed.example.org", dns.A, dns.Record_A("1.2.3.4"))],
            ("fed.example.org", dns.AAAA): [_rr("fed.example.org", dns.AAAA, dns.Record_AAAA("2001:db8::1"))],
        })
        lookups = TwistedDns(resolver)
        records = self.successResultOf(ensureDeferred(lookups.lookup_srv("_matrix-fed._tcp.example.org")))
        assert records == [SrvRecord(10, 5, 8448, "fed.example.org")]
        addresses = self.successResultOf(ensureDeferred(lookups.lookup_addresses("fed.example.org")))
        assert addresses == ["2001:db8::1", "1.2.3.4"]

    def test_failures_mean_no_records(self) -> None:
        """NXDOMAIN and timeouts give no SRV records and no addresses."""
        resolver = _FakeResolver({("t.example", dns.SRV): error.DNSServerError("x"), ("t.example", dns.A): defer.TimeoutError()})
        lookups = TwistedDns(resolver)
        assert self.successResultOf(ensureDeferred(lookups.lookup_srv("t.example"))) == []
        assert self.successResultOf(ensureDeferred(lookups.lookup_addresses("t.example"))) == []
