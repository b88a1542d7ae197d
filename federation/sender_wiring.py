"""Wiring of outbound sending and queries, for ``homeserver/app/feature_federation.py``.

Two steps, because the core takes its outward ports when it is built, while the sender needs the
database and the core's events reader, which exist only afterwards:

1. :func:`build_outbound` (before the homeserver): the sender and the remote queriers, to put in
   :class:`~homeserver.api.ports.RemotePorts` (``sender``, ``profiles``, ``directory``,
   ``public_rooms``).
2. :func:`start_outbound` (once the homeserver is built): registers the query servlets on the
   federation router and starts the sender over the database (it resumes what a previous process
   left queued). Until then the sender remembers notifications and holds EDUs in memory.

:func:`wire_outbound` does both when everything is at hand.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass

from federation.interfaces import FederationHttp, FederationRouter
from federation.queries import RemoteDirectoryQueries, RemoteProfileQueries, RemoteRoomDirectoryQuerier
from federation.query_servlets import QueryServlets
from federation.sender.service import FederationSenderService, SenderSettings
from homeserver.api.ports import RemotePorts
from homeserver.api.services import OutboundEventsAPI, ProfileAPI, RoomDirectoryAPI
from homeserver.storage.pool import DatabasePool
from homeserver.util.clock import Clock


@dataclass(frozen=True)
class OutboundFederation:
    """The outbound side: the sender and the queriers (the ports they implement in brackets).

    Attributes:
        sender: PDUs and EDUs to other servers (``FederationSender``).
        profiles: remote profiles (``RemoteProfileQuerier``).
        directory: remote aliases (``RemoteDirectoryQuerier``).
        public_rooms: remote room directories (``RemoteRoomDirectory``).
    """

    sender: FederationSenderService
    profiles: RemoteProfileQueries
    directory: RemoteDirectoryQueries
    public_rooms: RemoteRoomDirectoryQuerier


def build_outbound(
    server_name: str,
    clock: Clock,
    http: FederationHttp,
    settings: SenderSettings | None = None,
    rand: Callable[[], float] = random.random,
) -> OutboundFederation:
    """Builds the sender and queriers (nothing touches the database yet)."""
    return OutboundFederation(
        sender=FederationSenderService(server_name, clock, http, settings, rand),
        profiles=RemoteProfileQueries(http),
        directory=RemoteDirectoryQueries(http),
        public_rooms=RemoteRoomDirectoryQuerier(http),
    )


def with_outbound_ports(ports: RemotePorts, outbound: OutboundFederation) -> RemotePorts:
    """``ports`` with the sender, profile, directory and room-directory ports replaced by ours."""
    return dataclasses.replace(
        ports,
        sender=outbound.sender,
        profiles=outbound.profiles,
        directory=outbound.directory,
        public_rooms=outbound.public_rooms,
    )


async def start_outbound(
    outbound: OutboundFederation,
    server_name: str,
    pool: DatabasePool,
    events: OutboundEventsAPI,
    router: FederationRouter,
    directory: RoomDirectoryAPI,
    profiles: ProfileAPI,
) -> None:
    """Registers the query servlets and starts the sender (resuming from the database)."""
    QueryServlets(server_name, directory, profiles).register(router)
    await outbound.sender.start(pool, events)


async def wire_outbound(
    server_name: str,
    clock: Clock,
    http: FederationHttp,
    pool: DatabasePool,
    events: OutboundEventsAPI,
    router: FederationRouter,
    directory: RoomDirectoryAPI,
    profiles: ProfileAPI,
    settings: SenderSettings | None = None,
) -> OutboundFederation:
    """Both steps at once."""
    outbound = build_outbound(server_name, clock, http, settings)
    await start_outbound(outbound, server_name, pool, events, router, directory, profiles)
    return outbound
