"""Wiring of the inbound-events part of the federation adapter (issue 13, ADR 0014).

``homeserver/app/feature_federation.py`` (the composition root) calls :func:`register_inbound` with
the router, the keyring and the core's services, and hands :attr:`InboundFederation.fetcher` to the
room input as its :class:`~homeserver.api.ports.RemoteEventFetcher`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from federation.edus import EDURegistry
from federation.event_checks import EventChecker
from federation.event_servlets import EventServlets
from federation.fetching import RemoteEventFetching
from federation.inbound import SEND_PATH, InboundTransactions
from federation.interfaces import FederationHttp, FederationRouter, VerifyKeyLookup
from federation.transaction_store import InboundTransactionStore
from homeserver.api.services import RoomEventsAPI, RoomHistoryAPI
from homeserver.http.ratelimit import RateLimiter
from homeserver.identity import LocalServer
from homeserver.storage.pool import DatabasePool


@dataclass(frozen=True)
class InboundFederation:
    """What :func:`register_inbound` built.

    Attributes:
        transactions: the ``/send`` handler (its ``edus`` registry takes EDU handlers).
        servlets: the event-serving routes.
        fetcher: the ``RemoteEventFetcher`` for the room input.
        checker: received-PDU checks (for other parts of the adapter, e.g. send_join answers).
    """

    transactions: InboundTransactions
    servlets: EventServlets
    fetcher: RemoteEventFetching
    checker: EventChecker

    @property
    def edus(self) -> EDURegistry:
        """Where EDU handlers register (typing, receipts, presence, device lists, to-device)."""
        return self.transactions.edus


def register_inbound(
    router: FederationRouter,
    *,
    server_name: str,
    pool: DatabasePool,
    keys: VerifyKeyLookup,
    http: FederationHttp,
    room_events: RoomEventsAPI,
    history: RoomHistoryAPI,
    time_msec: Callable[[], int],
    edus: EDURegistry | None = None,
    ratelimiter: RateLimiter | None = None,
) -> InboundFederation:
    """Builds the inbound-events objects and registers their routes on ``router``.

    Args:
        router: the federation transport's router.
        server_name: our server name.
        pool: the database pool (stored transaction answers).
        keys: the keyring.
        http: the federation client (fetching missing events).
        room_events: the room input (``hs.rooms.room_input``).
        history: graph reads (``hs.rooms.history``).
        time_msec: the clock.
        edus: an EDU registry shared with other parts (a new one when None).
        ratelimiter: a limiter with a ``federation.inbound_txn`` rule (default 10/s, burst 50).
    """
    local = LocalServer(server_name)
    checker = EventChecker(keys, time_msec)
    transactions = InboundTransactions(
        local, room_events, history, checker, InboundTransactionStore(pool), edus or EDURegistry(), time_msec,
        ratelimiter,
    )
    router.register("PUT", SEND_PATH, transactions.on_send)
    servlets = EventServlets(local, history, time_msec)
    servlets.register(router)
    return InboundFederation(transactions, servlets, RemoteEventFetching(http, checker, history), checker)
