"""Outbound connections to other servers: address policy, TLS, bounded response bodies.

Theory of operation
-------------------
Every outbound federation connection (requests and well-known fetches alike) goes through
:class:`CheckedConnector`: given candidate ``(host, port)`` pairs, it resolves each DNS host to its
A/AAAA addresses, drops every address the :class:`AddressPolicy` refuses (loopback, private and
reserved ranges by default, so a peer cannot point us at our own network), connects TCP to the
first allowed address that answers, and wraps the connection in TLS with the certificate name and
SNI that server-name resolution chose. When *every* address was refused, it raises
:class:`DestinationRefused` rather than a connection error, so callers and tests can tell them apart.

Invariants:

* No socket is opened to an address the policy refuses: an IP-literal host is checked as it is, a
  DNS host only after resolution (so ``localhost`` or a name pointing at 127.0.0.1 is refused too).
  IPv4-mapped IPv6 addresses (``::ffff:127.0.0.1``) are checked as the IPv4 address they carry.
* Certificates are verified (name or IP, against the platform trust store) unless the config says
  ``verify_certificates: false``; SNI is never sent for an IP address (the spec's TLS section).
* :func:`read_bounded_body` never buffers more than its limit: past it, the connection is aborted.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from federation.interfaces import RemoteUnreachable
from homeserver.config.federation import FederationConfig

logger = logging.getLogger(__name__)


def untyped(obj: object) -> Any:
    """``obj`` as Any: many Twisted APIs are unannotated or typed as interfaces, so calls go through this."""
    return obj

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_TLS_CREATORS = 1024


class DestinationRefused(RemoteUnreachable):
    """We refused to contact a destination: every address is deny-listed, or the name is not allowed."""


class ResponseTooLarge(Exception):
    """A response body grew past its limit; the connection was aborted."""


class AddressLookup(Protocol):
    """A/AAAA resolution (implemented with ``twisted.names`` by :mod:`federation.discovery`)."""

    async def lookup_addresses(self, host: str) -> list[str]:
        """The IPv6 and IPv4 addresses of ``host`` (textual); empty when it has none.

        Raises:
            Exception: the lookup itself failed (the caller treats it like "no addresses").
        """
        ...


def parse_ip(text: str) -> IPAddress | None:
    """The address ``text`` denotes (brackets allowed around IPv6), or None if it is not an IP."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return None


class AddressPolicy:
    """Which IP addresses outbound federation may connect to.

    Args:
        blacklist: networks refused (CIDR strings).
        whitelist: networks allowed even when inside a refused network.
    """

    def __init__(self, blacklist: Iterable[str], whitelist: Iterable[str] = ()) -> None:
        self._deny: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in blacklist)
        self._allow: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in whitelist)

    @classmethod
    def from_config(cls, config: FederationConfig) -> AddressPolicy:
        """The policy of the ``federation:`` section (``ip_range_blacklist``/``ip_range_whitelist``)."""
        return cls(config.ip_range_blacklist, config.ip_range_whitelist)

    def allows(self, address: str | IPAddress) -> bool:
        """Whether we may connect to ``address``; text that is not an IP address is refused.

        Each form of the address (an IPv4-mapped IPv6 address also as its IPv4 address) must be
        whitelisted or outside every deny-listed network.
        """
        ip = parse_ip(address) if isinstance(address, str) else address
        if ip is None:
            return False
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        for candidate in candidates:
            if any(candidate in net for net in self._allow if net.version == candidate.version):
                continue
            if any(candidate in net for net in self._deny if net.version == candidate.version):
                return False
        return True


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedTLS:
    """TLS without certificate verification (``verify_certificates: false``), still sending SNI."""

    def __init__(self, sni: str | None) -> None:
        self._options = ssl.CertificateOptions(verify=False)
        self._sni = sni.encode("idna") if sni else None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # Twisted's interface name
        connection: SSL.Connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        return connection


class TLSPolicy:
    """Builds the TLS client settings for a certificate name.

    Args:
        verify: verify certificates (name or IP address and chain).
        trust_root: the CA certificates to trust; ``None`` is the platform's store (tests pass their
            own CA).
    """

    def __init__(self, verify: bool, trust_root: Any = None) -> None:
        self.verify = verify
        self._trust_root = trust_root
        self._creators: OrderedDict[tuple[str, str | None], Any] = OrderedDict()

    def creator_for(self, tls_name: str, sni: str | None) -> Any:
        """The connection creator for a server whose certificate must be valid for ``tls_name``."""
        key = (tls_name, sni)
        creator = self._creators.get(key)
        if creator is not None:
            self._creators.move_to_end(key)
            return creator
        if self.verify:
            # optionsForClientTLS checks a DNS name or an IP address and sends SNI only for DNS names.
            creator = ssl.optionsForClientTLS(tls_name, trustRoot=self._trust_root)
        else:
            creator = _UnverifiedTLS(sni)
        self._creators[key] = creator
        if len(self._creators) > _MAX_TLS_CREATORS:
            self._creators.popitem(last=False)
        return creator


class CheckedConnector:
    """Opens connections only to allowed addresses, over TLS.

    Args:
        reactor: provides ``connectTCP``.
        addresses: A/AAAA lookups.
        policy: the address policy.
        tls: the TLS settings, or ``None`` for plain TCP. NOTSPEC: plain TCP exists only for
            in-memory unit tests; nothing in the config can select it.
        connect_timeout_s: TCP connect timeout per address.
    """

    def __init__(
        self,
        reactor: Any,
        addresses: AddressLookup,
        policy: AddressPolicy,
        tls: TLSPolicy | None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._reactor = reactor
        self._addresses = addresses
        self.policy = policy
        self._tls = tls
        self._connect_timeout_s = connect_timeout_s

    async def _addresses_of(self, host: str) -> list[IPAddress]:
        ip = parse_ip(host)
        if ip is not None:
            return [ip]
        try:
            found = await self._addresses.lookup_addresses(host)
        except Exception as error:
            logger.info("address lookup of %s failed: %s", host, type(error).__name__)
            return []
        return [ip for ip in (parse_ip(a) for a in found) if ip is not None]

    def _endpoint(self, ip: IPAddress, port: int, tls_name: str, sni: str | None) -> Any:
        tcp: Any
        if isinstance(ip, ipaddress.IPv6Address):
            tcp = untyped(TCP6ClientEndpoint)(self._reactor, str(ip), port, timeout=self._connect_timeout_s)
        else:
            tcp = TCP4ClientEndpoint(self._reactor, str(ip), port, timeout=self._connect_timeout_s)
        if self._tls is None:
            return tcp
        return wrapClientTLS(self._tls.creator_for(tls_name, sni), tcp)

    async def connect(
        self,
        destination: str,
        endpoints: Sequence[tuple[str, int]],
        tls_name: str,
        sni: str | None,
        protocol_factory: Any,
    ) -> Any:
        """Connects ``protocol_factory`` to the first allowed, reachable address of ``endpoints``.

        Args:
            destination: the server name (for errors and logs).
            endpoints: ``(host, port)`` candidates in order (hosts are IPs or DNS names).
            tls_name: the name or IP the certificate must be valid for.
            sni: the SNI to send (``None`` for none).
            protocol_factory: the Twisted protocol factory to connect.

        Returns:
            The connected protocol.

        Raises:
            DestinationRefused: every address found is refused by the policy.
            RemoteUnreachable: no address, or none answered.
        """
        refused = 0
        failures: list[str] = []
        for host, port in endpoints:
            for ip in await self._addresses_of(host):
                if not self.policy.allows(ip):
                    refused += 1
                    logger.info("not connecting to %s: %s is deny-listed", destination, ip,
                                extra={"destination": destination})
                    continue
                try:
                    return await self._endpoint(ip, port, tls_name, sni).connect(protocol_factory)
                except Exception as error:
                    failures.append(f"{ip}:{port}: {type(error).__name__}")
        if refused and not failures:
            raise DestinationRefused(destination, "every address is deny-listed (federation.ip_range_blacklist)")
        if not failures:
            raise RemoteUnreachable(destination, "no address found")
        raise RemoteUnreachable(destination, "could not connect: " + "; ".join(failures[:4]))


@implementer(IStreamClientEndpoint)
class CoroutineEndpoint:
    """An endpoint whose ``connect`` runs an async function (resolution, then :class:`CheckedConnector`)."""

    def __init__(self, connect: Callable[[Any], Coroutine[Any, Any, Any]]) -> None:
        self._connect = connect

    def connect(self, protocolFactory: Any) -> Deferred[Any]:  # Twisted's interface name
        return Deferred.fromCoroutine(self._connect(protocolFactory))


@implementer(IBodyProducer)
class BytesProducer:
    """A request body held in memory (no cooperator, so it works on any reactor)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:  # Twisted's interface name
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:  # Twisted's interface name
        """Nothing to pause: the body is written at once."""

    def resumeProducing(self) -> None:  # Twisted's interface name
        """Nothing to resume."""

    def stopProducing(self) -> None:  # Twisted's interface name
        """Nothing to stop."""


class _BoundedReader(TwistedProtocol):
    def __init__(self, limit: int, done: Deferred[bytes]) -> None:
        self._limit = limit
        self._done = done
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:  # Twisted's name
        if self._done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._chunks.clear()
            self._done.errback(ResponseTooLarge(f"response body larger than {self._limit} bytes"))
            self.abort()
            return
        self._chunks.append(data)

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            untyped(transport).stopProducing()  # the response's producer proxy

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]  # Twisted's default
        if self._done.called:
            return
        if untyped(reason).check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(reason)


def read_bounded_body(response: IResponse, limit: int) -> Deferred[bytes]:
    """Reads a response body, aborting the connection as soon as it exceeds ``limit`` bytes.

    Cancelling the returned Deferred (a timeout) aborts the connection too.

    Raises:
        ResponseTooLarge: (through the Deferred) the body, or its declared length, is over the limit.
    """
    reader: _BoundedReader | None = None

    def cancel(_: Deferred[bytes]) -> None:
        if reader is not None:
            reader.abort()

    done: Deferred[bytes] = Deferred(cancel)
    length = response.length
    if isinstance(length, int) and length > limit:
        untyped(response).deliverBody(_Discard())
        done.errback(ResponseTooLarge(f"declared response length {length} is over {limit} bytes"))
        return done
    reader = _BoundedReader(limit, done)
    untyped(response).deliverBody(reader)
    return done


class _Discard(TwistedProtocol):
    """Receives a body we refused and aborts its connection at once."""

    def connectionMade(self) -> None:  # Twisted's name
        transport = self.transport
        if transport is not None:
            untyped(transport).stopProducing()  # the response's producer proxy
