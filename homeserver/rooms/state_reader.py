"""The room-state reader: each room's head (current state, forward extremities, depth), cached.

Theory of operation: the write path and the readers that need "the room right now" (membership
checks, ``/state``, ``/joined_members``) read the head from memory; the head is loaded from the
database on a miss and replaced by the room input (:mod:`homeserver.events.input_queue`) after each
persist (PERFORMANCE.md, "reading what you just wrote").

Invariant: a cached head is never older than the last head the room input installed. A load may run
outside the room's queue turn and reads in several transactions; if the room's head advanced while it
was in flight, the load may mix old and new rows, so it is returned to its caller but never cached over
the newer head (``tests/homeserver/test_review_heads.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.rooms import RoomRecord, RoomStore
from homeserver.storage.stores.state_groups import StateMap
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import RoomVersion, get_room_version

MEMBER = "m.room.member"


@dataclass(frozen=True)
class RoomHead:
    """What the write path needs to know about a room right now.

    Attributes:
        room: the room row.
        version: its room version.
        state_group: the state group of ``state`` when it is the state after the single forward
            extremity; None when the room has several extremities (``state`` is then their
            resolution, which has no group of its own yet) or none.
        state: the room's current state, ``(type, state_key) -> event_id``.
        extremities: the forward extremities (the prev events of the next local event).
        max_depth: the greatest depth among the extremities.
    """

    room: RoomRecord
    version: RoomVersion
    state_group: int | None
    state: StateMap
    extremities: tuple[str, ...]
    max_depth: int


class RoomStateReader:
    """Reads rooms' current state through a per-room head cache.

    Args:
        events: the event store.
        rooms: the room store (current state and forward extremities).
        head_cache_size: how many heads to keep (LRU).
    """

    def __init__(self, events: EventStore, rooms: RoomStore, head_cache_size: int = 10_000) -> None:
        self._events = events
        self._rooms = rooms
        self.heads: OrderedDict[str, RoomHead] = OrderedDict()
        """The cached heads, least recently used first."""
        self._head_cache_size = head_cache_size
        self._head_loads: dict[str, list[int]] = {}
        """Per room with head loads in flight: ``[loads in flight, heads advanced since the first]``."""

    async def get_head(self, room_id: str) -> RoomHead | None:
        """The room's current head (cached), or None for a room we do not have.

        See the module docstring for the in-flight-load guard.
        """
        head = self.heads.get(room_id)
        if head is not None:
            self.heads.move_to_end(room_id)
            return head
        loads = self._head_loads.setdefault(room_id, [0, 0])
        loads[0] += 1
        advanced_before = loads[1]
        try:
            head = await self._load_head(room_id)
        finally:
            loads[0] -= 1
            advanced = loads[1] != advanced_before
            if loads[0] == 0:
                del self._head_loads[room_id]
        if head is None:
            return None
        if advanced:
            return self.heads.get(room_id, head)
        self._remember(head)
        return head

    async def _load_head(self, room_id: str) -> RoomHead | None:
        room = await self._rooms.get_room(room_id)
        if room is None:
            return None
        state = await self._rooms.get_current_state_ids(room.room_nid)
        extremities = await self._rooms.get_forward_extremities(room.room_nid)
        stored = await self._events.get_events(extremities)
        depth = max((s.depth for s in stored.values()), default=0)
        group: int | None = None
        if len(stored) == 1:
            group = next(iter(stored.values())).state_group_after
        return RoomHead(room, get_room_version(room.room_version), group, state, tuple(extremities), depth)

    def _remember(self, head: RoomHead) -> None:
        self.heads[head.room.room_id] = head
        self.heads.move_to_end(head.room.room_id)
        while len(self.heads) > self._head_cache_size:
            self.heads.popitem(last=False)

    def install_head(self, head: RoomHead) -> None:
        """Installs the head the room input has just persisted (call only in the room's turn)."""
        loads = self._head_loads.get(head.room.room_id)
        if loads is not None:
            loads[1] += 1  # loads in flight may have read rows from before this event: do not cache them
        self._remember(head)

    async def get_state_events(self, state: StateMap, keys: list[StateKey] | None = None) -> dict[StateKey, Event]:
        """Loads the events of ``state`` (all, or only ``keys``) as ``(type, state_key) -> Event``."""
        wanted = {k: state[k] for k in (keys if keys is not None else state) if k in state}
        stored = await self._events.get_events(wanted.values())
        return {k: stored[e].event for k, e in wanted.items() if e in stored}

    async def get_current_member(
        self, room_id: str, user_id: str, head: RoomHead | None = None
    ) -> StoredEvent | None:
        """The user's current ``m.room.member`` event in the room (None: unknown room or no member event).

        The one place that answers "current membership" from a room's current state; callers that
        hold the room's full state already use :meth:`membership_in` (the same answer from the same
        state).

        Args:
            room_id: the room.
            user_id: the member (local or remote).
            head: the room's head when the caller has just read it (so both answers come from the
                same state); read here when not given.
        """
        if head is None:
            head = await self.get_head(room_id)
        if head is None:
            return None
        event_id = head.state.get((MEMBER, user_id))
        if event_id is None:
            return None
        return await self._events.get_event(event_id)

    async def get_membership(self, room_id: str, user_id: str, head: RoomHead | None = None) -> str | None:
        """The current membership of ``user_id`` in ``room_id`` (``join``, ``invite``, ``leave``,
        ``ban``, ``knock``), or None when the user has no member event or the room is unknown."""
        member = await self.get_current_member(room_id, user_id, head)
        return None if member is None else member.event.membership

    @staticmethod
    def membership_in(state: Mapping[StateKey, Event], user_id: str) -> str | None:
        """The membership of ``user_id`` in already loaded state events (None: no member event).

        For callers that loaded the whole state for other reasons (power levels, join rules): it
        answers as :meth:`get_membership` does for the same state.
        """
        member = state.get((MEMBER, user_id))
        return None if member is None else member.membership
