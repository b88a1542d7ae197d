"""Fakes for federation transport tests: DNS, well-known answers, key lookups, in-memory connections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import FakeTransport, IOPump, connect

from federation.discovery import WellKnownResponse
from sc_proto.crypto.keys import SigningKey, VerifyKey, get_key_id, get_verify_key
from sc_proto.errors import Codes, MatrixError
from sc_proto.federation import SrvRecord


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
