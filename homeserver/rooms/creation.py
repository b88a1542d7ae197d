"""``POST /createRoom``: presets, initial state, invites, aliases (spec client-server-api "Creation").

The events are sent in the order the spec lists: create, the creator's join, power levels (with
``power_level_content_override``), canonical alias, the preset's join rules / history visibility /
guest access, ``initial_state``, name, topic, then invites. Each is authorised like any other event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from homeserver.identity import LocalServer, require_user_id
from homeserver.rooms.membership import INVITE, JOIN, MembershipService
from homeserver.rooms.messages import EventCreator
from homeserver.storage.stores.rooms import RoomStore
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError, UnsupportedRoomVersionError
from sc_proto.room_versions import DEFAULT_ROOM_VERSION, RoomVersion, get_room_version

PRESETS = ("private_chat", "trusted_private_chat", "public_chat")


def _require(cond: bool, message: str, errcode: Codes = Codes.BAD_JSON) -> None:
    if not cond:
        raise MatrixError(400, errcode, message)


def default_power_levels(creator: str, rv: RoomVersion, preset: str, invitees: list[str]) -> dict[str, Any]:
    """The power levels a new room starts with (before ``power_level_content_override``)."""
    users: dict[str, int] = {}
    if not rv.privileged_creators:
        users[creator] = 100
    if preset == "trusted_private_chat":
        for invitee in invitees:
            users[invitee] = 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0 if preset != "public_chat" else 50,
        "notifications": {"room": 50},
    }


class RoomCreationService:
    """Creates rooms for local users.

    Args:
        server_name: our server name.
        creator: the event creator.
        membership: sends the creator's join and the invites.
        rooms: aliases and the directory.
        time_msec: the clock.
    """

    def __init__(
        self,
        server_name: str,
        creator: EventCreator,
        membership: MembershipService,
        rooms: RoomStore,
        time_msec: Callable[[], int],
    ) -> None:
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._creator = creator
        self._membership = membership
        self._rooms = rooms
        self._now = time_msec

    async def create_room(self, user_id: str, body: Mapping[str, Any]) -> tuple[str, str | None]:
        """Creates a room from a ``/createRoom`` body; returns ``(room_id, room_alias)``.

        Raises:
            MatrixError: 400 for malformed bodies or unknown room versions/presets, 400
                ``M_ROOM_IN_USE`` for a taken alias.
        """
        rv = self._room_version(body.get("room_version"))
        visibility = body.get("visibility", "private")
        _require(visibility in ("public", "private"), "'visibility' must be 'public' or 'private'", Codes.INVALID_PARAM)
        preset = body.get("preset", "public_chat" if visibility == "public" else "private_chat")
        _require(preset in PRESETS, f"'preset' must be one of {', '.join(PRESETS)}", Codes.INVALID_PARAM)
        invitees = [str(require_user_id(u, "invite")) for u in self._list(body, "invite")]
        initial_state = self._initial_state(body)
        creation_content = body.get("creation_content", {})
        _require(isinstance(creation_content, Mapping), "'creation_content' must be an object")
        pl_override = body.get("power_level_content_override")
        _require(pl_override is None or isinstance(pl_override, Mapping), "'power_level_content_override' must be an object")
        for key in ("name", "topic"):
            _require(body.get(key) is None or isinstance(body.get(key), str), f"'{key}' must be a string")
        is_direct = body.get("is_direct", False)
        _require(isinstance(is_direct, bool), "'is_direct' must be a boolean")
        alias = await self._reserve_alias_name(body.get("room_alias_name"))

        legacy_id = self._local.new_legacy_room_id()
        create_content = {k: v for k, v in creation_content.items() if k not in ("room_version", "creator")}
        create = await self._creator.create_room(user_id, rv, create_content, legacy_id)
        room_id = create.event.room_id
        await self._membership.update_membership(user_id, room_id, user_id, JOIN)
        power = default_power_levels(user_id, rv, preset, invitees)
        if pl_override:
            power.update(dict(pl_override))
        await self._state(room_id, user_id, "m.room.power_levels", power)
        if alias is not None:
            if not await self._rooms.create_alias(alias, room_id, user_id, self._now()):
                raise MatrixError(400, Codes.ROOM_IN_USE, "Room alias already taken")
            await self._state(room_id, user_id, "m.room.canonical_alias", {"alias": alias})
        preset_state: dict[tuple[str, str], Mapping[str, Any]] = {
            ("m.room.join_rules", ""): {"join_rule": "public" if preset == "public_chat" else "invite"},
            ("m.room.history_visibility", ""): {"history_visibility": "shared"},
        }
        if preset != "public_chat":
            preset_state[("m.room.guest_access", "")] = {"guest_access": "can_join"}
        for (etype, skey), content in preset_state.items():
            if (etype, skey) not in initial_state:
                await self._state(room_id, user_id, etype, content, skey)
        for (etype, skey), content in initial_state.items():
            await self._state(room_id, user_id, etype, content, skey)
        if body.get("name") is not None:
            await self._state(room_id, user_id, "m.room.name", {"name": body["name"]})
        if body.get("topic") is not None:
            await self._state(room_id, user_id, "m.room.topic", {"topic": body["topic"]})
        for invitee in invitees:
            await self._membership.update_membership(user_id, room_id, invitee, INVITE, is_direct=is_direct or None)
        if visibility == "public":
            await self._rooms.set_room_public(room_id, True)
        return room_id, alias

    async def _state(self, room_id: str, sender: str, etype: str, content: Mapping[str, Any], skey: str = "") -> None:
        await self._creator.send(room_id, sender, etype, content, state_key=skey)

    @staticmethod
    def _room_version(value: object) -> RoomVersion:
        if value is None:
            return DEFAULT_ROOM_VERSION
        try:
            return get_room_version(value)
        except UnsupportedRoomVersionError:
            raise MatrixError(400, Codes.UNSUPPORTED_ROOM_VERSION, f"Unsupported room version {value!r}") from None

    @staticmethod
    def _list(body: Mapping[str, Any], key: str) -> list[Any]:
        value = body.get(key, [])
        _require(isinstance(value, list), f"'{key}' must be a list")
        return list(value)

    def _initial_state(self, body: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
        state: dict[tuple[str, str], Mapping[str, Any]] = {}
        for item in self._list(body, "initial_state"):
            _require(isinstance(item, Mapping), "'initial_state' entries must be objects")
            etype, skey, content = item.get("type"), item.get("state_key", ""), item.get("content")
            _require(isinstance(etype, str) and isinstance(skey, str), "'initial_state' entries need type and state_key strings")
            _require(isinstance(content, Mapping), "'initial_state' entries need a content object")
            _require(etype not in ("m.room.create", "m.room.member", "m.room.power_levels"),
                     f"'initial_state' may not set {etype}")
            state[(etype, skey)] = content
        return state

    async def _reserve_alias_name(self, name: object) -> str | None:
        if name is None:
            return None
        _require(isinstance(name, str) and bool(name), "'room_alias_name' must be a non-empty string", Codes.INVALID_PARAM)
        assert isinstance(name, str)
        _require(":" not in name and not any(c.isspace() for c in name) and "#" not in name,
                 "'room_alias_name' must be a bare localpart", Codes.INVALID_PARAM)
        try:
            alias = self._local.alias(name)
        except InvalidIdentifierError:
            raise MatrixError(400, Codes.INVALID_PARAM, "Room alias is too long") from None
        if await self._rooms.get_alias(alias) is not None:
            raise MatrixError(400, Codes.ROOM_IN_USE, "Room alias already taken")
        return alias


