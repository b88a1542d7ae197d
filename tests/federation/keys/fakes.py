"""In-memory federation for the server-key tests: a router, an HTTP client routing to routers, servers.

* :class:`FakeRouter` implements ``FederationRouter``: it records registrations and dispatches a
  request to the handler, rendering ``MatrixError`` as its status and JSON (anything else propagates,
  so a servlet that would answer 500 fails the test).
* :class:`FakeFederationHttp` implements ``FederationHttp`` over a map of destination -> router; a
  destination can be "down" (``RemoteUnreachable``), and ``hold()`` makes requests wait on Deferreds
  the test fires (for coalescing tests).
* :class:`FakeOrigin` is a remote server publishing ``/_matrix/key/v2/server`` from its own keys.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import defer, task

from federation.interfaces import (
    FederationHandler,
    FederationRequest,
    JsonDict,
    RemoteHttpError,
    RemoteUnreachable,
)
from federation.local_keys import LocalKeys
from homeserver.util.clock import Clock
from sc_proto.crypto.keys import SigningKey, VerifyKey, generate_signing_key, get_verify_key
from sc_proto.errors import Codes, MatrixError

NOW_S = 1_700_000_000
NOW_MS = NOW_S * 1000
HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


def make_clock() -> tuple[task.Clock, Clock]:
    """A fake reactor clock set to :data:`NOW_S` and the ``Clock`` over it."""
    reactor = task.Clock()
    reactor.advance(NOW_S)
    return reactor, Clock(reactor)


class FakeRouter:
    """Records registrations; :meth:`dispatch` calls the matching handler."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, str, re.Pattern[str], FederationHandler, bool]] = []

    def register(
        self, method: str, pattern: str, handler: FederationHandler, *, authenticated: bool = True
    ) -> None:
        regex = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern)) + "$")
        self.routes.append((method, pattern, regex, handler, authenticated))

    def patterns(self) -> set[tuple[str, str, bool]]:
        """(method, pattern, authenticated) of every route."""
        return {(m, p, a) for m, p, _, _, a in self.routes}

    async def dispatch(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Sequence[str]] | None = None,
        content: JsonDict | None = None,
    ) -> tuple[int, JsonDict]:
        for route_method, _pattern, regex, handler, _auth in self.routes:
            match = regex.match(path)
            if match is None or route_method != method:
                continue
            args = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            request = FederationRequest(None, method, args, dict(query or {}), content)
            try:
                return await handler(request)
            except MatrixError as e:
                return e.http_status, e.to_json()
        return 404, {"errcode": Codes.UNRECOGNIZED.value, "error": "no route"}


class FakeFederationHttp:
    """``FederationHttp`` over in-memory routers (responses go through a JSON round trip)."""

    def __init__(self) -> None:
        self.routers: dict[str, FakeRouter] = {}
        self.down: set[str] = set()
        self.requests: list[tuple[str, str, str, bool, JsonDict | None]] = []
        self.gate: list[defer.Deferred[None]] | None = None

    def hold(self) -> list[defer.Deferred[None]]:
        """From now on each request waits on a Deferred appended to the returned list."""
        self.gate = []
        return self.gate

    def release(self) -> None:
        """Fires every held request and stops holding."""
        gate, self.gate = self.gate or [], None
        for d in gate:
            d.callback(None)

    def count(self, destination: str, path_prefix: str = "/") -> int:
        """Requests sent to ``destination`` whose path starts with ``path_prefix``."""
        return sum(
            1
            for _m, dest, path, _s, _c in self.requests
            if dest == destination and path.startswith(path_prefix)
        )

    async def _call(
        self,
        method: str,
        destination: str,
        path: str,
        args: Mapping[str, Sequence[str]] | None,
        content: JsonDict | None,
        signed: bool,
    ) -> JsonDict:
        self.requests.append((method, destination, path, signed, content))
        if self.gate is not None:
            waiter: defer.Deferred[None] = defer.Deferred()
            self.gate.append(waiter)
            await waiter
        router = self.routers.get(destination)
        if router is None or destination in self.down:
            raise RemoteUnreachable(destination, "connection refused")
        body = json.loads(json.dumps(content)) if content is not None else None
        status, answer = await router.dispatch(method, path, query=args, content=body)
        if status != 200:
            raise RemoteHttpError(destination, status, answer)
        result: JsonDict = json.loads(json.dumps(answer))
        return result

    async def get_json(
        self,
        destination: str,
        path: str,
        args: Mapping[str, Sequence[str]] | None = None,
        *,
        signed: bool = True,
        timeout_s: float | None = None,
    ) -> JsonDict:
        return await self._call("GET", destination, path, args, None, signed)

    async def put_json(
        self, destination: str, path: str, content: JsonDict, *, timeout_s: float | None = None
    ) -> JsonDict:
        return await self._call("PUT", destination, path, None, content, True)

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
        return await self._call("POST", destination, path, args, content, signed)


class FakeOrigin:
    """A remote server that publishes its keys at ``/_matrix/key/v2/server``.

    Attributes:
        tamper: applied to each response before it is sent (forgeries, wrong names...).
    """

    def __init__(
        self,
        name: str,
        http: FakeFederationHttp,
        clock: Clock,
        *,
        version: str = "k1",
        validity_ms: int = DAY_MS,
    ) -> None:
        self.name = name
        self.clock = clock
        self.validity_ms = validity_ms
        self.signing_key: SigningKey = generate_signing_key(version)
        self.old: dict[str, tuple[VerifyKey, int]] = {}
        self.tamper: Callable[[JsonDict], JsonDict] = lambda r: r
        self.router = FakeRouter()
        self.router.register("GET", "/_matrix/key/v2/server", self._on_server_keys, authenticated=False)
        http.routers[name] = self.router

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.signing_key.version}"

    @property
    def local(self) -> LocalKeys:
        return LocalKeys(self.name, self.signing_key, dict(self.old))

    def rotate(self, version: str) -> SigningKey:
        """Retires the current key now and starts signing with a new one; returns the old key."""
        old = self.signing_key
        self.old[self.key_id] = (get_verify_key(old), self.clock.time_msec())
        self.signing_key = generate_signing_key(version)
        return old

    async def _on_server_keys(self, request: FederationRequest) -> tuple[int, JsonDict]:
        return 200, self.tamper(self.local.server_keys_response(self.clock.time_msec(), self.validity_ms))


def any_json(value: Any) -> Any:
    """A JSON round trip (what a peer would see)."""
    return json.loads(json.dumps(value))
