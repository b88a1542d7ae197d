"""The core's :class:`~homeserver.api.services.MembershipAPI` for adapters (federation, drive, calls).

Reads current memberships from the room store (``room_members``, kept with current state), so an
adapter never touches the store itself.
"""

from __future__ import annotations

from homeserver.storage.stores.rooms import RoomStore
from sc_proto.errors import InvalidIdentifierError
from sc_proto.identifiers import UserID

JOIN = "join"


class RoomMembershipReader:
    """Answers membership questions about rooms (satisfies ``MembershipAPI``).

    Args:
        rooms: the room store.
    """

    def __init__(self, rooms: RoomStore) -> None:
        self._rooms = rooms

    async def is_joined(self, room_id: str, user_id: str) -> bool:
        """Whether ``user_id`` is joined to ``room_id`` right now (False for unknown rooms)."""
        room = await self._rooms.get_room(room_id)
        if room is None:
            return False
        return user_id in await self._rooms.get_members(room.room_nid, (JOIN,))

    async def get_joined_servers(self, room_id: str) -> set[str]:
        """The server names of the room's joined members (empty for unknown rooms)."""
        room = await self._rooms.get_room(room_id)
        if room is None:
            return set()
        servers: set[str] = set()
        for user_id in await self._rooms.get_members(room.room_nid, (JOIN,)):
            try:
                servers.add(UserID.parse(user_id, historical=True).domain)
            except InvalidIdentifierError:
                continue  # never stored by us; a remote server's malformed member is not a destination
        return servers

    async def get_joined_rooms(self, user_id: str) -> list[str]:
        """The room IDs ``user_id`` is joined to, sorted."""
        nids = await self._rooms.get_rooms_for_user(user_id)
        rooms = await self._rooms.get_rooms_by_nid(list(nids))
        return sorted(r.room_id for r in rooms.values())
