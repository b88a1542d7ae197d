"""The outbound federation client: signed JSON requests to other homeservers.

Theory of operation
-------------------
:class:`FederationClient` implements :class:`~federation.interfaces.FederationHttp`. One request:

1. The destination is checked: a valid server name (:mod:`sc_proto.identifiers`), inside
   ``domain_whitelist`` when one is set. Refusals raise
   :class:`~federation.transport.connect.DestinationRefused` without any I/O.
2. It is resolved (:class:`~federation.discovery.ServerNameResolver`): ``Host`` header, certificate
   name, SNI and candidate endpoints.
3. The request is signed with ``X-Matrix`` (origin = us, destination = the server name *before*
   delegation, as the spec requires) over the exact ``uri`` sent (path and query string) and the
   canonical JSON body.
4. It goes through a Twisted ``Agent`` whose endpoint factory connects via the
   :class:`~federation.transport.connect.CheckedConnector` (every resolved address checked against
   the deny list, TLS verified). Request URIs use the private scheme ``matrix-federation://`` with the
   destination hex-encoded as host, so pooled connections are keyed by destination (one TLS identity
   per destination) and never by IP.
5. The whole exchange (resolution, connect, send, read) is bounded by ``request_timeout_s`` (or the
   call's ``timeout_s``) and the body by ``max_response_bytes``, aborting the connection at the limit.
6. A 2xx body must be a JSON object (strict decode: no NaN, no duplicate keys); anything else means
   no usable answer (:class:`~federation.interfaces.RemoteUnreachable`). A non-2xx answer raises
   :class:`~federation.interfaces.RemoteHttpError` with its JSON body (or ``{}``).
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

from twisted.internet import defer
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from federation.discovery import ServerNameResolver
from federation.interfaces import JsonDict, RemoteHttpError, RemoteUnreachable
from federation.transport.connect import (
    BytesProducer,
    CheckedConnector,
    CoroutineEndpoint,
    DestinationRefused,
    ResponseTooLarge,
    read_bounded_body,
    untyped,
)
from homeserver.config.federation import FederationConfig
from sc_proto.crypto.keys import SigningKey
from sc_proto.crypto.signing import sign_request
from sc_proto.errors import CanonicalJSONError, InvalidIdentifierError, LocalProtocolError
from sc_proto.identifiers import ServerName
from sc_proto.json import decode_json, encode_canonical_json

logger = logging.getLogger(__name__)

FEDERATION_SCHEME = b"matrix-federation"
"""The private URI scheme of pooled federation connections (never sent on the wire)."""
MAX_ERROR_BODY_BYTES = 64 * 1024
"""Most of a non-2xx body read to report its ``errcode``."""
MAX_PERSISTENT_PER_DESTINATION = 4
"""Idle keep-alive connections kept per destination."""


def build_uri(path: str, args: Mapping[str, Sequence[str]] | None) -> str:
    """The request target: ``path`` plus the percent-encoded query string (what is signed and sent).

    Raises:
        LocalProtocolError: ``path`` does not start with ``/``.
    """
    if not path.startswith("/"):
        raise LocalProtocolError(f"federation paths start with '/': {path!r}")
    if not args:
        return path
    pairs = [(key, value) for key, values in args.items() for value in values]
    return path + "?" + urlencode(pairs, quote_via=quote, safe="")


def _encode_destination(destination: str) -> bytes:
    return binascii.hexlify(destination.encode("utf-8"))


def _decode_destination(host: bytes) -> str:
    return binascii.unhexlify(host).decode("utf-8")


@implementer(IAgentEndpointFactory)
class _FederationEndpointFactory:
    def __init__(self, client: FederationClient) -> None:
        self._client = client

    def endpointForURI(self, uri: URI) -> CoroutineEndpoint:  # Twisted's interface name
        if uri.scheme != FEDERATION_SCHEME:
            raise LocalProtocolError("the federation agent only serves matrix-federation:// URIs")
        destination = _decode_destination(uri.host)
        return CoroutineEndpoint(lambda factory: self._client.connect_to(destination, factory))


class FederationClient:
    """Signed requests to other servers (:class:`~federation.interfaces.FederationHttp`).

    Args:
        reactor: the reactor (timeouts and connections).
        server_name: our server name (``origin`` of every signature).
        signing_key: our signing key.
        config: the ``federation:`` section.
        resolver: server-name resolution.
        connector: the checked connector (address policy, TLS).
        user_agent: the ``User-Agent`` header.
    """

    def __init__(
        self,
        reactor: Any,
        server_name: str,
        signing_key: SigningKey,
        config: FederationConfig,
        resolver: ServerNameResolver,
        connector: CheckedConnector,
        *,
        user_agent: str = "SecureConnect",
    ) -> None:
        self._reactor = reactor
        self.server_name = server_name
        self._signing_key = signing_key
        self._config = config
        self._resolver = resolver
        self._connector = connector
        self._user_agent = user_agent.encode("ascii", "replace")
        self._whitelist = None if config.domain_whitelist is None else frozenset(config.domain_whitelist)
        pool = untyped(HTTPConnectionPool)(reactor, persistent=True)
        pool.maxPersistentPerHost = MAX_PERSISTENT_PER_DESTINATION
        pool.cachedConnectionTimeout = 120
        self._pool = pool
        self._agent = untyped(Agent).usingEndpointFactory(reactor, _FederationEndpointFactory(self), pool=pool)

    # ------------------------------------------------------------------ FederationHttp

    async def get_json(
        self,
        destination: str,
        path: str,
        args: Mapping[str, Sequence[str]] | None = None,
        *,
        signed: bool = True,
        timeout_s: float | None = None,
    ) -> JsonDict:
        """GET; see :class:`~federation.interfaces.FederationHttp`."""
        return await self.request("GET", destination, path, args, None, signed=signed, timeout_s=timeout_s)

    async def put_json(
        self, destination: str, path: str, content: JsonDict, *, timeout_s: float | None = None
    ) -> JsonDict:
        """PUT with a signed JSON body."""
        return await self.request("PUT", destination, path, None, content, signed=True, timeout_s=timeout_s)

    async def post_json(
        self,
        destination: str,
        path: str,
        content: JsonDict,
        args: Mapping[str, Sequence[str]] | None = None,
        *,
        signed: bool = True,
        timeout_s: float | None = None,
    ) -> JsonDict:
        """POST with a JSON body."""
        return await self.request("POST", destination, path, args, content, signed=signed, timeout_s=timeout_s)

    # ------------------------------------------------------------------ the request

    def check_destination(self, destination: str) -> str:
        """The destination as a canonical server name, if we may contact it.

        Raises:
            DestinationRefused: malformed, or outside ``domain_whitelist``.
        """
        try:
            name = str(ServerName.parse(destination))
        except InvalidIdentifierError:
            raise DestinationRefused(str(destination)[:255], "not a valid server name") from None
        if self._whitelist is not None and name not in self._whitelist:
            raise DestinationRefused(name, "not in federation.domain_whitelist")
        return name

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        args: Mapping[str, Sequence[str]] | None,
        content: JsonDict | None,
        *,
        signed: bool,
        timeout_s: float | None,
    ) -> JsonDict:
        """Sends one request and returns the JSON object answered.

        Raises:
            RemoteHttpError: a non-2xx answer.
            RemoteUnreachable: no usable answer (refused, unresolvable, unreachable, TLS failure,
                timeout, too large, not a JSON object).
            LocalProtocolError: ``path`` is not absolute or ``content`` not canonical JSON (our bug).
        """
        destination = self.check_destination(destination)
        uri = build_uri(path, args)
        try:
            body = None if content is None else encode_canonical_json(content)
        except CanonicalJSONError as error:
            raise LocalProtocolError(f"request content is not canonical JSON: {error.message}") from None
        limit = timeout_s if timeout_s is not None else float(self._config.request_timeout_s)
        deferred = defer.Deferred.fromCoroutine(self._exchange(method, destination, uri, content, body, signed))
        timed_out = []

        def on_timeout() -> None:
            # Cancelling aborts the connection; what surfaces then (CancelledError,
            # ResponseNeverReceived...) depends on the stage, so the flag says why.
            timed_out.append(True)
            deferred.cancel()

        timer = self._reactor.callLater(limit, on_timeout)
        try:
            status, response_body = await deferred
        except Exception as error:
            if timed_out:
                raise RemoteUnreachable(destination, f"no complete answer within {limit:g}s") from None
            self._raise_unreachable(destination, error)
        finally:
            if timer.active():
                timer.cancel()
        return self._parse_answer(destination, status, response_body)

    @staticmethod
    def _raise_unreachable(destination: str, error: Exception) -> NoReturn:
        """Maps a failed exchange to the interface's errors."""
        if isinstance(error, (RemoteUnreachable, LocalProtocolError)):
            raise error
        if isinstance(error, ResponseTooLarge):
            raise RemoteUnreachable(destination, "response larger than federation.max_response_bytes") from None
        if isinstance(error, InvalidIdentifierError):
            raise DestinationRefused(destination, "not a valid server name") from None
        if isinstance(error, (ConnectError, DNSLookupError)):
            raise RemoteUnreachable(destination, f"connection failed: {type(error).__name__}") from None
        # ResponseFailed, ResponseNeverReceived (TLS verification failures land here), ...
        raise RemoteUnreachable(destination, f"request failed: {type(error).__name__}") from None

    def _parse_answer(self, destination: str, status: int, body: bytes) -> JsonDict:
        parsed: Any = None
        try:
            parsed = decode_json(body, strict_integers=False)
        except CanonicalJSONError:
            parsed = None
        if 200 <= status < 300:
            if not isinstance(parsed, dict):
                raise RemoteUnreachable(destination, "answer is not a JSON object")
            return parsed
        raise RemoteHttpError(destination, status, parsed if isinstance(parsed, dict) else {})

    async def _exchange(
        self, method: str, destination: str, uri: str, content: JsonDict | None, body: bytes | None, signed: bool
    ) -> tuple[int, bytes]:
        resolved = await self._resolver.resolve(destination)
        headers = Headers()
        headers.addRawHeader(b"Host", resolved.host_header.encode("ascii"))
        headers.addRawHeader(b"User-Agent", self._user_agent)
        if body is not None:
            headers.addRawHeader(b"Content-Type", b"application/json")
        if signed:
            authorization = sign_request(
                method=method, uri=uri, origin=self.server_name, destination=destination,
                content=content, signing_key=self._signing_key,
            )
            headers.addRawHeader(b"Authorization", authorization.encode("utf-8"))
        target = FEDERATION_SCHEME + b"://" + _encode_destination(destination) + uri.encode("utf-8")
        producer = None if body is None else BytesProducer(body)
        response = await self._agent.request(method.encode("ascii"), target, headers, producer)
        status = int(response.code)
        limit = self._config.max_response_bytes if 200 <= status < 300 else MAX_ERROR_BODY_BYTES
        try:
            data = await read_bounded_body(response, limit)
        except ResponseTooLarge:
            if 200 <= status < 300:
                raise
            data = b""
        return status, data

    async def connect_to(self, destination: str, protocol_factory: Any) -> Any:
        """Opens a connection to ``destination`` (resolution, address policy, TLS); the agent's hook."""
        resolved = await self._resolver.resolve(destination)
        return await self._connector.connect(
            destination, resolved.endpoints, resolved.tls_name, resolved.sni, protocol_factory
        )

    async def close(self) -> None:
        """Closes pooled connections (at shutdown)."""
        await self._pool.closeCachedConnections()
