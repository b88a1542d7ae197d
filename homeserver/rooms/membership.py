"""Membership changes of local users: join, invite, leave, kick, ban, unban, knock, forget.

Every change is an ``m.room.member`` event created through :class:`~homeserver.rooms.messages.EventCreator`,
so the authorization rules of the room's version decide (join rules, bans, power levels, knocking,
restricted rooms). For a restricted room (v8+) the server also checks that the joiner is in one of the
allowed rooms and names a local user who may invite as ``join_authorised_via_users_server``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from homeserver.rooms.messages import EventCreator, RoomHead
from homeserver.storage.stores.events import StoredEvent
from homeserver.storage.stores.profiles import ProfileStore
from homeserver.storage.stores.rooms import RoomStore
from sc_proto.auth.power_levels import get_named_level, get_user_power_level
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.events.model import Event, StateKey
from sc_proto.identifiers import UserID

logger = logging.getLogger(__name__)

JOIN = "join"
INVITE = "invite"
LEAVE = "leave"
BAN = "ban"
KNOCK = "knock"


def parse_user_id(value: object, what: str = "user_id") -> str:
    """Validates a user ID from a request body (400 ``M_INVALID_PARAM`` otherwise)."""
    try:
        return str(UserID.parse(value, historical=True))
    except InvalidIdentifierError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"'{what}' is not a valid user ID") from None


class MembershipService:
    """Changes local users' memberships.

    Args:
        server_name: our server name.
        creator: the event creator.
        rooms: the room store.
        profiles: the profile store (displayname/avatar in join events).
    """

    def __init__(self, server_name: str, creator: EventCreator, rooms: RoomStore, profiles: ProfileStore) -> None:
        self._server_name = server_name
        self._creator = creator
        self._rooms = rooms
        self._profiles = profiles

    def _is_local(self, user_id: str) -> bool:
        return user_id.rsplit(":", 1)[-1] == self._server_name if ":" in user_id else False

    async def _profile_content(self, user_id: str) -> dict[str, Any]:
        profile = await self._profiles.get_profile(user_id)
        content: dict[str, Any] = {}
        if profile is not None:
            if profile.displayname:
                content["displayname"] = profile.displayname
            if profile.avatar_url:
                content["avatar_url"] = profile.avatar_url
        return content

    async def update_membership(
        self,
        sender: str,
        room_id: str,
        target: str,
        membership: str,
        *,
        reason: str | None = None,
        is_direct: bool | None = None,
        extra_content: Mapping[str, Any] | None = None,
    ) -> StoredEvent:
        """Sends the ``m.room.member`` event that moves ``target`` to ``membership``.

        Raises:
            MatrixError: 404 unknown room, 403 refused by the rules, 400 bad input.
        """
        if membership == INVITE and not self._is_local(target):
            # NOTSPEC: inviting users of other servers needs federation (not yet built).
            raise MatrixError(400, Codes.UNKNOWN, "Inviting users of other servers is not supported yet")
        content: dict[str, Any] = dict(extra_content or {})
        content["membership"] = membership
        if membership in (JOIN, INVITE, KNOCK) and self._is_local(target):
            for key, value in (await self._profile_content(target)).items():
                content.setdefault(key, value)
        if reason is not None:
            content["reason"] = reason
        if is_direct is not None and membership == INVITE:
            content["is_direct"] = is_direct
        stored = await self._creator.send(
            room_id,
            sender,
            "m.room.member",
            content,
            state_key=target,
            extra_users=frozenset({target}),
        )
        if membership == JOIN:
            head = await self._creator.get_head(room_id)
            if head is not None:
                await self._rooms.unforget_room(target, head.room.room_nid)
        return stored

    async def join(self, user_id: str, room_id: str, reason: str | None = None) -> StoredEvent:
        """Joins ``user_id`` to a room this server knows (remote joins need federation)."""
        head = await self._creator.get_head(room_id)
        if head is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No known room with that ID or alias")
        extra = await self._restricted_join_content(head, user_id)
        return await self.update_membership(user_id, room_id, user_id, JOIN, reason=reason, extra_content=extra)

    async def _restricted_join_content(self, head: RoomHead, user_id: str) -> dict[str, Any] | None:
        """``join_authorised_via_users_server`` for a join that needs it (restricted rooms, v8+)."""
        rv = head.version
        state = await self._creator.get_state_events(head.state)
        join_rules = state.get(("m.room.join_rules", ""))
        rule = join_rules.content.get("join_rule") if join_rules else None
        restricted = (rule == "restricted" and rv.restricted_join_rule) or (
            rule == "knock_restricted" and rv.knock_restricted_join_rule
        )
        current = state.get(("m.room.member", user_id))
        if not restricted or (current is not None and current.membership in (JOIN, INVITE)):
            return None
        allow = join_rules.content.get("allow") if join_rules else None
        allowed_rooms = [
            a.get("room_id") for a in (allow if isinstance(allow, list) else [])
            if isinstance(a, Mapping) and a.get("type") == "m.room_membership" and isinstance(a.get("room_id"), str)
        ]
        joined = await self._rooms.get_rooms_for_user(user_id)
        joined_ids = {r.room_id for r in (await self._rooms.get_rooms_by_nid(list(joined))).values()}
        if not any(r in joined_ids for r in allowed_rooms):
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a member of a room that grants access to this one")
        authoriser = self._pick_authoriser(head, state)
        if authoriser is None:
            raise MatrixError(400, Codes.UNABLE_TO_AUTHORISE_JOIN, "No local user can authorise this join")
        return {"join_authorised_via_users_server": authoriser}

    def _pick_authoriser(self, head: RoomHead, state: Mapping[StateKey, Event]) -> str | None:
        pl = state.get(("m.room.power_levels", ""))
        create = state.get(("m.room.create", ""))
        invite_level = get_named_level(pl, "invite", 0, head.version)
        for (etype, skey), event in sorted(state.items()):
            if etype != "m.room.member" or event.membership != JOIN or not self._is_local(skey):
                continue
            if get_user_power_level(skey, pl, create, head.version) >= invite_level:
                return skey
        return None

    async def refresh_profile_in_rooms(self, user_id: str) -> None:
        """Sends ``user_id``'s current displayname/avatar into each joined room's member event.

        A room where the update fails (e.g. the user lacks power to change their own member event)
        is logged and skipped; the profile change itself already succeeded.
        """
        profile = await self._profile_content(user_id)
        joined = await self._rooms.get_rooms_for_user(user_id)
        rooms = await self._rooms.get_rooms_by_nid(sorted(joined))
        for room in rooms.values():
            head = await self._creator.get_head(room.room_id)
            if head is None:
                continue
            current = (await self._creator.get_state_events(head.state, [("m.room.member", user_id)])).get(
                ("m.room.member", user_id)
            )
            if current is None or current.membership != JOIN:
                continue
            content = {k: v for k, v in current.content.items() if k not in ("displayname", "avatar_url", "reason")}
            content.update(profile)
            if content == dict(current.content):
                continue
            try:
                await self._creator.send(room.room_id, user_id, "m.room.member", content, state_key=user_id)
            except MatrixError as e:
                logger.warning("could not update profile in a room: %s", e.message, extra={"room_id": room.room_id})

    async def leave_all_rooms(self, user_id: str) -> None:
        """Leaves (or declines) every room where ``user_id`` is joined, invited or knocking."""
        rooms_by_nid = await self._rooms.get_rooms_for_user(user_id, (JOIN, INVITE, KNOCK))
        rooms = await self._rooms.get_rooms_by_nid(sorted(rooms_by_nid))
        for room in rooms.values():
            try:
                await self.update_membership(user_id, room.room_id, user_id, LEAVE)
            except MatrixError as e:
                logger.warning("could not leave a room: %s", e.message, extra={"room_id": room.room_id})

    async def forget(self, user_id: str, room_id: str) -> None:
        """Forgets a room the user has left (400 while still joined or invited)."""
        head = await self._creator.get_head(room_id)
        if head is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        member_id = head.state.get(("m.room.member", user_id))
        if member_id is None:
            raise MatrixError(404, Codes.NOT_FOUND, "You were never in this room")
        events = await self._creator.get_state_events(head.state, [("m.room.member", user_id)])
        membership = events[("m.room.member", user_id)].membership
        if membership in (JOIN, INVITE, KNOCK):
            raise MatrixError(400, Codes.UNKNOWN, "You must leave the room before forgetting it")
        await self._rooms.forget_room(user_id, head.room.room_nid)
