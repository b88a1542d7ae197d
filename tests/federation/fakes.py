"""Fakes for federation tests.

Transport: DNS, well-known answers, key lookups, in-memory connections. Sender and queries:

* :class:`FakeFederationHttp` records every request. Per destination it answers ``PUT /send``
  with ``{"pdus": {}}``, or fails (``fail``: :class:`RemoteUnreachable`; ``status``: an HTTP error),
  or hangs (``hang``: the request waits until :meth:`release`). GETs and POSTs answer from
  ``answers[(destination, path)]`` (a value, an exception, or a callable of the args/body).
* :class:`FakeRouter` records registrations and calls handlers as the transport would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import FakeTransport, IOPump, connect

from federation.discovery import WellKnownResponse
from federation.interfaces import FederationHandler, FederationRequest, RemoteHttpError, RemoteUnreachable
from sc_proto.crypto.keys import SigningKey, VerifyKey, get_key_id, get_verify_key
from sc_proto.errors import Codes, MatrixError
from sc_proto.events.hashes import compute_event_id
from sc_proto.federation import SrvRecord
from sc_proto.room_versions import get_room_version


class FakeDns:
    """Canned SRV and A/AAAA answers; counts lookups."""

    def __init__(
        self,
        addresses: Mapping[str, list[str]] | None = None,
        srv: Mapping[str, list[SrvRecord]] | None = None,
    ) -> None:
        self.addresses = dict(addresses or {})
        self.srv = dict(srv or {})
        self.srv_lookups: list[str] = []
        self.address_lookups: list[str] = []

    async def lookup_srv(self, name: str) -> list[SrvRecord]:
        self.srv_lookups.append(name)
        return list(self.srv.get(name, []))

    async def lookup_addresses(self, host: str) -> list[str]:
        self.address_lookups.append(host)
        if host not in self.addresses:
            raise OSError(f"no such host {host}")
        return list(self.addresses[host])


class FakeWellKnown:
    """Canned well-known responses (or exceptions) by hostname; counts fetches."""

    def __init__(self, answers: Mapping[str, WellKnownResponse | Exception] | None = None) -> None:
        self.answers = dict(answers or {})
        self.fetches: list[str] = []

    async def fetch(self, hostname: str) -> WellKnownResponse:
        self.fetches.append(hostname)
        answer = self.answers.get(hostname, OSError("connection refused"))
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeKeys:
    """A VerifyKeyLookup over a fixed map of (server, key id) -> key."""

    def __init__(self, keys: Mapping[tuple[str, str], VerifyKey] | None = None) -> None:
        self.keys = dict(keys or {})
        self.lookups: list[tuple[str, str, int]] = []

    def add(self, server_name: str, signing_key: SigningKey) -> None:
        self.keys[(server_name, get_key_id(signing_key))] = get_verify_key(signing_key)

    async def get_verify_key(self, server_name: str, key_id: str, at_ts: int) -> VerifyKey:
        self.lookups.append((server_name, key_id, at_ts))
        key = self.keys.get((server_name, key_id))
        if key is None:
            raise MatrixError(401, Codes.UNAUTHORIZED, "unknown key")
        return key

    async def verify_json_for_server(self, server_name: str, obj: Mapping[str, Any], at_ts: int) -> None:
        raise MatrixError(401, Codes.UNAUTHORIZED, "not used here")


def accept_connections(reactor: MemoryReactorClock, server_factory: Any) -> list[tuple[str, int, IOPump]]:
    """Connects every pending ``connectTCP`` of ``reactor`` to a new protocol of ``server_factory``.

    Returns:
        ``(host, port, pump)`` per connection (already flushed once).
    """
    accepted = []
    while reactor.tcpClients:
        host, port, factory, _timeout, _bind = reactor.tcpClients.pop(0)
        client = factory.buildProtocol(None)
        server = server_factory.buildProtocol(None)
        pump = connect(server, FakeTransport(server, isServer=True), client, FakeTransport(client, isServer=False),
                       clock=reactor)
        accepted.append((host, port, pump))
    return accepted


JsonDict = dict[str, Any]


@dataclass
class SentTransaction:
    destination: str
    txn_id: str
    body: JsonDict

    def pdu_ids(self, room_version: str = "12") -> list[str]:
        """The event IDs of the PDUs (computed, as the receiver would, for rooms of ``room_version``)."""
        version = get_room_version(room_version)
        return [p["event_id"] if "event_id" in p else compute_event_id(p, version) for p in self.body["pdus"]]

    @property
    def edus(self) -> list[JsonDict]:
        return list(self.body.get("edus", []))


@dataclass
class FakeFederationHttp:
    """Records requests; behaviour per destination (``ok`` unless set)."""

    behaviour: dict[str, str] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    responses: dict[str, JsonDict] = field(default_factory=dict)
    answers: dict[tuple[str, str], Any] = field(default_factory=dict)
    sent: list[SentTransaction] = field(default_factory=list)
    attempts: list[tuple[str, str]] = field(default_factory=list)
    requests: list[tuple[str, str, str, Any]] = field(default_factory=list)
    _hanging: list[tuple[Deferred[JsonDict], str, str, JsonDict]] = field(default_factory=list)

    # -- FederationHttp

    async def get_json(
        self,
        destination: str,
        path: str,
        args: Mapping[str, Sequence[str]] | None = None,
        *,
        signed: bool = True,
        timeout_s: float | None = None,
    ) -> JsonDict:
        self.requests.append(("GET", destination, path, dict(args or {})))
        return self._answer(destination, path, dict(args or {}))

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
        self.requests.append(("POST", destination, path, content))
        return self._answer(destination, path, content)

    async def put_json(
        self, destination: str, path: str, content: JsonDict, *, timeout_s: float | None = None
    ) -> JsonDict:
        self.attempts.append((destination, path))
        mode = self.behaviour.get(destination, "ok")
        if mode == "fail":
            raise RemoteUnreachable(destination, "connection refused")
        if mode == "status":
            raise RemoteHttpError(destination, self.status[destination], {"errcode": "M_UNKNOWN"})
        if mode == "hang":
            d: Deferred[JsonDict] = Deferred()
            self._hanging.append((d, destination, path, content))
            return await d
        return self._record(destination, path, content)

    # -- test controls

    def release(self, destination: str, mode: str = "ok") -> None:
        """Answers the hanging requests of ``destination`` (``ok`` or ``fail``) and sets its behaviour."""
        self.behaviour[destination] = mode
        hanging = [h for h in self._hanging if h[1] == destination]
        self._hanging = [h for h in self._hanging if h[1] != destination]
        for d, dest, path, content in hanging:
            if mode == "ok":
                d.callback(self._record(dest, path, content))
            else:
                d.errback(RemoteUnreachable(dest, "timed out"))

    def hanging(self, destination: str) -> int:
        return sum(1 for h in self._hanging if h[1] == destination)

    def sent_to(self, destination: str) -> list[SentTransaction]:
        return [t for t in self.sent if t.destination == destination]

    def pdus_to(self, destination: str) -> list[str]:
        return [e for t in self.sent_to(destination) for e in t.pdu_ids()]

    def edus_to(self, destination: str) -> list[JsonDict]:
        return [e for t in self.sent_to(destination) for e in t.edus]

    def _record(self, destination: str, path: str, content: JsonDict) -> JsonDict:
        prefix = "/_matrix/federation/v1/send/"
        assert path.startswith(prefix), path
        self.sent.append(SentTransaction(destination, path[len(prefix):], content))
        return self.responses.get(destination, {"pdus": {}})

    def _answer(self, destination: str, path: str, request: Any) -> JsonDict:
        if (destination, path) not in self.answers:
            raise RemoteHttpError(destination, 404, {"errcode": "M_NOT_FOUND"})
        found = self.answers[(destination, path)]
        if isinstance(found, BaseException):
            raise found
        result: JsonDict = found(request) if callable(found) else found
        return result


@dataclass
class FakeRouter:
    """Records routes; :meth:`call` runs a handler with a request as the transport would hand it."""

    routes: dict[tuple[str, str], FederationHandler] = field(default_factory=dict)
    authenticated: dict[tuple[str, str], bool] = field(default_factory=dict)

    def register(self, method: str, pattern: str, handler: FederationHandler, *, authenticated: bool = True) -> None:
        assert (method, pattern) not in self.routes, f"{method} {pattern} registered twice"
        self.routes[(method, pattern)] = handler
        self.authenticated[(method, pattern)] = authenticated

    def request(
        self,
        method: str,
        pattern: str,
        query: Mapping[str, Sequence[str]] | None = None,
        content: JsonDict | None = None,
        origin: str = "remote:8448",
    ) -> Any:
        """The handler's coroutine for one request."""
        handler = self.routes[(method, pattern)]
        return handler(FederationRequest(origin=origin, method=method, path_args={}, query=dict(query or {}), content=content))
