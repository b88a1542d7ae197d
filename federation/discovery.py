"""Resolving server names with real I/O: drives :mod:`sc_proto.federation.discovery`.

Theory of operation
-------------------
:class:`ServerNameResolver` runs the sans-I/O steps: a :class:`~sc_proto.federation.FetchWellKnown`
step becomes a :class:`WellKnownClient` GET (through the same deny-listed, TLS-verified
:class:`~federation.transport.connect.CheckedConnector` as federation requests, so a well-known URL
cannot reach our own network either), a :class:`~sc_proto.federation.LookupSrv` step an SRV query
through :class:`TwistedDns` (``twisted.names``: ``/etc/hosts``, then the system's resolvers, with
TTL caching). The A/AAAA lookups of the result happen at connect time, in the connector, where each
address is checked.

Well-known outcomes are cached per hostname for the lifetime
:func:`~sc_proto.federation.well_known_cache_period` gives (headers respected within 5 min to 48 h,
24 h by default; errors 2 min doubling to 1 h on repeated failures). The cache holds at most
``max_entries`` hostnames (least recently used dropped first). Concurrent resolutions of one
hostname share one fetch.
"""

from __future__ import annotations

import logging
import random
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from twisted.internet import defer
from twisted.names import client as dns_client
from twisted.names import dns
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from federation.transport.connect import (
    CheckedConnector,
    CoroutineEndpoint,
    parse_ip,
    read_bounded_body,
    untyped,
)
from sc_proto.federation import (
    FetchWellKnown,
    Resolved,
    SrvRecord,
    Step,
    parse_well_known,
    plan,
    well_known_cache_period,
)

logger = logging.getLogger(__name__)

WELL_KNOWN_TIMEOUT_S = 10.0
"""Overall time limit of one well-known fetch, redirects included."""
WELL_KNOWN_MAX_BYTES = 64 * 1024
"""Largest well-known body read (the document is a few dozen bytes)."""
WELL_KNOWN_MAX_REDIRECTS = 5
"""Redirects followed before the fetch counts as failed (loops fail at once)."""
DEFAULT_MAX_CACHE_ENTRIES = 10_000
"""Hostnames whose well-known outcome is remembered."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class DnsLookups(Protocol):
    """SRV and A/AAAA lookups."""

    async def lookup_srv(self, name: str) -> list[SrvRecord]:
        """The SRV records of ``name``; empty when there are none (or the lookup failed)."""
        ...

    async def lookup_addresses(self, host: str) -> list[str]:
        """The IPv6 and IPv4 addresses of ``host``."""
        ...


class TwistedDns:
    """:class:`DnsLookups` over a ``twisted.names`` resolver.

    Args:
        resolver: an ``IResolver``; by default ``twisted.names.client.createResolver()`` (hosts file,
            then the resolvers of ``/etc/resolv.conf``, with caching).
    """

    def __init__(self, resolver: Any = None) -> None:
        self._given = resolver

    @property
    def _resolver(self) -> Any:
        # Built on first use: creating it reads resolv.conf and schedules re-reads on the global reactor.
        if self._given is None:
            self._given = untyped(dns_client).createResolver()
        return self._given

    async def lookup_srv(self, name: str) -> list[SrvRecord]:
        """See :class:`DnsLookups`; NXDOMAIN, timeouts and server failures all mean "no records"."""
        try:
            answers, _authority, _additional = await self._resolver.lookupService(name)
        except Exception as error:
            logger.debug("SRV lookup of %s failed: %s", name, type(error).__name__)
            return []
        records: list[SrvRecord] = []
        for answer in answers:
            if answer.type != dns.SRV:
                continue
            payload = answer.payload
            target = payload.target.name.decode("ascii", "replace")
            records.append(SrvRecord(payload.priority, payload.weight, payload.port, target))
        return records

    async def lookup_addresses(self, host: str) -> list[str]:
        """See :class:`DnsLookups`; AAAA and A are asked for together."""
        results = await defer.DeferredList(
            [self._resolver.lookupIPV6Address(host), self._resolver.lookupAddress(host)], consumeErrors=True
        )
        found: list[str] = []
        for success, value in results:
            if not success:
                continue
            for answer in value[0]:
                if answer.type == dns.A:
                    found.append(socket.inet_ntop(socket.AF_INET, answer.payload.address))
                elif answer.type == dns.AAAA:
                    found.append(socket.inet_ntop(socket.AF_INET6, answer.payload.address))
        return list(dict.fromkeys(found))


@dataclass(frozen=True)
class WellKnownResponse:
    """The final response of a well-known fetch."""

    status: int
    body: bytes
    headers: dict[str, str]


class WellKnownFetcher(Protocol):
    """Fetches ``https://<hostname>/.well-known/matrix/server``."""

    async def fetch(self, hostname: str) -> WellKnownResponse:
        """The final response after redirects.

        Raises:
            Exception: no response (connection, TLS, timeout, size, redirect loop).
        """
        ...


class WellKnownFetchError(Exception):
    """A well-known fetch gave no usable response."""


@implementer(IAgentEndpointFactory)
class _CheckedEndpointFactory:
    """Connects ``https://host:port`` URLs through the checked connector."""

    def __init__(self, connector: CheckedConnector) -> None:
        self._connector = connector

    def endpointForURI(self, uri: URI) -> CoroutineEndpoint:  # Twisted's interface name
        host = uri.host.decode("ascii")
        if uri.scheme != b"https":
            raise WellKnownFetchError("only https URLs are fetched")
        bare = host[1:-1] if host.startswith("[") else host
        sni = None if parse_ip(bare) is not None else bare

        async def connect(factory: Any) -> Any:
            return await self._connector.connect(host, [(bare, uri.port)], bare, sni, factory)

        return CoroutineEndpoint(connect)


class WellKnownClient:
    """:class:`WellKnownFetcher` over HTTPS, bounded in time, size and redirects.

    Args:
        reactor: the reactor.
        connector: the checked connector (address policy, TLS).
        user_agent: the ``User-Agent`` header.
    """

    def __init__(self, reactor: Any, connector: CheckedConnector, user_agent: bytes = b"SecureConnect") -> None:
        self._reactor = reactor
        pool = untyped(HTTPConnectionPool)(reactor, persistent=False)
        self._agent = untyped(Agent).usingEndpointFactory(reactor, _CheckedEndpointFactory(connector), pool=pool)
        self._user_agent = user_agent

    async def fetch(self, hostname: str) -> WellKnownResponse:
        """See :class:`WellKnownFetcher`."""
        deferred = defer.Deferred.fromCoroutine(self._fetch(hostname))
        deferred.addTimeout(WELL_KNOWN_TIMEOUT_S, self._reactor)
        return await deferred

    async def _fetch(self, hostname: str) -> WellKnownResponse:
        url = FetchWellKnown(hostname, hostname).url
        seen = {url}
        for _ in range(WELL_KNOWN_MAX_REDIRECTS + 1):
            headers = Headers({b"User-Agent": [self._user_agent]})
            response = await self._agent.request(b"GET", url.encode("ascii"), headers)
            body = await read_bounded_body(response, WELL_KNOWN_MAX_BYTES)
            location = response.headers.getRawHeaders(b"location")
            if response.code not in _REDIRECTS or not location:
                flat = {k.decode("latin-1"): v[-1].decode("latin-1") for k, v in response.headers.getAllRawHeaders()}
                return WellKnownResponse(response.code, body, flat)
            url = urljoin(url, location[0].decode("latin-1"))
            if urlsplit(url).scheme != "https" or url in seen:
                raise WellKnownFetchError("redirect loop or redirect away from https")
            seen.add(url)
        raise WellKnownFetchError("too many redirects")


@dataclass
class _CacheEntry:
    delegated: str | None
    expires_at: float
    failures: int


class ServerNameResolver:
    """Resolves server names per the spec, caching well-known outcomes.

    Args:
        dns_lookups: SRV lookups.
        well_known: the well-known fetcher.
        now: current time in seconds (the clock's ``time``).
        max_entries: bound of the well-known cache.
        rand: random source for SRV weights (RFC 2782).
    """

    def __init__(
        self,
        dns_lookups: DnsLookups,
        well_known: WellKnownFetcher,
        now: Callable[[], float],
        *,
        max_entries: int = DEFAULT_MAX_CACHE_ENTRIES,
        rand: Callable[[], float] | None = random.random,
    ) -> None:
        self._dns = dns_lookups
        self._well_known = well_known
        self._now = now
        self._max_entries = max_entries
        self._rand = rand
        self._cache: OrderedDict[str, _CacheEntry] = OrderedDict()
        self._inflight: dict[str, list[defer.Deferred[str | None]]] = {}

    @property
    def cache_size(self) -> int:
        """Hostnames in the well-known cache."""
        return len(self._cache)

    async def resolve(self, server_name: str) -> Resolved:
        """Where and how to reach ``server_name``.

        Raises:
            InvalidIdentifierError: ``server_name`` is malformed.
        """
        step: Step = plan(server_name)
        while not isinstance(step, Resolved):
            if isinstance(step, FetchWellKnown):
                step = step.feed(await self.delegation_of(step.hostname))
            else:
                step = step.feed(await self._dns.lookup_srv(step.name), self._rand)
        return step

    async def delegation_of(self, hostname: str) -> str | None:
        """The (cached) well-known delegation of ``hostname``, or None when it has none."""
        entry = self._cache.get(hostname)
        if entry is not None and entry.expires_at > self._now():
            self._cache.move_to_end(hostname)
            return entry.delegated
        waiters = self._inflight.get(hostname)
        if waiters is not None:
            waiter: defer.Deferred[str | None] = defer.Deferred()
            waiters.append(waiter)
            return await waiter
        self._inflight[hostname] = []
        delegated: str | None = None
        try:
            delegated = await self._fetch_and_cache(hostname, entry)
        finally:
            # Waiters get the answer; if this fetch was cancelled (its request timed out), they
            # get "no delegation" for this once, and nothing is cached.
            for waiter in self._inflight.pop(hostname, []):
                waiter.callback(delegated)
        return delegated

    async def _fetch_and_cache(self, hostname: str, previous: _CacheEntry | None) -> str | None:
        headers: dict[str, str] = {}
        try:
            response = await self._well_known.fetch(hostname)
            headers = response.headers
            delegated = parse_well_known(response.status, response.body)
        except defer.CancelledError:
            raise
        except Exception as error:
            logger.info("well-known fetch for %s failed: %s", hostname, type(error).__name__)
            delegated = None
        now = self._now()
        failures = 0
        if delegated is None:
            failures = (previous.failures if previous is not None else 0) + 1
        period = well_known_cache_period(
            valid=delegated is not None, headers=headers, now_s=now, consecutive_failures=max(failures, 1)
        )
        self._cache[hostname] = _CacheEntry(delegated, now + period, failures)
        self._cache.move_to_end(hostname)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return delegated
