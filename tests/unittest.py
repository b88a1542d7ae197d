"""Unit-test harness: drive the real Site/Request code over a fake transport on a fake clock.

Requests are serialised to raw HTTP/1.1 bytes and fed to a real ``HTTPChannel`` built by the
:class:`~homeserver.http.site.SCSite`, connected to a ``StringTransport``; the response is parsed
back from the bytes the channel wrote. So routing, body limits, headers and error rendering run
exactly as in production, with no sockets and no real time: the reactor is a
``MemoryReactorClock`` advanced by :meth:`HomeserverTestCase.pump`.

Contract (DESIGN.md 2.12): subclasses override :meth:`HomeserverTestCase.make_homeserver`,
:meth:`HomeserverTestCase.create_resource` / :meth:`HomeserverTestCase.register_servlets` and
:meth:`HomeserverTestCase.prepare`; tests call ``make_request``, ``pump``, ``get_success`` and
``get_failure``; ``@override_config({...})`` merges into :meth:`default_config` for one test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from twisted.internet import testing
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python import failure
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from homeserver.http.server import JsonResource
from homeserver.http.site import SCSite

# Twisted's test helpers are unannotated; reach them through Any so strict mypy settings pass.
_testing: Any = testing
_failure: Any = failure
MemoryReactorClock = testing.MemoryReactorClock

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MAX_BODY = 1024 * 1024


class TimedOutError(AssertionError):
    """A request did not complete within the allowed (fake) time."""


class FakeChannel:
    """One request on its own fake connection, and the parsed response.

    Attributes:
        transport: the fake transport the server wrote to.
        request: the server-side request object (None if the request line was not parsed).
    """

    def __init__(self, reactor: MemoryReactorClock, site: Site, client_ip: str, method: str = "GET") -> None:
        self._reactor = reactor
        self._method = method.upper()
        self.transport: Any = _testing.StringTransport(peerAddress=IPv4Address("TCP", client_ip, 31337))
        protocol = _untyped(site).buildProtocol(IPv4Address("TCP", client_ip, 31337))
        if protocol is None:
            raise RuntimeError("site refused to build a protocol")
        self.http_channel: Any = protocol
        self.http_channel.makeConnection(self.transport)
        # The real HTTPChannel behind Twisted's protocol-negotiation wrapper.
        self._inner: Any = getattr(protocol, "_channel", protocol)
        self.request: Any = None
        self._parsed: dict[str, Any] | None = None

    def feed(self, data: bytes) -> None:
        """Delivers bytes from the client to the server.

        The request line is delivered first on its own so the server-side request object can be
        captured before a synchronous handler finishes (and the channel forgets it).
        """
        if self.request is None:
            first, sep, data = data.partition(b"\r\n")
            self.http_channel.dataReceived(first + sep)
            requests = getattr(self._inner, "requests", None)
            if requests:
                self.request = requests[-1]
        if data:
            self.http_channel.dataReceived(data)

    def disconnect(self) -> None:
        """Simulates the client closing the connection."""
        from twisted.internet.error import ConnectionDone

        self.http_channel.connectionLost(_failure.Failure(ConnectionDone("client went away")))

    def is_finished(self) -> bool:
        """Returns whether a complete response has been written."""
        return self._parse() is not None

    def _parse(self) -> dict[str, Any] | None:
        if self._parsed is not None:
            return self._parsed
        data: bytes = self.transport.value()
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return None
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        headers = Headers()
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.addRawHeader(name.strip(), value.strip())
        code = int(status[1])
        if self._method == "HEAD" or code in (204, 304) or 100 <= code < 200:
            body: bytes | None = b""
        else:
            body = _read_body(headers, rest, self.transport.disconnecting)
        if body is None:
            return None
        self._parsed = {
            "version": status[0],
            "code": code,
            "reason": status[2] if len(status) > 2 else b"",
            "headers": headers,
            "body": body,
        }
        return self._parsed

    @property
    def result(self) -> dict[str, Any]:
        """The parsed response: ``code``, ``reason``, ``headers`` and ``body`` (bytes)."""
        parsed = self._parse()
        if parsed is None:
            raise AssertionError("no complete response yet")
        return parsed

    @property
    def code(self) -> int:
        """HTTP status code of the response."""
        return int(self.result["code"])

    @property
    def headers(self) -> Headers:
        """Response headers."""
        headers: Headers = self.result["headers"]
        return headers

    def header(self, name: str) -> str | None:
        """Returns the first value of a response header, decoded, or None."""
        values = self.headers.getRawHeaders(name.encode("ascii"))
        return values[0].decode("latin-1") if values else None

    @property
    def text_body(self) -> str:
        """The response body as UTF-8 text."""
        body: bytes = self.result["body"]
        return body.decode("utf-8")

    @property
    def json_body(self) -> Any:
        """The response body decoded as JSON."""
        return json.loads(self.text_body)

    def await_result(self, timeout: float = 10.0) -> None:
        """Runs the fake reactor until the response is complete.

        Raises:
            TimedOutError: it did not complete within ``timeout`` fake seconds.
        """
        for _ in range(10):
            if self.is_finished():
                return
            self._reactor.advance(0)
        waited = 0.0
        while not self.is_finished():
            if waited >= timeout:
                raise TimedOutError(f"request did not complete within {timeout}s")
            self._reactor.advance(0.1)
            waited += 0.1


def _read_body(headers: Headers, rest: bytes, closed: bool) -> bytes | None:
    """Extracts the body from the bytes after the headers, or None if it is incomplete."""
    encoding = headers.getRawHeaders(b"Transfer-Encoding")
    if encoding and encoding[0].lower() == b"chunked":
        body = b""
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                return None
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return body
            if len(rest) < size + 2:
                return None
            body, rest = body + rest[:size], rest[size + 2 :]
    length = headers.getRawHeaders(b"Content-Length")
    if length:
        wanted = int(length[0])
        return rest[:wanted] if len(rest) >= wanted else None
    return rest if closed else None


def encode_content(content: Any) -> bytes:
    """Turns a test body (None, bytes, str or JSON value) into bytes."""
    if content is None:
        return b""
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode("utf-8")
    return json.dumps(content).encode("utf-8")


def make_request(
    reactor: MemoryReactorClock,
    site_or_resource: Site | Resource,
    method: str,
    path: str | bytes,
    content: Any = None,
    access_token: str | None = None,
    headers: Iterable[tuple[str | bytes, str | bytes]] | None = None,
    *,
    client_ip: str = "127.0.0.1",
    chunked: bool = False,
    content_length: int | None = None,
    await_result: bool = True,
) -> FakeChannel:
    """Sends one request through a real HTTP channel and (by default) waits for the response.

    Args:
        reactor: the fake reactor.
        site_or_resource: a Site, or a resource to wrap in an :class:`SCSite`.
        method: HTTP method.
        path: path and query string, already percent-encoded.
        content: body: None, bytes, str, or a JSON value (encoded with ``json.dumps``).
        access_token: sent as ``Authorization: Bearer``.
        headers: extra request headers.
        client_ip: the peer address of the fake connection.
        chunked: send the body with ``Transfer-Encoding: chunked`` (in 1 KiB chunks).
        content_length: declare this ``Content-Length`` instead of the body's real length.
        await_result: pump the reactor until the response is complete.

    Returns:
        The channel holding the response.
    """
    site = site_or_resource if isinstance(site_or_resource, Site) else SCSite(
        site_or_resource, reactor, DEFAULT_MAX_BODY
    )
    body = encode_content(content)
    raw_path = path.encode("utf-8") if isinstance(path, str) else path
    lines = [method.encode("ascii") + b" " + raw_path + b" HTTP/1.1", b"Host: test"]
    if access_token is not None:
        lines.append(b"Authorization: Bearer " + access_token.encode("ascii"))
    for name, value in headers or ():
        lines.append(_b(name) + b": " + _b(value))
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
        payload = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 1024]), body[i : i + 1024]) for i in range(0, len(body), 1024)
        )
        payload += b"0\r\n\r\n"
    else:
        lines.append(b"Content-Length: %d" % (len(body) if content_length is None else content_length,))
        payload = body
    channel = FakeChannel(reactor, site, client_ip, method)
    channel.feed(b"\r\n".join(lines) + b"\r\n\r\n" + payload)
    if await_result:
        channel.await_result()
    return channel


def _untyped(obj: object) -> Any:
    return obj


def _b(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def override_config(extra: Mapping[str, Any]) -> Callable[[F], F]:
    """Decorates a test method to merge ``extra`` into the harness config for that test."""

    def decorator(func: F) -> F:
        func._extra_config = dict(extra)  # type: ignore[attr-defined]  # marker read by setUp
        return func

    return decorator


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _FallbackClock:
    """Minimal clock over the fake reactor, used until ``homeserver.util.clock`` exists."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self._reactor = reactor

    def time(self) -> float:
        return self._reactor.seconds()

    def time_msec(self) -> int:
        return int(self._reactor.seconds() * 1000)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._reactor.callLater(delay, callback, *args, **kwargs)


class HomeserverTestCase(SynchronousTestCase):
    """Base class for homeserver unit tests: fake reactor, fake clock, in-process requests.

    Attributes:
        reactor: the ``MemoryReactorClock``.
        clock: a clock over it (``time()``, ``time_msec()``, ``call_later(...)``).
        config: :meth:`default_config` merged with any ``@override_config``.
        hs: whatever :meth:`make_homeserver` returned.
        resource: the root resource requests are sent to.
        site: the :class:`SCSite` wrapping it.
    """

    max_request_body_size = DEFAULT_MAX_BODY

    def setUp(self) -> None:
        self.reactor: Any = _testing.MemoryReactorClock()
        # Start at a realistic epoch so time_msec() looks like a real timestamp.
        self.reactor.advance(1_700_000_000)
        self.clock = self.make_clock(self.reactor)
        config = self.default_config()
        method = getattr(self, self._testMethodName, None)
        extra = getattr(method, "_extra_config", None)
        self.config = _deep_merge(config, extra) if extra else config
        self.hs = self.make_homeserver(self.reactor, self.clock)
        self.resource = self.create_resource()
        self.site = self.create_site()
        self.prepare(self.reactor, self.clock, self.hs)

    # ------------------------------------------------------------------ hooks

    def make_clock(self, reactor: MemoryReactorClock) -> Any:
        """Returns the clock; the project's ``Clock`` once it exists, else a minimal fallback."""
        try:
            from homeserver.util.clock import Clock  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            return _FallbackClock(reactor)
        return Clock(reactor)

    def default_config(self) -> dict[str, Any]:
        """Returns the base config dict for this test case."""
        return {"server_name": "test:8448"}

    def make_homeserver(self, reactor: MemoryReactorClock, clock: Any) -> Any:
        """Builds the object under test (the full homeserver once it is wired); None by default."""
        return None

    def create_resource(self) -> Resource:
        """Returns the root resource; by default a :class:`JsonResource` with our servlets."""
        resource = JsonResource("test")
        self.register_servlets(resource)
        return resource

    def register_servlets(self, resource: JsonResource) -> None:
        """Registers the servlets under test on ``resource``."""

    def create_site(self) -> SCSite:
        """Wraps :attr:`resource` in the site requests go through."""
        return SCSite(self.resource, self.reactor, self.max_request_body_size, site_tag="test")

    def prepare(self, reactor: MemoryReactorClock, clock: Any, homeserver: Any) -> None:
        """Per-test setup after the homeserver and site exist."""

    # ------------------------------------------------------------------ helpers

    def make_request(
        self,
        method: str,
        path: str | bytes,
        content: Any = None,
        access_token: str | None = None,
        headers: Iterable[tuple[str | bytes, str | bytes]] | None = None,
        **kwargs: Any,
    ) -> FakeChannel:
        """Sends a request to :attr:`site`; see :func:`make_request` for the arguments."""
        return make_request(
            self.reactor, self.site, method, path, content, access_token, headers, **kwargs
        )

    def pump(self, by: float = 0.0) -> None:
        """Advances the fake clock by ``by`` seconds in 100 steps, running due calls.

        The last step lands exactly on ``start + by`` so float noise never loses a millisecond.
        """
        target = self.reactor.seconds() + by
        for _ in range(99):
            self.reactor.advance(by / 100.0)
        self.reactor.advance(max(0.0, target - self.reactor.seconds()))

    def get_success(self, awaitable: Coroutine[Any, Any, T] | Deferred[T], by: float = 0.0) -> T:
        """Runs ``awaitable`` to completion on the fake reactor and returns its result."""
        deferred: Deferred[T] = ensureDeferred(awaitable)
        self.pump(by)
        return self.successResultOf(deferred)

    def get_failure(
        self, awaitable: Coroutine[Any, Any, Any] | Deferred[Any], exc_type: type[BaseException], by: float = 0.0
    ) -> Failure:
        """Runs ``awaitable`` and asserts it fails with ``exc_type``; returns the Failure."""
        deferred: Deferred[Any] = ensureDeferred(awaitable)
        self.pump(by)
        result: Failure = _untyped(self).failureResultOf(deferred, exc_type)
        return result
