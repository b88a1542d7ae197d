"""Room upgrades: ``POST /rooms/{roomId}/upgrade`` (spec client-server-api, "Room Upgrades").

Theory of operation, following the spec's server behaviour list:

1. the upgrader must be joined and able to send ``m.room.tombstone`` in the old room;
2. a replacement room is created whose ``m.room.create`` names the old room as ``predecessor``
   (with its last event) and copies its ``type`` (and ``m.federate``); ``additional_creators`` are
   set only from the request, when the new version has them;
3. the upgrader joins, then the power levels (made valid for the new version: integer levels only,
   and no creators listed when creators are privileged, v12+) and the transferable state
   (:data:`TRANSFERABLE_STATE`) are copied. When the upgrader's copied level is below what the copied
   state needs, the power levels are first sent with the upgrader raised and restored at the end;
4. local aliases move to the new room, the canonical alias follows them (and leaves the old room),
   and the directory listing moves too;
5. ``m.room.tombstone`` goes into the old room;
6. the old room's ``events_default`` and ``invite`` are raised to at least ``max(50,
   users_default + 1)`` so the old room quietens down.

Upgrades of one room are serialised; a retried request after a successful upgrade (same user, same
version) returns the replacement room instead of creating another.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from homeserver.identity import LocalServer, require_room_id
from homeserver.rooms.aliases import CANONICAL_ALIAS, RoomAliasService, may_send_state
from homeserver.rooms.membership import JOIN, MembershipService
from homeserver.rooms.messages import EventCreator, RoomHead
from homeserver.storage.stores.room_directory import RoomDirectoryStore
from homeserver.storage.stores.rooms import RoomStore
from homeserver.util.linearizer import Linearizer
from sc_proto.auth.power_levels import get_user_power_level, is_valid_user_id, parse_power_level
from sc_proto.errors import Codes, MatrixError, UnsupportedRoomVersionError
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import RoomVersion, get_room_version

logger = logging.getLogger(__name__)

POWER_LEVELS = "m.room.power_levels"
TOMBSTONE = "m.room.tombstone"

# Copied to the replacement room (the spec's recommended list, minus power levels handled apart).
TRANSFERABLE_STATE = (
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
)
_NAMED_LEVELS = ("ban", "kick", "redact", "invite", "events_default", "state_default", "users_default")
_LEVEL_MAPS = ("events", "users", "notifications")
_MAX_SAFE_INT = 2**53 - 1


def parse_new_version(value: object) -> RoomVersion:
    """The requested room version (400 ``M_UNSUPPORTED_ROOM_VERSION`` when unknown)."""
    try:
        return get_room_version(value)
    except UnsupportedRoomVersionError:
        raise MatrixError(400, Codes.UNSUPPORTED_ROOM_VERSION, "This server does not support that room version") from None


def parse_additional_creators(value: object, upgrader: str) -> tuple[str, ...]:
    """Validates ``additional_creators`` (400 ``M_INVALID_PARAM`` unless a list of user IDs)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(u, str) and is_valid_user_id(u) for u in value):
        raise MatrixError(400, Codes.INVALID_PARAM, "'additional_creators' must be a list of user IDs")
    return tuple(u for u in dict.fromkeys(value) if u != upgrader)


def _clamp(level: int) -> int:
    return max(-_MAX_SAFE_INT, min(_MAX_SAFE_INT, level))


def portable_power_levels(content: Mapping[str, Any], old: RoomVersion) -> dict[str, Any]:
    """Power-levels content valid in any room version: integer levels, valid user IDs, known keys."""
    out: dict[str, Any] = {}
    for key in _NAMED_LEVELS:
        level = parse_power_level(content.get(key), old)
        if level is not None:
            out[key] = _clamp(level)
    for key in _LEVEL_MAPS:
        raw = content.get(key)
        if not isinstance(raw, Mapping):
            continue
        levels: dict[str, int] = {}
        for name, value in raw.items():
            level = parse_power_level(value, old)
            if not isinstance(name, str) or level is None or (key == "users" and not is_valid_user_id(name)):
                continue
            levels[name] = _clamp(level)
        out[key] = levels
    return out


def adapt_join_rules(content: Mapping[str, Any], rv: RoomVersion) -> dict[str, Any]:
    """Join rules the new version supports (a rule it lacks falls back to ``invite``)."""
    rule = content.get("join_rule")
    supported = {"public", "invite", "private"}
    if rv.knock_join_rule:
        supported.add("knock")
    if rv.restricted_join_rule:
        supported.add("restricted")
    if rv.knock_restricted_join_rule:
        supported.add("knock_restricted")
    adapted = dict(content)
    if rule not in supported:
        adapted["join_rule"] = "invite"
        adapted.pop("allow", None)
    return adapted


def _highest_level(pl: Mapping[str, Any]) -> int:
    """The level that lets a user send every event an upgrade copies (at least 100)."""
    levels: list[int] = [int(v) for k, v in pl.items() if k in _NAMED_LEVELS and k != "users_default"]
    events: Mapping[str, int] = pl.get("events", {})
    state_default = int(pl.get("state_default", 50))
    levels.extend(int(events.get(t, state_default)) for t in (*TRANSFERABLE_STATE, POWER_LEVELS, CANONICAL_ALIAS))
    return max([100, *levels])


class RoomUpgradeService:
    """Upgrades rooms to new room versions.

    Args:
        server_name: our server name.
        creator: the event creator.
        membership: joins the upgrader to the new room.
        rooms: room records and directory visibility.
        directory: alias moves.
        aliases: canonical alias updates.
    """

    def __init__(
        self,
        server_name: str,
        creator: EventCreator,
        membership: MembershipService,
        rooms: RoomStore,
        directory: RoomDirectoryStore,
        aliases: RoomAliasService,
    ) -> None:
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._creator = creator
        self._membership = membership
        self._rooms = rooms
        self._directory = directory
        self._aliases = aliases
        self._in_progress = Linearizer("room_upgrade")

    async def upgrade(self, user_id: str, room_id_value: object, new_version: object, additional_creators: object) -> str:
        """Upgrades a room; returns the replacement room's ID.

        Raises:
            MatrixError: 400 unknown version / bad input, 404 unknown room, 403 not allowed.
        """
        room_id = str(require_room_id(room_id_value))
        rv = parse_new_version(new_version)
        extra_creators = parse_additional_creators(additional_creators, user_id) if rv.privileged_creators else ()
        async with self._in_progress.queue(room_id):
            head = await self._creator.get_head(room_id)
            if head is None:
                raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
            state = await self._creator.get_state_events(head.state)
            if not may_send_state(head, state, user_id, TOMBSTONE):
                raise MatrixError(403, Codes.FORBIDDEN, "You cannot upgrade this room")
            previous = await self._previous_upgrade(room_id, state, user_id, rv)
            if previous is not None:
                return previous
            new_room_id = await self._create_replacement(head, state, user_id, rv, extra_creators)
            await self._move_aliases(user_id, room_id, new_room_id, state)
            await self._creator.send(
                room_id, user_id, TOMBSTONE,
                {"body": "This room has been replaced", "replacement_room": new_room_id}, state_key="",
            )
            await self._restrict_old_room(user_id, room_id)
        logger.info("room upgraded", extra={"room_id": room_id, "user_id": user_id})
        return new_room_id

    async def _previous_upgrade(
        self, room_id: str, state: Mapping[StateKey, Event], user_id: str, rv: RoomVersion
    ) -> str | None:
        """The replacement room of an earlier identical upgrade (a retried request), if any."""
        tombstone = state.get((TOMBSTONE, ""))
        if tombstone is None or tombstone.sender != user_id:
            return None
        replacement = tombstone.content.get("replacement_room")
        if not isinstance(replacement, str):
            return None
        new_head = await self._creator.get_head(replacement)
        if new_head is None or new_head.version is not rv:
            return None
        create = (await self._creator.get_state_events(new_head.state, [("m.room.create", "")])).get(("m.room.create", ""))
        predecessor = create.content.get("predecessor") if create is not None else None
        if isinstance(predecessor, Mapping) and predecessor.get("room_id") == room_id:
            return replacement
        return None

    async def _create_replacement(
        self, head: RoomHead, state: Mapping[StateKey, Event], user_id: str, rv: RoomVersion,
        extra_creators: tuple[str, ...],
    ) -> str:
        old_create = state[("m.room.create", "")]
        content: dict[str, Any] = {"predecessor": {"room_id": head.room.room_id, "event_id": head.extremities[-1]}}
        for key in ("type", "m.federate"):
            if key in old_create.content:
                content[key] = old_create.content[key]
        if extra_creators:
            content["additional_creators"] = list(extra_creators)
        legacy_id = self._local.new_legacy_room_id()
        create = await self._creator.create_room(user_id, rv, content, legacy_id)
        new_room_id = create.event.room_id
        await self._membership.update_membership(user_id, new_room_id, user_id, JOIN)

        old_pl = state.get((POWER_LEVELS, ""))
        final_pl = portable_power_levels(old_pl.content if old_pl is not None else {}, head.version)
        users: dict[str, int] = final_pl.setdefault("users", {})
        if rv.privileged_creators:
            for creator in (user_id, *extra_creators):
                users.pop(creator, None)
            first_pl = final_pl
        else:
            level = get_user_power_level(user_id, old_pl, old_create, head.version)
            users[user_id] = 100 if math.isinf(level) else _clamp(int(level))
            first_pl = final_pl
            if users[user_id] < _highest_level(final_pl):
                first_pl = {**final_pl, "users": {**users, user_id: _highest_level(final_pl)}}
        await self._creator.send(new_room_id, user_id, POWER_LEVELS, first_pl, state_key="")
        for etype in TRANSFERABLE_STATE:
            event = state.get((etype, ""))
            if event is None:
                continue
            copied = adapt_join_rules(event.content, rv) if etype == "m.room.join_rules" else dict(event.content)
            try:
                await self._creator.send(new_room_id, user_id, etype, copied, state_key="")
            except MatrixError as e:
                logger.warning("upgrade: could not copy %s: %s", etype, e.errcode.value, extra={"room_id": new_room_id})
        if first_pl is not final_pl:
            await self._creator.send(new_room_id, user_id, POWER_LEVELS, final_pl, state_key="")
        return new_room_id

    async def _move_aliases(self, user_id: str, old_room_id: str, new_room_id: str, state: Mapping[StateKey, Event]) -> None:
        moved = await self._directory.move_aliases(old_room_id, new_room_id)
        old_room = await self._rooms.get_room(old_room_id)
        if old_room is not None and old_room.is_public:
            await self._rooms.set_room_public(new_room_id, True)
            await self._rooms.set_room_public(old_room_id, False)
        canonical = state.get((CANONICAL_ALIAS, ""))
        if canonical is None or not moved:
            return
        content: dict[str, Any] = {}
        alias = canonical.content.get("alias")
        if alias in moved:
            content["alias"] = alias
        alt = canonical.content.get("alt_aliases")
        if isinstance(alt, list):
            kept = [a for a in alt if a in moved]
            if kept:
                content["alt_aliases"] = kept
        if content:
            await self._creator.send(new_room_id, user_id, CANONICAL_ALIAS, content, state_key="")
        await self._aliases.remove_from_canonical_alias(user_id, old_room_id, state, set(moved))

    async def _restrict_old_room(self, user_id: str, room_id: str) -> None:
        head = await self._creator.get_head(room_id)
        if head is None:
            return
        pl_event = (await self._creator.get_state_events(head.state, [(POWER_LEVELS, "")])).get((POWER_LEVELS, ""))
        content = dict(pl_event.content) if pl_event is not None else {}
        users_default = parse_power_level(content.get("users_default", 0), head.version) or 0
        floor = max(50, users_default + 1)
        changed = False
        for key, default in (("events_default", 0), ("invite", 0)):
            current = parse_power_level(content.get(key, default), head.version)
            if current is None or current < floor:
                content[key] = floor
                changed = True
        if not changed:
            return
        try:
            await self._creator.send(room_id, user_id, POWER_LEVELS, content, state_key="")
        except MatrixError as e:
            logger.warning("upgrade: could not restrict the old room: %s", e.errcode.value, extra={"room_id": room_id})
