"""Room aliases: create, resolve and delete local aliases; check ``m.room.canonical_alias`` content.

Only aliases on our own server name are kept here (spec client-server-api, "Room aliases": servers
reject maintaining aliases of other domains). Other servers' aliases are resolved through the
:class:`~homeserver.api.ports.RemoteDirectoryQuerier` port (ADR 0009; without federation: 404).

Permissions (the spec lets servers choose them):

* create: a user joined to the room, or a server admin;
* delete: the alias's creator, a user allowed to send ``m.room.canonical_alias`` in the room, or a
  server admin. Deleting an alias also removes it from the room's canonical alias event when the
  deleter may update that event (the spec recommends the deletion to succeed either way);
* list a room's local aliases: joined members, anyone when the room is ``world_readable``, admins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from homeserver.api.local import LocalOnlyDirectoryQuerier
from homeserver.api.ports import RemoteDirectoryQuerier
from homeserver.identity import LocalServer, domain_of, require_room_alias, require_room_id
from homeserver.rooms.messages import EventCreator, RoomHead
from homeserver.rooms.state_reader import RoomStateReader
from homeserver.storage.stores.room_directory import RoomDirectoryStore
from homeserver.storage.stores.rooms import RoomStore
from sc_proto.auth.power_levels import get_required_level, get_user_power_level
from sc_proto.errors import Codes, MatrixError
from sc_proto.events.model import Event, StateKey
from sc_proto.identifiers import RoomAlias

logger = logging.getLogger(__name__)

CANONICAL_ALIAS = "m.room.canonical_alias"




def may_send_state(head: RoomHead, state: Mapping[StateKey, Event], user_id: str, event_type: str) -> bool:
    """Whether ``user_id`` is joined and has the power to send the state event ``event_type``."""
    if RoomStateReader.membership_in(state, user_id) != "join":
        return False
    pl = state.get(("m.room.power_levels", ""))
    create = state.get(("m.room.create", ""))
    level = get_user_power_level(user_id, pl, create, head.version)
    return level >= get_required_level(event_type, "", pl, head.version)


def canonical_aliases_of(content: Mapping[str, Any]) -> list[str]:
    """Every alias an ``m.room.canonical_alias`` content names (``alias`` first), unchecked."""
    found: list[str] = []
    alias = content.get("alias")
    if isinstance(alias, str) and alias:
        found.append(alias)
    alt = content.get("alt_aliases")
    if isinstance(alt, list):
        found.extend(a for a in alt if isinstance(a, str))
    return found


class RoomAliasService:
    """Manages local room aliases.

    Args:
        server_name: our server name (the only alias domain we keep).
        creator: the event creator (room heads; canonical alias updates).
        rooms: the room store (alias rows, members).
        directory: batch alias lookups.
        time_msec: the clock.
        remote: resolves other servers' aliases (local-only: 404).
    """

    def __init__(
        self,
        server_name: str,
        creator: EventCreator,
        rooms: RoomStore,
        directory: RoomDirectoryStore,
        time_msec: Callable[[], int],
        *,
        remote: RemoteDirectoryQuerier | None = None,
    ) -> None:
        self._remote: RemoteDirectoryQuerier = remote or LocalOnlyDirectoryQuerier()
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._creator = creator
        self._rooms = rooms
        self._directory = directory
        self._now = time_msec

    def _local_alias(self, value: object) -> str:
        alias = require_room_alias(value)
        if not self._local.is_mine(alias):
            raise MatrixError(400, Codes.INVALID_PARAM, "Room alias must be on this server")
        return str(alias)

    async def _head_and_state(self, room_id: str) -> tuple[RoomHead, dict[StateKey, Event]] | None:
        head = await self._creator.get_head(room_id)
        if head is None:
            return None
        return head, await self._creator.get_state_events(head.state)

    async def create_alias(self, user_id: str, is_admin: bool, alias_value: object, room_id_value: object) -> str:
        """Points a new local alias at a room; returns the alias.

        Raises:
            MatrixError: 400 malformed or foreign alias / room ID, 404 unknown room, 403 not joined,
                409 ``M_UNKNOWN`` the alias exists.
        """
        alias = self._local_alias(alias_value)
        room_id = str(require_room_id(room_id_value))
        found = await self._head_and_state(room_id)
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room not found")
        # NOTSPEC: the spec sets no rule for who may create aliases; we require membership so nobody
        # can squat names for rooms they are not in.
        if not is_admin and RoomStateReader.membership_in(found[1], user_id) != "join":
            raise MatrixError(403, Codes.FORBIDDEN, "You must be joined to the room to give it an alias")
        if not await self._rooms.create_alias(alias, room_id, user_id, self._now()):
            raise MatrixError(409, Codes.UNKNOWN, f"Room alias {alias} already exists")
        logger.info("alias created", extra={"room_id": room_id, "user_id": user_id})
        return alias

    async def resolve_alias(self, alias_value: object) -> tuple[str, list[str]]:
        """``(room_id, servers)`` for an alias; servers are those with joined members, ours first.

        Raises:
            MatrixError: 400 malformed alias, 404 unknown alias.
        """
        alias = require_room_alias(alias_value)
        if not self._local.is_mine(alias):
            return await self._remote.resolve_alias(str(alias))
        found = await self.get_alias_target(str(alias))
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {alias} not found")
        return found

    async def get_alias_target(self, alias: str) -> tuple[str, list[str]] | None:
        """``(room_id, servers)`` of one of our aliases (servers with joined members, ours first), or None."""
        found = await self._rooms.get_alias(alias)
        if found is None:
            return None
        room_id = found[0]
        servers = [self._server_name]
        room = await self._rooms.get_room(room_id)
        if room is not None:
            members = await self._rooms.get_members(room.room_nid, ("join",))
            domains = {d for d in map(domain_of, members) if d is not None}
            servers += sorted(domains - {self._server_name})
        return room_id, servers

    async def delete_alias(self, user_id: str, is_admin: bool, alias_value: object) -> None:
        """Deletes a local alias and drops it from the room's canonical alias event if it can.

        Raises:
            MatrixError: 400 malformed or foreign alias, 404 unknown alias, 403 not allowed.
        """
        alias = self._local_alias(alias_value)
        found = await self._rooms.get_alias(alias)
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {alias} not found")
        room_id, alias_creator = found
        state = await self._head_and_state(room_id)
        may_update = state is not None and may_send_state(state[0], state[1], user_id, CANONICAL_ALIAS)
        if not (is_admin or user_id == alias_creator or may_update):
            raise MatrixError(403, Codes.FORBIDDEN, "You may not delete this alias")
        await self._rooms.delete_alias(alias)
        logger.info("alias deleted", extra={"room_id": room_id, "user_id": user_id})
        if state is not None:
            await self.remove_from_canonical_alias(user_id, room_id, state[1], {alias})

    async def remove_from_canonical_alias(
        self, sender: str, room_id: str, state: Mapping[StateKey, Event], aliases: set[str]
    ) -> None:
        """Sends a canonical alias event without ``aliases``, if the current one names any of them.

        Failures (the sender may not update the event) are logged and ignored, as the spec
        recommends for alias deletion.
        """
        event = state.get((CANONICAL_ALIAS, ""))
        if event is None or not aliases.intersection(canonical_aliases_of(event.content)):
            return
        content = dict(event.content)
        if content.get("alias") in aliases:
            del content["alias"]
        alt = content.get("alt_aliases")
        if isinstance(alt, list):
            content["alt_aliases"] = [a for a in alt if a not in aliases]
            if not content["alt_aliases"]:
                del content["alt_aliases"]
        try:
            await self._creator.send(room_id, sender, CANONICAL_ALIAS, content, state_key="")
        except MatrixError as e:
            logger.info("could not update the canonical alias after an alias change: %s", e.errcode.value,
                        extra={"room_id": room_id})

    async def get_local_aliases(self, user_id: str, is_admin: bool, room_id_value: object) -> list[str]:
        """The local aliases of a room.

        Raises:
            MatrixError: 400 malformed room ID, 403 not a member of a room that is not world-readable
                (also for unknown rooms, which reveals nothing about their existence).
        """
        room_id = str(require_room_id(room_id_value))
        found = await self._head_and_state(room_id)
        if found is None:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a member of the room")
        visibility = found[1].get(("m.room.history_visibility", ""))
        world_readable = visibility is not None and visibility.content.get("history_visibility") == "world_readable"
        if not (is_admin or world_readable or RoomStateReader.membership_in(found[1], user_id) == "join"):
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a member of the room")
        return await self._rooms.get_aliases_for_room(room_id)

    async def check_canonical_alias_content(self, room_id: str, content: Mapping[str, Any]) -> None:
        """Checks an ``m.room.canonical_alias`` content a client wants to send.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for malformed aliases, 400 ``M_BAD_ALIAS`` for
                aliases that do not point at ``room_id``.
        """
        named: list[RoomAlias] = []
        alias = content.get("alias")
        if alias is not None and alias != "":
            named.append(require_room_alias(alias))
        alt = content.get("alt_aliases")
        if alt is not None:
            if not isinstance(alt, list):
                raise MatrixError(400, Codes.INVALID_PARAM, "'alt_aliases' must be a list of room aliases")
            named.extend(require_room_alias(a) for a in alt)
        targets = await self._directory.get_alias_rooms([str(a) for a in named if self._local.is_mine(a)])
        for parsed in named:
            if not self._local.is_mine(parsed):
                targets[str(parsed)] = await self._remote_alias_room(parsed)
        for parsed in named:
            if targets.get(str(parsed)) != room_id:
                raise MatrixError(400, Codes.BAD_ALIAS, f"The alias {parsed} does not point to this room")

    async def _remote_alias_room(self, alias: RoomAlias) -> str:
        """The room another server's alias points at, through the directory port.

        Raises:
            MatrixError: 400 ``M_BAD_ALIAS`` when it cannot be resolved (every published alias is
                verified: an alias we cannot check is refused).
        """
        try:
            room_id, _servers = await self._remote.resolve_alias(str(alias))
        except MatrixError:
            raise MatrixError(400, Codes.BAD_ALIAS, f"Cannot verify that {alias} points to this room") from None
        return room_id
