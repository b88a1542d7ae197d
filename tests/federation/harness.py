"""Several real homeserver cores in one fake reactor, joined by an in-memory federation transport.

Theory of operation: each :class:`FederatedServer` is a full homeserver (composition root, own
SQLite database, own signing key, own server name). A :class:`FederationNetwork` stands in for the
transport: :class:`InMemoryRouter` is each server's ``FederationRouter`` (servlets register on it),
and :class:`InMemoryFederationHttp` is each server's ``FederationHttp``, which calls the
destination's registered handler directly with an authenticated origin (the JSON bodies go through
an encode/decode round trip, so no object is shared between servers). :class:`InMemoryKeyring`
knows every server's verify key. Parts built by other pieces of issue 13 are stood in for:
``/send`` is simulated by forwarding each locally persisted event to the servers in its room
(:meth:`FederationNetwork.forward`), and alias resolution by :class:`InMemoryDirectory`.

Use :class:`FederationTestCase`: ``self.a`` and ``self.b`` are two servers (``a.test:8448`` and
``b.test:8448``); ``self.request(server, ...)`` sends a client request to one of them and
``self.pump()`` lets the forwarded events arrive.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
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
from federation.membership_wiring import LateBoundMembership, wire_membership
from homeserver.api.local import local_only_ports
from homeserver.api.services import PDUStatus
from homeserver.app.composition import Homeserver, build_homeserver
from homeserver.config.loader import parse_config
from homeserver.events.persister import PersistedEvent
from homeserver.identity import LocalServer
from sc_proto.crypto.keys import SigningKey, VerifyKey, generate_signing_key, get_key_id, get_verify_key
from sc_proto.crypto.signing import verify_json
from sc_proto.errors import Codes, MatrixError, SignatureError
from sc_proto.events.model import Event
from sc_proto.identifiers import UserID
from tests.homeserver.server_case import BASE_CONFIG, FullHomeserverTestCase, postgres_url_for_test
from tests.unittest import FakeChannel, make_request

logger = logging.getLogger(__name__)


def _wire(value: Any) -> Any:
    """A JSON round trip: what crosses the network is never a shared object."""
    return json.loads(json.dumps(value))


class InMemoryRouter:
    """A server's inbound federation routes (a ``FederationRouter``)."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], FederationHandler, bool]] = []

    def register(self, method: str, pattern: str, handler: FederationHandler, *, authenticated: bool = True) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern))
        self.routes.append((method, re.compile(f"^{regex}$"), handler, authenticated))

    async def dispatch(
        self, origin: str, method: str, path: str, query: Mapping[str, Sequence[str]], content: JsonDict | None
    ) -> tuple[int, JsonDict]:
        for route_method, regex, handler, _authenticated in self.routes:
            match = regex.match(path)
            if match is None or route_method != method:
                continue
            args = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            request = FederationRequest(origin, method, args, {k: list(v) for k, v in query.items()}, content)
            try:
                return await handler(request)
            except MatrixError as e:
                return e.http_status, e.to_json()
        return 404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}


@dataclass
class RecordedRequest:
    origin: str
    destination: str
    method: str
    path: str
    status: int


class InMemoryFederationHttp:
    """One server's ``FederationHttp``: requests go straight to the destination's router."""

    def __init__(self, network: FederationNetwork, origin: str) -> None:
        self._network = network
        self._origin = origin

    async def _call(
        self, destination: str, method: str, path: str, args: Mapping[str, Sequence[str]] | None, content: Any
    ) -> JsonDict:
        router = self._network.routers.get(destination)
        if router is None or destination in self._network.down:
            raise RemoteUnreachable(destination, "no route to host")
        status, body = await router.dispatch(self._origin, method, path, args or {}, _wire(content))
        self._network.requests.append(RecordedRequest(self._origin, destination, method, path, status))
        if status >= 300:
            raise RemoteHttpError(destination, status, _wire(body))
        tamper = self._network.tamper.get((destination, path.split("/")[4] if path.count("/") > 4 else path))
        body = _wire(body)
        return tamper(body) if tamper is not None else body

    async def get_json(
        self, destination: str, path: str, args: Mapping[str, Sequence[str]] | None = None, *,
        signed: bool = True, timeout_s: float | None = None,
    ) -> JsonDict:
        return await self._call(destination, "GET", path, args, None)

    async def put_json(self, destination: str, path: str, content: JsonDict, *, timeout_s: float | None = None) -> JsonDict:
        return await self._call(destination, "PUT", path, None, content)

    async def post_json(
        self, destination: str, path: str, content: JsonDict, args: Mapping[str, Sequence[str]] | None = None, *,
        signed: bool = True, timeout_s: float | None = None,
    ) -> JsonDict:
        return await self._call(destination, "POST", path, args, content)


class InMemoryKeyring:
    """Every server's verify keys (a ``VerifyKeyLookup``)."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, VerifyKey]] = {}

    async def get_verify_key(self, server_name: str, key_id: str, at_ts: int) -> VerifyKey:
        key = self.keys.get(server_name, {}).get(key_id)
        if key is None:
            raise MatrixError(401, Codes.UNAUTHORIZED, f"no key {key_id} for {server_name}")
        return key

    async def verify_json_for_server(self, server_name: str, obj: Mapping[str, Any], at_ts: int) -> None:
        sigs = obj.get("signatures", {}).get(server_name) if isinstance(obj.get("signatures"), Mapping) else None
        if not isinstance(sigs, Mapping) or not sigs:
            raise MatrixError(401, Codes.UNAUTHORIZED, f"not signed by {server_name}")
        for key_id in sigs:
            key = self.keys.get(server_name, {}).get(key_id)
            if key is None:
                continue
            try:
                verify_json(obj, server_name, key, key_id=key_id)
                return
            except SignatureError:
                break
        raise MatrixError(401, Codes.UNAUTHORIZED, f"bad signature from {server_name}")


class InMemoryDirectory:
    """Remote alias resolution over the other servers' alias tables (a ``RemoteDirectoryQuerier``)."""

    def __init__(self, network: FederationNetwork) -> None:
        self._network = network

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        server = self._network.servers.get(alias.split(":", 1)[1])
        found = await server.hs.rooms.rooms.get_alias(alias) if server is not None else None
        if server is None or found is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room alias not found")
        return found[0], [server.name]


@dataclass
class FederatedServer:
    """One homeserver of the network."""

    name: str
    hs: Homeserver
    signing_key: SigningKey
    port: LateBoundMembership

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.name}"


@dataclass
class FederationNetwork:
    """The servers, their routes and keys, and a log of every federation request."""

    servers: dict[str, FederatedServer] = field(default_factory=dict)
    routers: dict[str, InMemoryRouter] = field(default_factory=dict)
    keyring: InMemoryKeyring = field(default_factory=InMemoryKeyring)
    requests: list[RecordedRequest] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    tamper: dict[tuple[str, str], Any] = field(default_factory=dict)
    """``(destination, endpoint name e.g. "send_join") -> fn(body) -> body``: corrupts answers."""
    forward_failures: list[str] = field(default_factory=list)
    """Forwarded events the destination refused or did not accept into its timeline."""

    def add(self, name: str, key: SigningKey) -> tuple[InMemoryRouter, InMemoryFederationHttp]:
        router = InMemoryRouter()
        self.routers[name] = router
        self.keyring.keys[name] = {get_key_id(key): get_verify_key(key)}
        return router, InMemoryFederationHttp(self, name)

    def forward(self, origin: FederatedServer, persisted: PersistedEvent) -> None:
        """Stands in for the federation sender and ``/send``: an event of ours goes to the other
        servers in its room (and to the target's server of a membership event)."""
        event = persisted.stored.event
        if not LocalServer(origin.name).is_mine(event.sender):
            return
        origin.hs.reactor.callLater(0, lambda: ensureDeferred(self._forward(origin, event)))

    async def _forward(self, origin: FederatedServer, event: Event) -> None:
        destinations = await origin.hs.api.membership.get_joined_servers(event.room_id)
        if event.type == "m.room.member" and event.state_key:
            destinations.add(UserID.parse(event.state_key, historical=True).domain)
        for name in sorted(destinations - {origin.name}):
            target = self.servers.get(name)
            if target is None or name in self.down:
                continue
            pdu = Event.from_pdu(_wire(dict(event.pdu)), event.room_version)
            try:
                outcome = await target.hs.rooms.room_input.receive_pdu(origin.name, pdu)
            except MatrixError as e:
                self.forward_failures.append(f"{event.type} {event.event_id} -> {name}: {e.errcode.value}")
                continue
            if outcome.status not in (PDUStatus.ACCEPTED, PDUStatus.DUPLICATE):
                self.forward_failures.append(f"{event.type} {event.event_id} -> {name}: {outcome.status.value}")


class FederationTestCase(FullHomeserverTestCase):
    """Two homeservers, ``self.a`` (``a.test:8448``) and ``self.b`` (``b.test:8448``), federated in memory.

    ``self.hs``/``self.site`` are server A's (so the base helpers talk to A).
    """

    SERVER_NAMES = ("a.test:8448", "b.test:8448")

    def make_homeserver(self, reactor: Any, clock: Any) -> Homeserver:
        self.network = FederationNetwork()
        # The first server runs on PostgreSQL when SC_TEST_POSTGRES is set (one database per test
        # process holds one server), the others on SQLite: both engines carry the dances.
        self._pg_url = postgres_url_for_test()
        servers = [
            self._make_server(name, reactor, clock, self._pg_url if i == 0 else None)
            for i, name in enumerate(self.SERVER_NAMES)
        ]
        self.a, self.b = servers[0], servers[1]
        return self.a.hs

    def _make_server(self, name: str, reactor: Any, clock: Any, database_url: str | None) -> FederatedServer:
        raw: dict[str, Any] = {k: dict(v) for k, v in BASE_CONFIG.items()}
        raw["server"] = {**raw["server"], "server_name": name}
        raw["database"] = {"url": database_url or self._sqlite_url_for_test(), "sqlite_synchronous": "NORMAL"}
        config = parse_config(raw, "/nonexistent")
        key = generate_signing_key(name.split(".")[0])
        port = LateBoundMembership()
        ports = dataclasses.replace(local_only_ports(), membership=port, directory=InMemoryDirectory(self.network))
        hs = self.get_success(
            build_homeserver(config, reactor, clock=clock, threaded=False, signing_key=key, ports=ports)
        )
        self.addCleanup(lambda: ensureDeferred(hs.pool.close()))
        router, http = self.network.add(name, key)
        assert hs.api.room_federation is not None
        wire_membership(
            server_name=name, signing_key=key, http=http, keys=self.network.keyring, router=router,
            rooms=hs.api.room_federation, events=hs.rooms.room_input, time_msec=clock.time_msec, port=port,
        )
        server = FederatedServer(name, hs, key, port)
        hs.rooms.persister.on_persisted.append(lambda persisted: self.network.forward(server, persisted))
        self.network.servers[name] = server
        return server

    # ------------------------------------------------------------------ helpers

    def request(
        self, server: FederatedServer, method: str, path: str, content: Any = None, token: str | None = None
    ) -> FakeChannel:
        """A client request to ``server``; forwarded events are delivered before it returns."""
        channel = make_request(self.reactor, server.hs.site, method, path, content, token)
        self.pump()
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
