"""The Twisted ``Site`` and ``Request`` used by every HTTP listener.

:class:`SCRequest` adds what Twisted's request lacks:

* a request-body limit enforced *while receiving*: a ``Content-Length`` above the limit, or a
  chunked body that grows past it, is answered at once with 413 ``M_TOO_LARGE`` and the connection
  is closed without buffering the rest;
* the client IP, taken from ``X-Forwarded-For`` only when the site is configured to trust a proxy;
* a request id (also used by :mod:`homeserver.http.server` for logging) and the authenticated
  user, for the access log.

:class:`SCHTTPChannel` answers requests too large to parse with a Matrix error body instead of
Twisted's bare 400 or a dropped connection: 414 ``M_TOO_LARGE`` for a request line (method, path and
query) over :data:`MAX_REQUEST_LINE_BYTES`, 431 ``M_TOO_LARGE`` for headers over
:data:`MAX_HEADER_BYTES` in all, 400 ``M_UNKNOWN`` for anything else Twisted cannot parse. After the
answer it half-closes and discards (bounded) what the client still sends, so the client reads the
answer rather than a reset.

The access log never contains query strings (they may hold an ``access_token``).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, interfaces
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from homeserver.http.cors import CORS_HEADERS
from sc_proto.errors import Codes

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("homeserver.http.access")

BodyLimitLookup = Callable[[bytes, bytes], int | None]
"""``(method, path) -> limit``: a route's own body limit, or None for the site default."""

_request_ids = itertools.count(1)
_MAX_USER_AGENT = 512

MAX_REQUEST_LINE_BYTES = 16 * 1024
"""Longest request line (``GET /path?query HTTP/1.1``) accepted; longer ones get 414."""
MAX_HEADER_BYTES = 64 * 1024
"""Most bytes of request line plus headers accepted; more gets 431 (a header line alone may be this long)."""
_MAX_DISCARD_BYTES = 1024 * 1024
"""After answering an unparseable request, how much more input is read and dropped before aborting."""


class ReactorTime(Protocol):
    """The reactor features the site needs (``IReactorTime``, structurally typed)."""

    def seconds(self) -> float:
        """Returns the current time in seconds."""
        ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Schedules a call (Twisted's name)."""
        ...


def _untyped(obj: object) -> Any:
    """Returns ``obj`` as Any: many Twisted web methods are unannotated, so calls go through this."""
    return obj


class SCRequest(Request):
    """A request that enforces the body limit while receiving and knows its client IP.

    Attributes:
        request_id: unique id of this request within the process, for logs.
        authenticated_entity: the user ID once the request is authenticated, for the access log.
        start_time: reactor time when the request object was created.
    """

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        _untyped(super()).__init__(channel, *args, **kwargs)
        site = channel.site
        if not isinstance(site, SCSite):
            raise TypeError("SCRequest needs an SCSite")
        self._sc_site: SCSite = site
        self.request_id = f"{site.site_tag}-{next(_request_ids)}"
        self.authenticated_entity: str | None = None
        self.start_time = site.seconds()
        self._body_limit = site.max_request_body_size
        self._body_received = 0
        self.body_rejected = False

    # ------------------------------------------------------------------ body limit

    def gotLength(self, length: int | None) -> None:
        """Called by the channel once the headers are in; rejects a too-large declared body."""
        method = getattr(self.channel, "_command", b"") or b""
        path = getattr(self.channel, "_path", b"") or b""
        self._body_limit = self._sc_site.body_limit_for(method, path)
        if length is not None and length > self._body_limit:
            _untyped(super()).gotLength(0)
            self._reject_too_large()
            return
        _untyped(super()).gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        """Stores a chunk of the body, or rejects the request once it exceeds the limit."""
        if self.body_rejected:
            return
        self._body_received += len(data)
        if self._body_received > self._body_limit:
            self._reject_too_large()
            return
        _untyped(super()).handleContentChunk(data)

    def write(self, data: bytes) -> None:
        """Writes response data; replaces Twisted's version-revealing ``Server`` header first."""
        if not self.startedWriting:
            self.responseHeaders.setRawHeaders(b"Server", [self._sc_site.server_header])
        _untyped(super()).write(data)

    def process(self) -> None:
        """Dispatches the request, unless it was already answered with 413."""
        if self.body_rejected:
            return
        _untyped(super()).process()

    def _reject_too_large(self) -> None:
        """Answers 413 directly on the transport and closes the connection.

        The request has not been fully received, so the normal ``Request.write`` path (which
        needs the parsed request line and a finished body) cannot be used; Twisted itself answers
        malformed requests the same way.
        """
        self.body_rejected = True
        # Twisted would otherwise send "100 Continue" after our response.
        self.requestHeaders.removeHeader(b"Expect")
        body = json.dumps(
            {"errcode": Codes.TOO_LARGE.value, "error": "Request body too large"}
        ).encode("utf-8")
        lines = [
            b"HTTP/1.1 413 Request Entity Too Large",
            b"Content-Type: application/json",
            b"Content-Length: %d" % (len(body),),
            b"Connection: close",
            b"Cache-Control: no-cache, no-store, must-revalidate",
        ]
        lines.extend(name + b": " + value for name, value in CORS_HEADERS)
        channel: Any = self.channel
        if channel is not None and channel.transport is not None:
            channel.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            channel.loseConnection()
        access_logger.info(
            "%s - %s - %s %s 413 body exceeds %d bytes",
            self.get_client_ip(),
            self.request_id,
            (getattr(self.channel, "_command", b"") or b"").decode("latin-1"),
            _strip_query(getattr(self.channel, "_path", b"") or b""),
            self._body_limit,
        )

    # ------------------------------------------------------------------ client identity

    def get_client_ip(self) -> str:
        """Returns the client's IP address.

        With ``trust_x_forwarded_for`` the *last* ``X-Forwarded-For`` entry is used: it is the one
        our trusted proxy appended, while earlier entries come from the client and can be forged.
        """
        if self._sc_site.trust_x_forwarded_for:
            values = self.requestHeaders.getRawHeaders(b"X-Forwarded-For")
            if values:
                last = b",".join(values).split(b",")[-1].strip()
                if last:
                    return last.decode("ascii", errors="replace")
        address = _untyped(self).getClientAddress()
        host = getattr(address, "host", None)
        return host if isinstance(host, str) else "-"

    def get_user_agent(self) -> str:
        """Returns the ``User-Agent`` header (decoded leniently, truncated), or ``""``."""
        value = self.getHeader(b"User-Agent")
        if value is None:
            return ""
        text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
        return text[:_MAX_USER_AGENT]


def _error_response(status: int, reason: bytes, errcode: str, message: str) -> bytes:
    body = json.dumps({"errcode": errcode, "error": message}).encode("utf-8")
    lines = [
        b"HTTP/1.1 %d %s" % (status, reason),
        b"Content-Type: application/json",
        b"Content-Length: %d" % (len(body),),
        b"Connection: close",
        b"Cache-Control: no-cache, no-store, must-revalidate",
    ]
    lines.extend(name + b": " + value for name, value in CORS_HEADERS)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class SCHTTPChannel(http.HTTPChannel):
    """An HTTP channel whose parse failures get a Matrix error response (see the module docstring)."""

    MAX_LENGTH = MAX_HEADER_BYTES
    totalHeadersSize = MAX_HEADER_BYTES

    def __init__(self) -> None:
        _untyped(super()).__init__()
        self._sc_answered = False
        self._sc_discarded = 0

    def _in_request_line(self) -> bool:
        # Twisted keeps "still reading the request line" in a name-mangled private flag; before the
        # first request object exists we are in the request line too.
        return bool(getattr(self, "_HTTPChannel__first_line", 1)) or not self.requests

    def lineReceived(self, line: bytes) -> None:
        """Refuses an overlong request line with 414 before Twisted parses it."""
        if self._in_request_line() and len(line) > MAX_REQUEST_LINE_BYTES:
            self._answer_and_close(414, b"URI Too Long", "Request line too long")
            return
        _untyped(super()).lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line longer than ``MAX_LENGTH`` (Twisted would drop the connection silently)."""
        if self._in_request_line():
            self._answer_and_close(414, b"URI Too Long", "Request line too long")
        else:
            self._answer_and_close(431, b"Request Header Fields Too Large", "Request headers too large")

    def _respondToBadRequestAndDisconnect(self) -> None:  # Twisted's hook for every parse failure
        if self._receivedHeaderSize > self.totalHeadersSize:
            if self._in_request_line():
                self._answer_and_close(414, b"URI Too Long", "Request line too long")
            else:
                self._answer_and_close(431, b"Request Header Fields Too Large", "Request headers too large")
            return
        self._answer_and_close(400, b"Bad Request", "Malformed HTTP request")

    def _answer_and_close(self, status: int, reason: bytes, message: str) -> None:
        transport: Any = self.transport
        if self._sc_answered or transport is None:
            return
        self._sc_answered = True
        errcode = Codes.UNKNOWN.value if status == 400 else Codes.TOO_LARGE.value
        transport.write(_error_response(status, reason, errcode, message))
        logger.info("refused an unparseable request with %d: %s", status, message)
        # Stop parsing; read and drop what the client still sends (bounded), so closing does not
        # reset the connection before the client has read the answer.
        self.dataReceived = self._discard  # type: ignore[method-assign]  # replace the parser
        self.lineReceived = lambda line: None  # type: ignore[method-assign]  # no more lines
        if interfaces.IHalfCloseableDescriptor.providedBy(transport):
            transport.loseWriteConnection()
        else:
            _untyped(self).loseConnection()

    def _discard(self, data: bytes) -> None:
        self._sc_discarded += len(data)
        _untyped(self).resetTimeout()
        transport: Any = self.transport
        if self._sc_discarded > _MAX_DISCARD_BYTES and transport is not None:
            transport.abortConnection()

    def readConnectionLost(self) -> None:
        """The client finished sending after our error answer: close fully."""
        transport: Any = self.transport
        if self._sc_answered and transport is not None:
            transport.loseConnection()
            return
        _untyped(super()).readConnectionLost()


def _sc_channel_factory(site: Any) -> Any:
    """Twisted's generic HTTP protocol (HTTP/1.1 or negotiated HTTP/2) over our channel."""
    return http._GenericHTTPChannelProtocol(SCHTTPChannel())


class SCSite(Site):
    """A ``Site`` building :class:`SCRequest`s, with a body limit and an access log.

    Args:
        resource: the root resource.
        reactor: the reactor (also used for channel timeouts).
        max_request_body_size: default request-body limit in bytes.
        body_limit_lookup: per-route limits, ``(method, path) -> limit | None``. Defaults to the
            resource's ``max_body_size_for`` method when it has one.
        trust_x_forwarded_for: take the client IP from ``X-Forwarded-For`` (only behind a proxy).
        site_tag: a label used in request ids and logs.
        server_header: value of the ``Server`` response header.
        timeout: idle timeout of connections, in seconds.
    """

    protocol = _sc_channel_factory

    def __init__(
        self,
        resource: Resource,
        reactor: ReactorTime,
        max_request_body_size: int,
        *,
        body_limit_lookup: BodyLimitLookup | None = None,
        trust_x_forwarded_for: bool = False,
        site_tag: str = "http",
        server_header: bytes = b"SecureConnect",
        timeout: float = 60,
    ) -> None:
        if max_request_body_size < 0:
            raise ValueError("max_request_body_size must be >= 0")
        _untyped(super()).__init__(
            resource,
            requestFactory=SCRequest,
            reactor=reactor,
            timeout=timeout,
            parsePOSTFormSubmission=False,
        )
        self._time_source: ReactorTime = reactor
        # Never render Twisted's HTML tracebacks (only reachable outside JsonResource).
        self.displayTracebacks = False
        self.max_request_body_size = max_request_body_size
        self.trust_x_forwarded_for = trust_x_forwarded_for
        self.site_tag = site_tag
        self.server_header = server_header
        if body_limit_lookup is None:
            body_limit_lookup = getattr(resource, "max_body_size_for", None)
        self._body_limit_lookup = body_limit_lookup
        self._connections: set[Any] = set()
        self._all_closed: list[defer.Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        """Builds the connection's protocol and tracks it until it closes (for graceful shutdown)."""
        protocol = _untyped(super()).buildProtocol(addr)
        if protocol is None:
            return None
        self._connections.add(protocol)
        original_lost = protocol.connectionLost

        def connection_lost(reason: Any) -> None:
            try:
                original_lost(reason)
            finally:
                self._connections.discard(protocol)
                if not self._connections:
                    waiters, self._all_closed = self._all_closed, []
                    for waiter in waiters:
                        waiter.callback(None)

        protocol.connectionLost = connection_lost
        return protocol

    @property
    def open_connections(self) -> int:
        """Connections currently open (for metrics and tests)."""
        return len(self._connections)

    def close_connections(self) -> defer.Deferred[None]:
        """Closes every connection after its pending response bytes are sent; fires when all are closed.

        ``loseConnection`` flushes what the transport still has to write before closing, so a response
        that finished just before shutdown still reaches its client.
        """
        if not self._connections:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._all_closed.append(waiter)
        for protocol in list(self._connections):
            # Twisted wraps the HTTPChannel in a protocol proxy; the transport sits on the channel.
            channel = getattr(protocol, "_channel", protocol)
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.loseConnection()
        return waiter

    def seconds(self) -> float:
        """Returns the reactor's current time in seconds."""
        return self._time_source.seconds()

    def body_limit_for(self, method: bytes, path: bytes) -> int:
        """Returns the body limit for a request: the route's own, else the site default."""
        if self._body_limit_lookup is not None:
            try:
                limit = self._body_limit_lookup(method, path)
            except Exception:
                logger.exception("body limit lookup failed; using the site default")
                limit = None
            if limit is not None:
                return limit
        return self.max_request_body_size

    def log(self, request: http.Request) -> None:
        """Writes an access-log line for a finished request (path without query string)."""
        if isinstance(request, SCRequest):
            ip, request_id, user = request.get_client_ip(), request.request_id, request.authenticated_entity
            elapsed = self.seconds() - request.start_time
            agent = request.get_user_agent()
        else:
            ip, request_id, user, elapsed, agent = "-", "-", None, 0.0, ""
        access_logger.info(
            '%s - %s - %s %s %s %d %dB %.3fs "%s"',
            ip,
            request_id,
            user or "-",
            (request.method or b"").decode("latin-1"),
            _strip_query(request.uri or b""),
            request.code,
            request.sentLength,
            elapsed,
            agent,
        )


def user_agent_of(request: Request) -> str:
    """Returns the ``User-Agent`` of any request (:meth:`SCRequest.get_user_agent` when available)."""
    if isinstance(request, SCRequest):
        return request.get_user_agent()
    value = request.getHeader(b"User-Agent")
    if value is None:
        return ""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:_MAX_USER_AGENT]


def client_ip_of(request: Request) -> str:
    """Returns the client IP of any request (:meth:`SCRequest.get_client_ip` when available)."""
    if isinstance(request, SCRequest):
        return request.get_client_ip()
    host = getattr(_untyped(request).getClientAddress(), "host", None)
    return host if isinstance(host, str) else "-"


def _strip_query(uri: bytes) -> str:
    return uri.split(b"?", 1)[0].decode("latin-1")
