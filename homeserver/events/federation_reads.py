"""Reads of the event graph served to other servers (implements
:class:`homeserver.api.services.RoomHistoryAPI`; issue 13, docs/adr/0014-federation-inbound.md).

Theory of operation: every read walks the graph through :class:`EventStore.get_events` (batched and
cached), one breadth-first layer per query, and stops at its limit, so a hostile ``limit`` or a deep
room costs at most ``limit`` events. Rejected events are invisible here: we never hand them to other
servers. Visibility for a server follows the history-visibility rules the spec gives for users,
with "a member of that server" in place of "the user" (as Synapse's ``filter_events_for_server``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from homeserver.rooms.state_reader import RoomStateReader
from homeserver.rooms.visibility import HISTORY_VISIBILITY_TYPE, INVITED, JOINED, MEMBER_TYPE, visibility_of
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.rooms import RoomStore
from homeserver.storage.stores.state_groups import StateGroupStore, StateMap
from sc_proto.errors import InvalidIdentifierError
from sc_proto.events.model import Event
from sc_proto.events.redaction import redact
from sc_proto.identifiers import UserID

MAX_WALK = 10_000
"""Upper bound on any walk, whatever limit a caller passes."""


def _domain(user_id: str) -> str | None:
    try:
        return UserID.parse(user_id, historical=True).domain
    except InvalidIdentifierError:
        return None


class RoomHistoryReader:
    """Graph reads for the federation servlets.

    Args:
        events: the event store.
        rooms: the room store (current state, members).
        state_groups: the state-group store.
        state: the room-state reader (current heads).
    """

    def __init__(self, events: EventStore, rooms: RoomStore, state_groups: StateGroupStore, state: RoomStateReader) -> None:
        self._events = events
        self._rooms = rooms
        self._state_groups = state_groups
        self._state = state

    @staticmethod
    def _served(stored: StoredEvent) -> Event:
        """The event as other servers may see it: redacted once a redaction took effect on it."""
        event = stored.event
        if stored.redacted_by is None:
            return event
        return Event(redact(event.pdu, event.room_version), event.room_version, event.event_id)

    async def _usable(self, event_ids: Collection[str]) -> dict[str, StoredEvent]:
        found = await self._events.get_events(event_ids)
        return {e: s for e, s in found.items() if s.rejected_reason is None}

    async def get_room_version(self, room_id: str) -> str | None:
        """The room's version identifier, or None."""
        room = await self._rooms.get_room(room_id)
        return None if room is None else room.room_version

    async def get_current_state_event(self, room_id: str, event_type: str, state_key: str) -> Event | None:
        """The current state event at ``(event_type, state_key)``, or None."""
        head = await self._state.get_head(room_id)
        if head is None:
            return None
        found = await self._state.get_state_events(head.state, [(event_type, state_key)])
        return found.get((event_type, state_key))

    async def get_events(self, event_ids: Collection[str]) -> dict[str, Event]:
        """The known, non-rejected events among ``event_ids``."""
        return {e: self._served(s) for e, s in (await self._usable(list(event_ids)[:MAX_WALK])).items()}

    async def get_state_ids_before(self, room_id: str, event_id: str) -> list[str] | None:
        """The state before ``event_id`` as event IDs, or None."""
        stored = (await self._usable([event_id])).get(event_id)
        if stored is None or stored.event.room_id != room_id or stored.outlier:
            return None
        if stored.state_group_before is None:
            # Only a create event has an empty state before it.
            return [] if stored.event.type == "m.room.create" and not stored.event.prev_event_ids else None
        return sorted((await self._state_groups.get_state(stored.state_group_before)).values())

    async def get_auth_chain_ids(self, event_ids: Collection[str], limit: int) -> list[str]:
        """The auth chain of ``event_ids``, at most ``limit`` IDs: an input is in it only when it is an
        auth event of another input (or of their auth events)."""
        limit = max(0, min(limit, MAX_WALK))
        seen: dict[str, None] = {}
        frontier = list((await self._usable(list(event_ids))).values())
        while frontier and len(seen) < limit:
            wanted = {a for s in frontier for a in s.event.auth_event_ids if a not in seen}
            if not wanted:
                break
            loaded = await self._usable(sorted(wanted))
            frontier = []
            for event_id in sorted(loaded):
                if len(seen) >= limit:
                    break
                seen[event_id] = None
                frontier.append(loaded[event_id])
        return list(seen)

    async def _walk_back(
        self, room_id: str, start: set[str], limit: int, stop: frozenset[str]
    ) -> dict[str, StoredEvent]:
        """Breadth-first over ``prev_events`` from ``start`` (never into ``stop``), at most ``limit``
        usable events of the room, in walk order (each layer deepest first)."""
        found: dict[str, StoredEvent] = {}
        frontier = sorted(start - stop)
        while frontier and len(found) < limit:
            loaded = await self._usable(frontier)
            layer = sorted(
                (s for s in loaded.values() if s.event.room_id == room_id and s.event_id not in found),
                key=lambda s: (-s.depth, s.event_id),
            )
            for stored in layer[: limit - len(found)]:
                found[stored.event_id] = stored
            frontier = sorted({p for s in layer for p in s.event.prev_event_ids if p not in found and p not in stop})
        return found

    async def get_backfill(self, room_id: str, from_event_ids: Collection[str], limit: int) -> list[Event]:
        """``from_event_ids`` and their ancestors, at most ``limit``, newest first."""
        limit = max(0, min(limit, MAX_WALK))
        found = await self._walk_back(room_id, set(from_event_ids), limit, frozenset())
        # Depth first; among equal depths the walk's order (children before parents) decides.
        order = {e: i for i, e in enumerate(found)}
        return [self._served(s) for s in sorted(found.values(), key=lambda s: (-s.depth, order[s.event_id]))]

    async def get_missing_events(
        self, room_id: str, earliest: Collection[str], latest: Collection[str], limit: int
    ) -> list[Event]:
        """Ancestors of ``latest`` (excluded), not walking past ``earliest``; oldest first."""
        limit = max(0, min(limit, MAX_WALK))
        stop = frozenset(earliest) | frozenset(latest)
        starts = [s for s in (await self._usable(list(latest))).values() if s.event.room_id == room_id]
        found = await self._walk_back(room_id, {p for s in starts for p in s.event.prev_event_ids}, limit, stop)
        order = {e: i for i, e in enumerate(found)}
        return [self._served(s) for s in sorted(found.values(), key=lambda s: (s.depth, -order[s.event_id]))]

    async def get_event_at_timestamp(self, room_id: str, ts: int, forwards: bool) -> Event | None:
        """The timeline event closest to ``ts`` in the given direction, or None."""
        room = await self._rooms.get_room(room_id)
        if room is None:
            return None
        event_id = await self._events.get_event_at_timestamp(room.room_nid, ts, forwards)
        if event_id is None:
            return None
        stored = (await self._usable([event_id])).get(event_id)
        return None if stored is None else self._served(stored)

    async def is_server_in_room(self, server_name: str, room_id: str) -> bool:
        """Whether ``server_name`` has a joined member in the room now."""
        room = await self._rooms.get_room(room_id)
        if room is None:
            return False
        members = await self._rooms.get_members(room.room_nid, ("join",))
        return any(_domain(u) == server_name for u in members)

    async def server_can_see_event(self, server_name: str, event_id: str) -> bool:
        """History visibility of ``event_id`` for ``server_name`` (see the Protocol)."""
        stored = (await self._usable([event_id])).get(event_id)
        if stored is None:
            return False
        event = stored.event
        state = await self._state_for_visibility(stored)
        memberships = await self._server_memberships(state, server_name)
        if event.type == MEMBER_TYPE and event.state_key is not None and _domain(event.state_key) == server_name:
            own = event.membership
            if own is not None:
                memberships.add(own)
        in_room = "join" in memberships or await self.is_server_in_room(server_name, event.room_id)
        if not in_room:
            return False
        visibility = await self._visibility(state)
        if visibility == JOINED:
            return "join" in memberships
        if visibility == INVITED:
            return bool(memberships & {"join", "invite"})
        return True

    async def _state_for_visibility(self, stored: StoredEvent) -> StateMap:
        group = stored.state_group_before if stored.state_group_before is not None else stored.state_group_after
        if group is not None:
            return await self._state_groups.get_state(group)
        # An outlier has no state of its own: judge it by the room's current state.
        head = await self._state.get_head(stored.event.room_id)
        return head.state if head is not None else {}

    async def _visibility(self, state: StateMap) -> str:
        found = await self._state.get_state_events(state, [(HISTORY_VISIBILITY_TYPE, "")])
        hv = found.get((HISTORY_VISIBILITY_TYPE, ""))
        return visibility_of(hv.content if hv is not None else None)

    async def _server_memberships(self, state: Mapping[tuple[str, str], str], server_name: str) -> set[str]:
        keys = [k for k in state if k[0] == MEMBER_TYPE and _domain(k[1]) == server_name]
        events = await self._state.get_state_events(dict(state), keys)
        return {m for e in events.values() if (m := e.membership) is not None}
