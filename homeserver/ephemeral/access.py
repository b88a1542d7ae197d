"""Membership checks shared by the typing and receipt services."""

from __future__ import annotations

from typing import Protocol

from homeserver.rooms.messages import RoomHead
from homeserver.storage.stores.events import StoredEvent
from homeserver.storage.stores.state_groups import StateMap
from sc_proto.errors import Codes, MatrixError
from sc_proto.events.model import Event, StateKey

MEMBER = "m.room.member"


class RoomHeads(Protocol):
    """What the checks need from :class:`homeserver.rooms.messages.EventCreator`."""

    async def get_head(self, room_id: str) -> RoomHead | None:
        """The room's current head, or None for an unknown room."""
        ...

    async def get_state_events(self, state: StateMap, keys: list[StateKey] | None = None) -> dict[StateKey, Event]:
        """Loads the events of ``state`` (only ``keys``)."""
        ...

    async def get_current_member(self, room_id: str, user_id: str) -> StoredEvent | None:
        """The user's current member event (:meth:`homeserver.rooms.state_reader.RoomStateReader.get_current_member`)."""
        ...


async def get_current_member_event(heads: RoomHeads, room_id: str, user_id: str) -> Event | None:
    """The user's current ``m.room.member`` event in the room (None: unknown room or never a member)."""
    member = await heads.get_current_member(room_id, user_id)
    return None if member is None else member.event


async def require_joined(heads: RoomHeads, room_id: str, user_id: str) -> Event:
    """Returns the user's member event when they are joined to the room.

    Raises:
        MatrixError: 403 ``M_FORBIDDEN`` otherwise (an unknown room looks the same, so room IDs do not
            leak).
    """
    member = await get_current_member_event(heads, room_id, user_id)
    if member is None or member.membership != "join":
        raise MatrixError(403, Codes.FORBIDDEN, "You are not a member of this room")
    return member
