"""Several real homeservers in one fake reactor, federated through an in-memory network.

Theory of operation: each :class:`FederatedServer` is a full homeserver built by the production
composition root (``build_homeserver`` with a :class:`~homeserver.app.federation_wiring.FederationWiring`),
with its own SQLite database, signing key and server name. Only the two network edges of the wiring
are replaced:

* :class:`InMemoryRouter` is the server's ``FederationRouter``: servlets register on it with the
  production path templates (``homeserver.http.server.compile_template``, as the real transport's
  ``JsonResource`` matches them), ``{name}`` segments are percent-decoded, and authenticated routes
  refuse a request without an origin (401), as the real transport refuses an unsigned one.
* :class:`InMemoryFederationHttp` is the server's ``FederationHttp``: a request is dispatched to the
  destination's router with the caller's server name as the authenticated origin (``signed=False``
  requests, i.e. key fetches, arrive with origin None). Bodies and answers go through a JSON round
  trip, so no object is shared between servers.

Everything between is production code: the real keyring fetches each server's keys from
``/_matrix/key/v2/server`` through the in-memory http; events leave through the real sender
(``PUT /send/{txnId}``) and enter through the real inbound processing; aliases resolve through the
real ``/query/directory``. The sender runs on the fake clock: :meth:`FederationTestCase.settle`
advances it (jumping to the queues' wake-ups) until every queue towards a reachable server is idle.

:class:`FederationNetwork` can take servers away (:meth:`FederationNetwork.take_down`: nothing
reaches them and they reach nothing) and partition pairs of servers; it records every request and
every PDU a destination refused in its ``/send`` answer (``pdu_failures``).

Use :class:`FederationTestCase`: ``self.a``, ``self.b`` (and ``self.c`` with three names) are the
servers; ``self.request(server, ...)`` sends a client request and settles the network.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import ensureDeferred

from federation.interfaces import (
    FederationHandler,
    FederationRequest,
    JsonDict,
    RemoteHttpError,
    RemoteUnreachable,
)
from federation.sender.service import FederationSenderService, SenderSettings
from homeserver.app.composition import Homeserver, build_homeserver
from homeserver.app.federation_wiring import FederationServices, FederationWiring
from homeserver.config.loader import parse_config
from homeserver.http.server import compile_template
from sc_proto.crypto.keys import SigningKey, generate_signing_key
from sc_proto.errors import MatrixError
from tests.homeserver.server_case import BASE_CONFIG, FullHomeserverTestCase, postgres_url_for_test
from tests.unittest import FakeChannel, make_request

logger = logging.getLogger(__name__)

SEND_PREFIX = "/_matrix/federation/v1/send/"


def _wire(value: Any) -> Any:
    """A JSON round trip: what crosses the network is never a shared object."""
    return None if value is None else json.loads(json.dumps(value))


class InMemoryRouter:
    """A server's inbound federation routes (a ``FederationRouter``), matched like the real transport."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, Any, FederationHandler, bool]] = []
        self.templates: list[tuple[str, str]] = []
        """``(method, path template)`` of every registered route (the federation fuzz walks them)."""

    def register(
        self, method: str, pattern: str, handler: FederationHandler, *, authenticated: bool = True,
        max_body_size: int | None = None,
    ) -> None:
        regex, _params = compile_template(pattern)
        self.routes.append((method.upper(), regex, handler, authenticated))
        self.templates.append((method.upper(), pattern))

    async def dispatch(
        self, origin: str | None, method: str, path: str, query: Mapping[str, Sequence[str]], content: JsonDict | None
    ) -> tuple[int, JsonDict]:
        """Runs the matching servlet; errors become ``(status, body)`` as the HTTP layer renders them."""
        matched_path = False
        for route_method, regex, handler, authenticated in self.routes:
            match = regex.match(path)
            if match is None:
                continue
            matched_path = True
            if route_method != method:
                continue
            if authenticated and origin is None:
                return 401, {"errcode": "M_UNAUTHORIZED", "error": "Missing X-Matrix Authorization header"}
            args = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            request = FederationRequest(
                origin if authenticated else None, method, args, {k: list(v) for k, v in query.items()}, content
            )
            try:
                return await handler(request)
            except MatrixError as e:
                return e.http_status, e.to_json()
        if matched_path:
            return 405, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}
        return 404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}


@dataclass
class RecordedRequest:
    origin: str
    destination: str
    method: str
    path: str
    status: int


class InMemoryFederationHttp:
    """One server's ``FederationHttp``: requests go to the destination's router over the network."""

    def __init__(self, network: FederationNetwork, origin: str) -> None:
        self._network = network
        self._origin = origin

    async def _call(
        self, destination: str, method: str, path: str, args: Mapping[str, Sequence[str]] | None, content: Any,
        signed: bool = True,
    ) -> JsonDict:
        router = self._network.routers.get(destination)
        if router is None or not self._network.reachable(self._origin, destination):
            raise RemoteUnreachable(destination, "no route to host")
        origin = self._origin if signed else None
        status, body = await router.dispatch(origin, method, path, _wire(args or {}), _wire(content))
        self._network.requests.append(RecordedRequest(self._origin, destination, method, path, status))
        if status >= 300:
            raise RemoteHttpError(destination, status, _wire(body))
        body = _wire(body)
        if path.startswith(SEND_PREFIX):
            self._network.record_send_answer(self._origin, destination, body)
        tamper = self._network.tamper.get((destination, path.split("/")[4] if path.count("/") > 4 else path))
        return tamper(body) if tamper is not None else body

    async def get_json(
        self, destination: str, path: str, args: Mapping[str, Sequence[str]] | None = None, *,
        signed: bool = True, timeout_s: float | None = None,
    ) -> JsonDict:
        return await self._call(destination, "GET", path, args, None, signed)

    async def put_json(self, destination: str, path: str, content: JsonDict, *, timeout_s: float | None = None) -> JsonDict:
        return await self._call(destination, "PUT", path, None, content)

    async def post_json(
        self, destination: str, path: str, content: JsonDict, args: Mapping[str, Sequence[str]] | None = None, *,
        signed: bool = True, timeout_s: float | None = None,
    ) -> JsonDict:
        return await self._call(destination, "POST", path, args, content, signed)


@dataclass
class FederatedServer:
    """One homeserver of the network."""

    name: str
    hs: Homeserver
    signing_key: SigningKey
    http: InMemoryFederationHttp

    @property
    def federation(self) -> FederationServices:
        """The production federation adapter of this server."""
        services = self.hs.federation.services if self.hs.federation is not None else None
        assert services is not None, "federation not started"
        return services

    @property
    def sender(self) -> FederationSenderService:
        return self.federation.outbound.sender

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.name}"


@dataclass
class FederationNetwork:
    """The servers, their routes, what is unreachable, and a log of every federation request."""

    servers: dict[str, FederatedServer] = field(default_factory=dict)
    routers: dict[str, InMemoryRouter] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    """Servers that are away: nothing reaches them and they reach nothing."""
    partitions: set[frozenset[str]] = field(default_factory=set)
    """Pairs of servers that cannot reach each other."""
    tamper: dict[tuple[str, str], Any] = field(default_factory=dict)
    """``(destination, endpoint name e.g. "send_join") -> fn(body) -> body``: corrupts answers."""
    pdu_failures: list[str] = field(default_factory=list)
    """PDUs a destination refused in its ``/send`` answer (``origin -> destination event_id: error``)."""

    def reachable(self, origin: str, destination: str) -> bool:
        return (
            origin not in self.down and destination not in self.down
            and frozenset((origin, destination)) not in self.partitions
        )

    def take_down(self, name: str) -> None:
        self.down.add(name)

    def bring_up(self, name: str) -> None:
        self.down.discard(name)

    def partition(self, first: str, second: str) -> None:
        self.partitions.add(frozenset((first, second)))

    def heal(self) -> None:
        self.partitions.clear()

    def record_send_answer(self, origin: str, destination: str, body: JsonDict) -> None:
        pdus = body.get("pdus")
        if isinstance(pdus, dict):
            for event_id, result in pdus.items():
                if isinstance(result, dict) and "error" in result:
                    self.pdu_failures.append(f"{origin} -> {destination} {event_id}: {result['error']}")


def _queue_idle(queue: Any) -> bool:
    return not (queue._running or queue.pending_pdus() or queue.catching_up or queue._edus or queue._persisted_pending)


class FederationTestCase(FullHomeserverTestCase):
    """Homeservers federated in memory: ``self.a`` (``a.test:8448``), ``self.b`` (``b.test:8448``)
    and, when :attr:`SERVER_NAMES` has three names, ``self.c``.

    ``self.hs``/``self.site`` are server A's (so the base helpers talk to A).
    """

    SERVER_NAMES: tuple[str, ...] = ("a.test:8448", "b.test:8448")
    SENDER_SETTINGS: SenderSettings | None = None
    """The sender settings of every server (None: production defaults)."""

    def make_homeserver(self, reactor: Any, clock: Any) -> Homeserver:
        self.network = FederationNetwork()
        # The first server runs on PostgreSQL when SC_TEST_POSTGRES is set (one database per test
        # process holds one server), the others on SQLite: both engines carry the scenarios.
        self._pg_url = postgres_url_for_test()
        servers = [
            self._make_server(name, reactor, clock, self._pg_url if i == 0 else None)
            for i, name in enumerate(self.SERVER_NAMES)
        ]
        self.a, self.b = servers[0], servers[1]
        if len(servers) > 2:
            self.c = servers[2]
        return self.a.hs

    def _make_server(self, name: str, reactor: Any, clock: Any, database_url: str | None) -> FederatedServer:
        raw: dict[str, Any] = {k: dict(v) for k, v in BASE_CONFIG.items()}
        raw["server"] = {**raw["server"], "server_name": name}
        raw["database"] = {"url": database_url or self._sqlite_url_for_test(), "sqlite_synchronous": "NORMAL"}
        raw["federation"] = {"enabled": True}
        config = parse_config(raw, "/nonexistent")
        key = generate_signing_key(name.split(".")[0])
        router = InMemoryRouter()
        http = InMemoryFederationHttp(self.network, name)
        self.network.routers[name] = router
        wiring = FederationWiring(
            config, reactor, clock, key, http=http, router=router, sender_settings=self.SENDER_SETTINGS
        )
        hs = self.get_success(
            build_homeserver(config, reactor, clock=clock, threaded=False, signing_key=key, federation=wiring)
        )
        self.addCleanup(lambda: ensureDeferred(hs.pool.close()))
        self.addCleanup(lambda: wiring.services.outbound.sender.stop() if wiring.services is not None else None)
        server = FederatedServer(name, hs, key, http)
        self.network.servers[name] = server
        return server

    # ------------------------------------------------------------------ the network on the fake clock

    def _idle(self) -> bool:
        for server in self.network.servers.values():
            sender = server.sender
            if sender._fanning:
                return False
            for destination, queue in sender._queues.items():
                if self.network.reachable(server.name, destination) and not _queue_idle(queue):
                    return False
        return True

    def _next_wakeup(self) -> float | None:
        """The earliest sender timer towards a reachable destination (reactor seconds)."""
        times: list[float] = []
        for server in self.network.servers.values():
            sender = server.sender
            if sender._refanout is not None and sender._refanout.active():
                times.append(sender._refanout.getTime())
            for destination, queue in sender._queues.items():
                wakeup = queue._wakeup
                if wakeup is not None and wakeup.active() and self.network.reachable(server.name, destination):
                    times.append(wakeup.getTime())
        return min(times) if times else None

    def settle(self, max_rounds: int = 50) -> None:
        """Runs the network until every sender queue towards a reachable server is idle: due calls
        run, and the clock jumps to the next sender wake-up (a backoff expiring) when work waits."""
        for _ in range(max_rounds):
            self.reactor.advance(0)
            if self._idle():
                return
            wakeup = self._next_wakeup()
            if wakeup is not None:
                self.reactor.advance(max(0.0, wakeup - self.reactor.seconds()))
        raise AssertionError("the federation network did not settle")

    # ------------------------------------------------------------------ helpers

    def request(
        self, server: FederatedServer, method: str, path: str, content: Any = None, token: str | None = None
    ) -> FakeChannel:
        """A client request to ``server``; the network settles before it returns."""
        channel = make_request(self.reactor, server.hs.site, method, path, content, token)
        self.settle()
        return channel
    def user_on(self, server: FederatedServer, localpart: str) -> tuple[str, str]:
        """Registers and logs in a user on ``server``; returns ``(user_id, access_token)``."""
        user_id = self.get_success(server.hs.create_user(localpart, "p4ssw0rd-long"))
        channel = self.request(
            server, "POST", "/_matrix/client/v3/login",
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
             "password": "p4ssw0rd-long"},
        )
        assert channel.code == 200, channel.json_body
        return user_id, channel.json_body["access_token"]

    def federation(
        self, origin: str, destination: FederatedServer, method: str, path: str,
        content: Any = None, query: Mapping[str, Sequence[str]] | None = None,
    ) -> tuple[int, JsonDict]:
        """A raw federation request from ``origin`` (any name: a hostile server) to ``destination``."""
        router = self.network.routers[destination.name]
        return self.get_success(router.dispatch(origin, method, path, query or {}, _wire(content)))

    def membership_on(self, server: FederatedServer, room_id: str, user_id: str) -> str | None:
        """``user_id``'s current membership in ``room_id`` as ``server`` sees it."""
        return self.get_success(server.hs.rooms.creator.state.get_membership(room_id, user_id))

    def create_room(self, server: FederatedServer, token: str, **body: Any) -> str:
        channel = self.request(server, "POST", "/_matrix/client/v3/createRoom", body, token)
        assert channel.code == 200, channel.json_body
        return str(channel.json_body["room_id"])
