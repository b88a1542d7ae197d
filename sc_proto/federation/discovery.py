"""Server-name resolution (server-server API, "Resolving server names") as steps a host drives.

Theory of operation
-------------------
Resolving a server name needs up to three kinds of I/O: an HTTPS GET of
``/.well-known/matrix/server``, SRV lookups (``_matrix-fed._tcp`` then the deprecated
``_matrix._tcp``), and finally A/AAAA lookups of whatever host comes out. This module does none of
it. :func:`plan` looks at the server name and returns the first :data:`Step`:

* :class:`Resolved`: done. It names the ``Host`` header, the name the TLS certificate must be valid
  for, the SNI to send (``None`` for IP addresses, which SNI cannot carry), and the
  ``(host, port)`` candidates in order. A candidate host is an IP address (bare, no brackets) or a
  DNS name the host still resolves with A/AAAA records (and checks against its address policy).
* :class:`FetchWellKnown`: GET ``https://<hostname>/.well-known/matrix/server``; feed the outcome
  (:func:`parse_well_known` turns a response into the delegated name, or ``None`` for any error) to
  :meth:`FetchWellKnown.feed`.
* :class:`LookupSrv`: look up the SRV records of :attr:`LookupSrv.name`; feed them (empty when
  there are none or the lookup failed) to :meth:`LookupSrv.feed`.

Each ``feed`` returns the next step, so the host's loop is::

    step = plan(server_name)
    while not isinstance(step, Resolved):
        if isinstance(step, FetchWellKnown):
            step = step.feed(delegated_name_or_none)
        else:
            step = step.feed(srv_records)

Invariants:

* Steps are immutable values; feeding one twice gives the same answer (no hidden state).
* At most one well-known fetch and two SRV lookups happen per resolution; a delegated name never
  causes a second well-known fetch (the spec's delegation is one level deep).
* The ``Host`` header and the certificate name come from the step of the spec that produced the
  result (never from an SRV target, which DNS, not TLS, vouches for).

:func:`well_known_cache_period` turns a well-known response's ``Cache-Control``/``Expires`` headers
into a cache lifetime under the spec's recommendations (default 24 h, at most 48 h, errors up to an
hour with exponential back-off for repeated failures).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from sc_proto.errors import CanonicalJSONError, InvalidIdentifierError
from sc_proto.identifiers import ServerName
from sc_proto.json import decode_json

__all__ = [
    "DEFAULT_FEDERATION_PORT",
    "WELL_KNOWN_DEFAULT_CACHE_S",
    "WELL_KNOWN_ERROR_CACHE_MAX_S",
    "WELL_KNOWN_ERROR_CACHE_MIN_S",
    "WELL_KNOWN_MAX_CACHE_S",
    "WELL_KNOWN_MIN_CACHE_S",
    "WELL_KNOWN_PATH",
    "FetchWellKnown",
    "LookupSrv",
    "Resolved",
    "SrvRecord",
    "Step",
    "order_srv_records",
    "parse_well_known",
    "plan",
    "well_known_cache_period",
]

DEFAULT_FEDERATION_PORT = 8448
"""The port used when neither the server name, the delegation nor SRV gives one."""

WELL_KNOWN_PATH = "/.well-known/matrix/server"
"""Path of the delegation document (RFC 8615), fetched over HTTPS on port 443."""

SRV_SERVICES = ("_matrix-fed._tcp", "_matrix._tcp")
"""SRV service labels in the order the spec tries them (the second is deprecated)."""

WELL_KNOWN_DEFAULT_CACHE_S = 24 * 3600.0
"""Lifetime of a valid well-known answer without cache headers (the spec's recommendation)."""
WELL_KNOWN_MAX_CACHE_S = 48 * 3600.0
"""Longest a well-known answer is kept, whatever its headers say (the spec's recommendation)."""
WELL_KNOWN_MIN_CACHE_S = 300.0
"""Shortest a *valid* answer is kept, even with ``max-age=0`` or ``no-store``. NOTSPEC: the spec says to
respect cache headers; without a floor a peer could make us fetch its well-known on every request."""
WELL_KNOWN_ERROR_CACHE_MIN_S = 120.0
"""How long a first failure is remembered; each further consecutive failure doubles it..."""
WELL_KNOWN_ERROR_CACHE_MAX_S = 3600.0
"""...up to an hour (the spec: errors cached up to an hour, exponential back-off when repeated)."""

_MAX_AGE_RE = re.compile(r"(?:^|[\s,])max-age\s*=\s*\"?([0-9]{1,12})\"?(?:$|[\s,;])", re.IGNORECASE)
_NO_STORE_RE = re.compile(r"(?:^|[\s,])(?:no-store|no-cache)(?:$|[\s,;=])", re.IGNORECASE)
_MAX_WELL_KNOWN_DEPTH = 16


@dataclass(frozen=True)
class SrvRecord:
    """One SRV answer.

    Attributes:
        priority: lower is tried first.
        weight: relative share among records of one priority.
        port: the port to connect to.
        target: the host to resolve with A/AAAA (``"."`` means "no service here").
    """

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class Resolved:
    """Where and how to connect.

    Attributes:
        server_name: the server name being resolved (what requests are signed for).
        host_header: the ``Host`` header value.
        tls_name: the DNS name or IP address (bare) the certificate must be valid for.
        sni: the TLS SNI to send: ``tls_name`` when it is a DNS name, ``None`` for an IP address.
        endpoints: ``(host, port)`` candidates in the order to try; a host is a bare IP address or
            a DNS name to resolve with A/AAAA records.
    """

    server_name: str
    host_header: str
    tls_name: str
    sni: str | None
    endpoints: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class FetchWellKnown:
    """Fetch ``https://<hostname>/.well-known/matrix/server`` and feed the outcome.

    Attributes:
        server_name: the server name being resolved.
        hostname: the host to fetch from (the server name, which has no port).
    """

    server_name: str
    hostname: str

    @property
    def url(self) -> str:
        """The URL to GET."""
        return f"https://{self.hostname}{WELL_KNOWN_PATH}"

    def feed(self, delegated: str | None) -> Step:
        """The next step given the well-known outcome.

        Args:
            delegated: the valid ``m.server`` value (see :func:`parse_well_known`), or ``None`` when
                the fetch failed or the answer was invalid (spec step 4 onwards).
        """
        if delegated is None:
            return LookupSrv(self.server_name, self.hostname, 0)
        try:
            target = ServerName.parse(delegated)
        except InvalidIdentifierError:
            return LookupSrv(self.server_name, self.hostname, 0)
        if target.is_ip_literal:
            # Step 3.1: the IP (and port) of the delegation; Host is the delegated name as given.
            ip = _bare_ip(target)
            port = target.port or DEFAULT_FEDERATION_PORT
            return Resolved(self.server_name, str(target), ip, None, ((ip, port),))
        if target.port is not None:
            # Step 3.2: delegated host and port; Host carries both.
            host = target.host
            return Resolved(self.server_name, str(target), host, host, ((host, target.port),))
        # Steps 3.3 to 3.5: SRV on the delegated hostname, then its A/AAAA records on 8448.
        return LookupSrv(self.server_name, target.host, 0)


@dataclass(frozen=True)
class LookupSrv:
    """Look up the SRV records of :attr:`name` and feed them.

    Attributes:
        server_name: the server name being resolved.
        hostname: the (delegated or original) hostname the SRV name is built from; also the
            ``Host`` header and certificate name of the result.
        service_index: which of :data:`SRV_SERVICES` this lookup is for.
    """

    server_name: str
    hostname: str
    service_index: int

    @property
    def name(self) -> str:
        """The DNS name to query for SRV records, e.g. ``_matrix-fed._tcp.example.org``."""
        return f"{SRV_SERVICES[self.service_index]}.{self.hostname}"

    def feed(self, records: Sequence[SrvRecord], rand: Callable[[], float] | None = None) -> Step:
        """The next step given the SRV answers (empty when none were found).

        Args:
            records: the answers; ``"."`` targets and invalid ports are ignored.
            rand: a uniform random source in [0, 1) for RFC 2782's weighted order; without it,
                records of one priority are ordered by weight, heaviest first.
        """
        usable = [r for r in records if _usable_srv(r)]
        if usable:
            ordered = order_srv_records(usable, rand)
            endpoints = tuple((r.target.rstrip("."), r.port) for r in ordered)
            return Resolved(self.server_name, self.hostname, self.hostname, self.hostname, endpoints)
        if self.service_index + 1 < len(SRV_SERVICES):
            return LookupSrv(self.server_name, self.hostname, self.service_index + 1)
        # Steps 3.5 and 6: no SRV at all; the hostname's A/AAAA records on the default port.
        return Resolved(
            self.server_name, self.hostname, self.hostname, self.hostname, ((self.hostname, DEFAULT_FEDERATION_PORT),)
        )


Step = Resolved | FetchWellKnown | LookupSrv
"""What :func:`plan` and the ``feed`` methods return."""


def _bare_ip(name: ServerName) -> str:
    """The compressed textual form of an IP literal host, without brackets."""
    return str(ipaddress.ip_address(name.bare_host))


def _usable_srv(record: SrvRecord) -> bool:
    target = record.target.rstrip(".")
    return bool(target) and 0 < record.port <= 65535 and record.priority >= 0 and record.weight >= 0


def plan(server_name: str) -> Step:
    """The first step of resolving ``server_name`` (spec steps 1 and 2 answer at once).

    Args:
        server_name: e.g. ``example.org``, ``example.org:8448``, ``1.2.3.4``, ``[::1]:8448``.

    Returns:
        :class:`Resolved` for an IP literal or an explicit port, else :class:`FetchWellKnown`.

    Raises:
        InvalidIdentifierError: ``server_name`` is not a valid server name.
    """
    name = ServerName.parse(server_name)
    text = str(name)
    if name.is_ip_literal:
        # Step 1: the IP itself; Host is the server name (with its port, if it had one).
        ip = _bare_ip(name)
        return Resolved(text, text, ip, None, ((ip, name.port or DEFAULT_FEDERATION_PORT),))
    if name.port is not None:
        # Step 2: the hostname's A/AAAA records on the given port; Host is the whole server name.
        return Resolved(text, text, name.host, name.host, ((name.host, name.port),))
    return FetchWellKnown(text, name.host)


def order_srv_records(records: Sequence[SrvRecord], rand: Callable[[], float] | None = None) -> list[SrvRecord]:
    """Orders SRV records by priority, and within a priority by RFC 2782's weighted selection.

    Args:
        records: the records (all assumed usable).
        rand: uniform random numbers in [0, 1); ``None`` orders by weight, heaviest first (stable).
    """
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        if rand is None:
            ordered.extend(sorted(group, key=lambda r: -r.weight))
            continue
        remaining = list(group)
        while remaining:
            total = sum(r.weight for r in remaining)
            if total == 0:
                ordered.extend(remaining)
                break
            threshold = rand() * total
            running = 0
            chosen = remaining[-1]
            for record in remaining:
                running += record.weight
                if running > threshold:
                    chosen = record
                    break
            ordered.append(chosen)
            remaining.remove(chosen)
    return ordered


def parse_well_known(status: int, body: bytes) -> str | None:
    """The delegated server name of a well-known response, or ``None`` if the response is invalid.

    Invalid means (per the spec): a non-200 status, a body that is not a JSON object (whatever the
    ``Content-Type``), a missing or non-string ``m.server``, or one that is not a valid server name.

    Args:
        status: the HTTP status of the final response (after redirects).
        body: its body.
    """
    if status != 200:
        return None
    try:
        value: Any = decode_json(body, strict_integers=False, allow_floats=True, max_depth=_MAX_WELL_KNOWN_DEPTH)
    except CanonicalJSONError:
        return None
    if not isinstance(value, dict):
        return None
    delegated = value.get("m.server")
    if not isinstance(delegated, str):
        return None
    try:
        return str(ServerName.parse(delegated))
    except InvalidIdentifierError:
        return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _cache_period_from_headers(headers: Mapping[str, str], now_s: float) -> float | None:
    """The lifetime the headers ask for (``Cache-Control`` wins over ``Expires``), or None."""
    cache_control = _header(headers, "cache-control")
    if cache_control is not None:
        if _NO_STORE_RE.search(cache_control):
            return 0.0
        found = _MAX_AGE_RE.search(cache_control)
        if found is not None:
            return float(int(found.group(1)))
    expires = _header(headers, "expires")
    if expires is not None:
        try:
            when = parsedate_to_datetime(expires)
        except (TypeError, ValueError, IndexError):
            # RFC 9111: an invalid Expires means "already expired".
            return 0.0
        if when.tzinfo is None:
            return 0.0
        return max(0.0, when.timestamp() - now_s)
    return None


def well_known_cache_period(
    *, valid: bool, headers: Mapping[str, str], now_s: float, consecutive_failures: int = 1
) -> float:
    """How long to cache a well-known outcome, in seconds.

    Args:
        valid: whether the response gave a usable delegation (:func:`parse_well_known` not None).
        headers: the final response's headers (any case); empty when there was no response.
        now_s: the current time (seconds since the epoch), for ``Expires``.
        consecutive_failures: for an error, how many fetches in a row have failed, this one
            included (1 for the first).

    Returns:
        For a valid answer: the header's lifetime bounded to [5 min, 48 h], 24 h without headers.
        For an error: 2 min doubling per consecutive failure, at most 1 h.
    """
    if not valid:
        exponent = min(max(consecutive_failures, 1) - 1, 16)
        return min(WELL_KNOWN_ERROR_CACHE_MIN_S * float(1 << exponent), WELL_KNOWN_ERROR_CACHE_MAX_S)
    period = _cache_period_from_headers(headers, now_s)
    if period is None:
        period = WELL_KNOWN_DEFAULT_CACHE_S
    return min(max(period, WELL_KNOWN_MIN_CACHE_S), WELL_KNOWN_MAX_CACHE_S)
