"""Backfill: history older than what we hold of a room, fetched from another server (issue 13).

Theory of operation: a room joined over federation starts, on our side, at our join event (the
room's earlier state arrives as outliers with ``send_join``). When backwards pagination reaches the
oldest timeline event we have and that event's ``prev_events`` are unknown, :class:`Backfiller`
asks a server in the room for older events (``GET /backfill`` through the ``RemoteEventFetcher``
port) and inserts them into the timeline, after which pagination reads on.

Minimal by design (NOTSPEC, documented in docs/adr/0018-federation-tests-against-synapse.md):

* Backfilled events get *negative* stream orderings, below every other event. They never show up in
  ``/sync`` as new events, are never sent to other servers (the sender reads positive positions), and
  history visibility sees them as older than any join (``shared`` rooms then show them to members).
  Their topological position is ``(depth, stream)`` like every event, so ``/messages`` orders them by
  depth.
* They take the state of the event they were fetched from (its ``state_group_before``) instead of the
  state at each of them (no ``/state_ids`` per event): visibility and ``/context`` state may be
  approximate for history before a visibility or membership change.
* Each event must pass the auth rules against its own auth events (step 4 of the PDU checks);
  signatures and hashes are checked by the fetcher. Events we already hold (also as outliers, such as
  the state from ``send_join``) are left as they are. Nothing changes the room's forward extremities
  or current state, and no client is woken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import DeferredLock

from homeserver.events.input_queue import RoomInput
from homeserver.rooms.state_reader import RoomHead, RoomStateReader
from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.state_groups import StateMap
from sc_proto.errors import InvalidEventError, MatrixError
from sc_proto.events.model import Event
from sc_proto.identifiers import UserID

logger = logging.getLogger(__name__)

MAX_BACKFILL = 100
"""Most events asked for in one ``/backfill`` request."""


class Backfiller:
    """Fetches and inserts older history of a room (see the module docstring).

    Args:
        pool: the database pool.
        events: the event store.
        state: the room-state reader (heads).
        room_input: the room input (its per-room queue, fetcher and auth-event check).
        server_name: our server name (we never ask ourselves).
        time_msec: the clock.
    """

    def __init__(
        self,
        pool: DatabasePool,
        events: EventStore,
        state: RoomStateReader,
        room_input: RoomInput,
        server_name: str,
        time_msec: Callable[[], int],
    ) -> None:
        self._pool = pool
        self._events = events
        self._state = state
        self._input = room_input
        self._server_name = server_name
        self._now = time_msec
        self._insert_lock = DeferredLock()  # negative stream orderings are allocated as MIN - 1

    async def backfill(self, room_id: str, limit: int) -> int:
        """Fetches up to ``limit`` events older than the room's oldest timeline event.

        Returns:
            How many events were inserted (0: nothing older to fetch, or no server answered).
        """
        async with self._input.queue.queue(room_id):
            head = await self._state.get_head(room_id)
            if head is None:
                return 0
            oldest = await self._events.get_room_event_orderings(
                head.room.room_nid, from_key=None, to_key=None, backwards=False, limit=1
            )
            start = await self._events.get_event(oldest[0]) if oldest else None
            if start is None or start.state_group_before is None or not start.event.prev_event_ids:
                return 0
            known = await self._events.get_events(start.event.prev_event_ids)
            if len(known) == len(set(start.event.prev_event_ids)):
                return 0  # nothing missing before it (older events we hold are outliers: left hidden)
            pdus = await self._fetch(room_id, self._servers(head.state), start.event.event_id, limit)
            fresh = await self._checked(room_id, pdus, head)
            if not fresh:
                return 0
            received = self._now()
            async with self._insert_lock:
                inserted = await self._pool.run_txn(
                    "backfill", self._insert_txn, head.room.room_nid, fresh, start.state_group_before, received
                )
            for stored in inserted:
                self._events.cache_event(stored)
            logger.info("backfilled %d events", len(inserted), extra={"room_id": room_id})
            return len(inserted)

    def _servers(self, state: StateMap) -> list[str]:
        """Servers of the room's members (from the state keys), ours excluded, in a stable order."""
        servers: dict[str, None] = {}
        for etype, state_key in state:
            if etype != "m.room.member":
                continue
            try:
                domain = UserID.parse(state_key, historical=True).domain
            except ValueError:
                continue
            if domain != self._server_name:
                servers[domain] = None
        return list(servers)

    async def _fetch(self, room_id: str, servers: Sequence[str], from_id: str, limit: int) -> list[dict[str, Any]]:
        fetcher = self._input.fetcher
        for server in servers:
            try:
                return list(await fetcher.backfill(server, room_id, [from_id], min(limit, MAX_BACKFILL)))
            except MatrixError as e:
                logger.info("backfill from %s failed: %s", server, e.errcode, extra={"room_id": room_id})
        return []

    async def _checked(self, room_id: str, pdus: Sequence[dict[str, Any]], head: RoomHead) -> list[Event]:
        """The fetched events we do not hold yet that pass the auth rules against their auth events."""
        rv = head.version
        parsed: dict[str, Event] = {}
        for pdu in pdus:
            try:
                event = Event.from_pdu(pdu, rv)
            except InvalidEventError:
                continue
            if event.room_id == room_id:
                parsed[event.event_id] = event
        known = await self._events.get_events(parsed)
        fresh = []
        for event in parsed.values():
            if event.event_id in known:
                continue
            reason = await self._input.check_own_auth_events(event, head)
            if reason is not None:
                logger.info("not backfilling %s: %s", event.event_id, reason, extra={"room_id": room_id})
                continue
            fresh.append(event)
        return fresh

    def _insert_txn(
        self, txn: Txn, room_nid: int, events: Sequence[Event], state_group: int, received: int
    ) -> list[StoredEvent]:
        low = EventStore.lowest_stream_ordering_txn(txn)
        inserted = []
        # Newest first, so that within a depth the stream order follows the fetched order.
        for event in sorted(events, key=lambda e: (e.depth, e.event_id), reverse=True):
            low -= 1
            stored = StoredEvent(
                event=event, stream_ordering=low, room_nid=room_nid, outlier=False, rejected_reason=None,
                state_group_before=state_group, state_group_after=state_group, redacted_by=None,
                txn_id=None, device_id=None, received_ts=received,
            )
            self._events.insert_event_txn(txn, stored)
            inserted.append(stored)
        return inserted
