"""Wires the federation adapter into one homeserver process (issue 13; ADRs 0012-0014, 0016, 0017).

Theory of operation. The core takes its outward ports when it is built, and the adapter's inbound
side needs the built core, so wiring runs in two phases:

1. :meth:`FederationWiring.outward_ports` (inside ``build_homeserver``, after the database is
   prepared, before the :class:`~homeserver.app.composition.Homeserver`): builds the signed client,
   our key set and the keyring (it needs only the database), the outbound sender and the remote
   queriers, and a late-bound membership port; returns the ports the core is built with.
2. :meth:`FederationWiring.start` (the ``federation`` feature, once the core exists): serves the
   transport on the homeserver's resource with the keyring as its key lookup, registers the key,
   event, membership and query servlets, gives the room input its missing-event fetcher, binds the
   membership port and starts the sender (which resumes from its persisted position).

Tests and tools may replace the three I/O edges (``http``, ``key_lookup``, ``router``) with
in-memory ones; everything between them is the production code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from federation.discovery import ServerNameResolver, TwistedDns, WellKnownClient
from federation.inbound_wiring import InboundFederation, register_inbound
from federation.interfaces import FederationHttp, FederationRouter, VerifyKeyLookup
from federation.keys_wiring import KeyServices, build_key_services, register_key_servlets
from federation.membership import FederationMembership
from federation.membership_wiring import LateBoundMembership, wire_membership
from federation.sender.service import SenderSettings
from federation.sender_wiring import OutboundFederation, build_outbound, start_outbound, with_outbound_ports
from federation.transport.client import FederationClient
from federation.transport.connect import AddressPolicy, CheckedConnector, TLSPolicy
from federation.transport.server import FederationTransport
from homeserver.api.ports import RemotePorts
from homeserver.config.loader import HomeserverConfig
from homeserver.storage.pool import DatabasePool
from homeserver.util.clock import Clock
from sc_proto._version import __version__
from sc_proto.crypto.keys import SigningKey

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver

USER_AGENT = f"SecureConnect/{__version__}"


@dataclass(frozen=True)
class FederationServices:
    """The federation adapter of one process, as the ``federation`` feature provides it.

    Attributes:
        http: signed requests to other servers (a :class:`FederationClient` in production).
        router: where federation servlets are registered (a :class:`FederationTransport`).
        keys: our key set, the key store and the keyring.
        key_lookup: what checks remote signatures (``keys.keyring`` unless a test replaced it).
        inbound: ``/send`` processing, event servlets, the fetcher and the EDU registry.
        outbound: the sender and the remote queriers.
        membership: the make/send join, leave, knock and invite dances.
    """

    http: FederationHttp
    router: FederationRouter
    keys: KeyServices
    key_lookup: VerifyKeyLookup
    inbound: InboundFederation
    outbound: OutboundFederation
    membership: FederationMembership


class FederationWiring:
    """Builds and starts the federation adapter for one homeserver (see the module docstring).

    Args:
        config: the whole config (``federation:`` and ``server:`` sections are read).
        reactor: the reactor.
        clock: the clock.
        signing_key: our current signing key.
        http: replaces the network client (tests: an in-memory transport).
        key_lookup: replaces the keyring for inbound checks (tests: known keys).
        router: replaces the transport on the homeserver's resource (tests: an in-memory router).
        sender_settings: the sender's bounds and backoff (tests: small queues); default settings when None.
    """

    def __init__(
        self,
        config: HomeserverConfig,
        reactor: Any,
        clock: Clock,
        signing_key: SigningKey,
        *,
        http: FederationHttp | None = None,
        key_lookup: VerifyKeyLookup | None = None,
        router: FederationRouter | None = None,
        sender_settings: SenderSettings | None = None,
    ) -> None:
        self._config = config
        self._reactor = reactor
        self._clock = clock
        self._signing_key = signing_key
        self._http = http
        self._key_lookup = key_lookup
        self._router = router
        self._sender_settings = sender_settings
        self._keys: KeyServices | None = None
        self._outbound: OutboundFederation | None = None
        self._membership_port = LateBoundMembership()
        self.services: FederationServices | None = None

    @property
    def server_name(self) -> str:
        return self._config.server.server_name

    def _build_client(self) -> FederationClient:
        config = self._config.federation
        dns = TwistedDns()
        connector = CheckedConnector(
            self._reactor, dns, AddressPolicy.from_config(config), TLSPolicy(config.verify_certificates)
        )
        resolver = ServerNameResolver(dns, WellKnownClient(self._reactor, connector, USER_AGENT.encode()), self._clock.time)
        client = FederationClient(
            self._reactor, self.server_name, self._signing_key, config, resolver, connector, user_agent=USER_AGENT
        )
        self._reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(client.close()))
        return client

    def outward_ports(self, base: RemotePorts, pool: DatabasePool) -> RemotePorts:
        """Phase 1: builds the outbound side; returns ``base`` with federation's ports in it."""
        if self._http is None:
            self._http = self._build_client()
        self._keys = build_key_services(
            pool=pool,
            clock=self._clock,
            http=self._http,
            config=self._config.federation,
            server_name=self.server_name,
            signing_key=self._signing_key,
            signing_key_path=self._config.server.signing_key_path,
        )
        self._outbound = build_outbound(self.server_name, self._clock, self._http, self._sender_settings)
        ports = with_outbound_ports(base, self._outbound)
        return dataclasses.replace(ports, membership=self._membership_port)

    async def start(self, hs: Homeserver) -> FederationServices:
        """Phase 2: registers every servlet, connects the core and starts the sender."""
        if self._http is None or self._keys is None or self._outbound is None:
            raise RuntimeError("outward_ports() must run before start()")
        api = hs.api
        if api.outbound_events is None or api.directory is None or api.profiles is None or api.room_federation is None:
            raise RuntimeError("the core did not build the adapter services federation needs")
        key_lookup = self._key_lookup or self._keys.keyring
        router = self._router
        if router is None:
            transport = FederationTransport(hs.resource, self.server_name, self._config.federation, hs.clock.time_msec)
            transport.register_version()
            transport.use_key_lookup(key_lookup)
            router = transport
        register_key_servlets(router, self._keys)
        inbound = register_inbound(
            router,
            server_name=self.server_name,
            pool=hs.pool,
            keys=key_lookup,
            http=self._http,
            room_events=hs.rooms.room_input,
            history=hs.rooms.history,
            time_msec=hs.clock.time_msec,
        )
        hs.rooms.room_input.use_fetcher(inbound.fetcher)
        membership = wire_membership(
            server_name=self.server_name,
            signing_key=self._signing_key,
            http=self._http,
            keys=key_lookup,
            router=router,
            rooms=api.room_federation,
            events=hs.rooms.room_input,
            time_msec=hs.clock.time_msec,
            port=self._membership_port,
            checker=inbound.checker,
        )
        await start_outbound(
            self._outbound, self.server_name, hs.pool, api.outbound_events, router, api.directory, api.profiles
        )
        hs.reactor.addSystemEventTrigger("before", "shutdown", self._outbound.sender.stop)
        self.services = FederationServices(
            self._http, router, self._keys, key_lookup, inbound, self._outbound, membership
        )
        return self.services
