"""The core's :class:`~homeserver.api.services.RoomDirectoryAPI` for the federation query servlets.

Answers ``/query/directory`` (our aliases only) and ``/publicRooms`` (our published rooms) from the
same services the client API uses, so both APIs agree.
"""

from __future__ import annotations

from typing import Any

from homeserver.identity import LocalServer
from homeserver.rooms.aliases import RoomAliasService
from homeserver.rooms.directory import PublicRoomsQuery, RoomDirectoryService
from sc_proto.errors import InvalidIdentifierError
from sc_proto.identifiers import RoomAlias

JsonDict = dict[str, Any]


class LocalDirectoryReader:
    """Our aliases and published rooms, for adapters (satisfies ``RoomDirectoryAPI``).

    Args:
        server_name: our server name.
        aliases: the alias service.
        directory: the published room directory.
    """

    def __init__(self, server_name: str, aliases: RoomAliasService, directory: RoomDirectoryService) -> None:
        self._local = LocalServer(server_name)
        self._aliases = aliases
        self._directory = directory

    async def get_local_alias(self, alias: str) -> tuple[str, list[str]] | None:
        """``(room_id, servers)`` of one of our aliases; None for unknown, malformed or foreign ones."""
        try:
            parsed = RoomAlias.parse(alias)
        except InvalidIdentifierError:
            return None
        if not self._local.is_mine(parsed):
            return None
        found = await self._aliases.get_alias_target(str(parsed))
        return found

    async def list_public_rooms(
        self,
        limit: int | None,
        since: str | None,
        search_term: str | None = None,
        room_types: tuple[str | None, ...] | None = None,
    ) -> JsonDict:
        """Our published rooms, as ``GET/POST /publicRooms`` answers them."""
        query = PublicRoomsQuery(limit=limit or None, since=since, search_term=search_term, room_types=room_types)
        return await self._directory.list_public_rooms(query)
