"""Event creation facade: today's entry point for local events, delegating to the split write path.

Theory of operation: the write path is three parts (docs/adr/0006-room-input.md):

* :class:`~homeserver.rooms.state_reader.RoomStateReader`: the per-room head cache (current state,
  forward extremities, depth) with its in-flight-load guard, and the one current-membership helper;
* :class:`~homeserver.rooms.event_builder.LocalEventBuilder`: auth-event selection, build and sign;
* :class:`~homeserver.events.input_queue.RoomInput`: the per-room queue, auth against the state
  before, event checks, persist and head advance, for local events and received PDUs alike.

:class:`EventCreator` keeps the public methods its callers use (``send``, ``create_room``,
``get_head``, ``get_state_events``, ``queue``, ``event_checks``, ``server_name``) and forwards them.
A rejected event (403) and an oversized one (413) are never stored. A client transaction ID is checked
inside the room's turn, so a retried request that races the original still yields one event.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from homeserver.api.ports import RemoteEventFetcher
from homeserver.events.input_queue import EventCheck, RoomInput
from homeserver.events.persister import EventPersister, TxnKey
from homeserver.rooms.event_builder import MAX_PREV_EVENTS, LocalEventBuilder
from homeserver.rooms.state_reader import RoomHead, RoomStateReader
from homeserver.storage.ids import IdAllocator
from homeserver.storage.pool import DatabasePool
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.rooms import RoomStore
from homeserver.storage.stores.state_groups import StateGroupStore, StateMap
from homeserver.util.linearizer import Linearizer
from sc_proto.crypto.keys import SigningKey
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import RoomVersion

__all__ = ["MAX_PREV_EVENTS", "EventCreator", "RoomHead"]


class EventCreator:
    """Creates and persists local events (a facade over the room input).

    Args:
        server_name: our server name (the event origin and signer).
        signing_key: our signing key.
        pool: the database pool.
        events: the event store.
        rooms: the room store.
        state_groups: the state-group store.
        persister: writes events.
        room_nids: allocator of room ids.
        time_msec: the clock.
        head_cache_size: how many room heads to cache.
        fetcher: asks other servers for missing events (received PDUs).
    """

    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        pool: DatabasePool,
        events: EventStore,
        rooms: RoomStore,
        state_groups: StateGroupStore,
        persister: EventPersister,
        room_nids: IdAllocator,
        time_msec: Callable[[], int],
        head_cache_size: int = 10_000,
        fetcher: RemoteEventFetcher | None = None,
    ) -> None:
        self.server_name = server_name
        self.state = RoomStateReader(events, rooms, head_cache_size)
        self.builder = LocalEventBuilder(server_name, signing_key, self.state, time_msec)
        self.input = RoomInput(
            pool, events, rooms, state_groups, self.state, self.builder, persister, room_nids, time_msec, fetcher
        )

    @property
    def queue(self) -> Linearizer:
        """The room input's per-room queue."""
        return self.input.queue

    @property
    def event_checks(self) -> list[EventCheck]:
        """Checks every locally created event passes (see :attr:`RoomInput.event_checks`)."""
        return self.input.event_checks

    @property
    def _heads(self) -> OrderedDict[str, RoomHead]:
        """The cached heads (tests clear it to simulate eviction)."""
        return self.state.heads

    async def get_head(self, room_id: str) -> RoomHead | None:
        """The room's current head (cached), or None for a room we do not have."""
        return await self.state.get_head(room_id)

    async def get_state_events(self, state: StateMap, keys: list[StateKey] | None = None) -> dict[StateKey, Event]:
        """Loads the events of ``state`` (all, or only ``keys``) as ``(type, state_key) -> Event``."""
        return await self.state.get_state_events(state, keys)

    async def get_current_member(self, room_id: str, user_id: str) -> StoredEvent | None:
        """The user's current member event (:meth:`RoomStateReader.get_current_member`)."""
        return await self.state.get_current_member(room_id, user_id)

    async def send(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        txn: TxnKey | None = None,
        redacts: str | None = None,
        extra_users: frozenset[str] = frozenset(),
        check: Callable[[RoomHead, dict[StateKey, Event]], Any] | None = None,
        before_persist: Callable[[Event], Awaitable[Event]] | None = None,
    ) -> StoredEvent:
        """Creates, authorises and persists one event in ``room_id`` (see :meth:`RoomInput.send_local`).

        Args:
            check: an extra check run inside the room's turn with the head and the auth state; raise to refuse.
            before_persist: awaited with the authorised event inside the room's turn; returns the
                event to persist instead (the same event ID), e.g. an invite countersigned by the
                invitee's server (``RemoteRoomMembership.invite``). Raise to refuse.

        Raises:
            MatrixError: 404 when the room is unknown, 403 when the auth rules refuse the event,
                413 when it is too large.
        """
        return await self.input.send_local(
            room_id, sender, event_type, content, state_key=state_key, txn=txn, redacts=redacts,
            extra_users=extra_users, check=check, before_persist=before_persist,
        )

    async def create_room(
        self, creator: str, room_version: RoomVersion, create_content: Mapping[str, Any], legacy_room_id: str | None
    ) -> StoredEvent:
        """Creates a room with its ``m.room.create`` event and returns that event."""
        return await self.input.create_room(creator, room_version, create_content, legacy_room_id)
