"""Membership changes of local users: join, invite, leave, kick, ban, unban, knock, forget.

Every change is an ``m.room.member`` event created through :class:`~homeserver.rooms.messages.EventCreator`,
so the authorization rules of the room's version decide (join rules, bans, power levels, knocking,
restricted rooms). For a restricted room (v8+) the server also checks that the joiner is in one of the
allowed rooms and names a local user who may invite as ``join_authorised_via_users_server``.

Remote work goes through the :class:`~homeserver.api.ports.RemoteRoomMembership` port (ADR 0009):
joining or knocking on a room this server does not know, through the servers the client named
(``via``/``server_name``) or the alias's servers, and inviting users of other servers (the invite
event is built and authorised here, countersigned by the invitee's server through the port, then
persisted). Without federation the port refuses with the errors clients always got.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from homeserver.api.local import LocalOnlyMembership
from homeserver.api.ports import RemoteRoomMembership
from homeserver.identity import LocalServer, require_room_id
from homeserver.rooms.messages import EventCreator, RoomHead
from homeserver.rooms.state_reader import RoomStateReader
from homeserver.storage.stores.events import StoredEvent
from homeserver.storage.stores.profiles import ProfileStore
from homeserver.storage.stores.rooms import RoomStore
from sc_proto.auth.power_levels import get_named_level, get_user_power_level
from sc_proto.errors import Codes, InvalidEventError, InvalidIdentifierError, MatrixError
from sc_proto.events.model import Event, StateKey
from sc_proto.identifiers import RoomAlias, RoomID, UserID

logger = logging.getLogger(__name__)

JOIN = "join"
INVITE = "invite"
LEAVE = "leave"
BAN = "ban"
KNOCK = "knock"

INVITE_ROOM_STATE_KEYS: tuple[StateKey, ...] = (
    ("m.room.create", ""),
    ("m.room.name", ""),
    ("m.room.avatar", ""),
    ("m.room.topic", ""),
    ("m.room.join_rules", ""),
    ("m.room.canonical_alias", ""),
    ("m.room.encryption", ""),
)
"""The stripped state sent with an invite to another server (spec "Stripped state")."""

AliasResolver = Callable[[str], Awaitable[tuple[str, list[str]]]]
"""``resolve(alias) -> (room_id, servers)``, local or through the directory port (404 when unknown)."""




class MembershipService:
    """Changes local users' memberships.

    Args:
        server_name: our server name.
        creator: the event creator.
        rooms: the room store.
        profiles: the profile store (displayname/avatar in join events).
        remote: the remote membership port (local-only: remote work is refused).
        resolve_alias: resolves ``#alias:server`` for joins and knocks (local aliases only when not
            given).
    """

    def __init__(
        self,
        server_name: str,
        creator: EventCreator,
        rooms: RoomStore,
        profiles: ProfileStore,
        *,
        remote: RemoteRoomMembership | None = None,
        resolve_alias: AliasResolver | None = None,
    ) -> None:
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._creator = creator
        self._rooms = rooms
        self._profiles = profiles
        self._remote: RemoteRoomMembership = remote or LocalOnlyMembership()
        self._resolve_alias = resolve_alias or self._resolve_local_alias

    def _is_local(self, user_id: str) -> bool:
        return self._local.is_mine(user_id)

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
        content: dict[str, Any] = dict(extra_content or {})
        content["membership"] = membership
        if membership in (JOIN, INVITE, KNOCK) and self._is_local(target):
            for key, value in (await self._profile_content(target)).items():
                content.setdefault(key, value)
        if reason is not None:
            content["reason"] = reason
        if is_direct is not None and membership == INVITE:
            content["is_direct"] = is_direct
        if membership == LEAVE and sender == target and self._is_local(target):
            remote_leave = await self._remote_leave(room_id, target)
            if remote_leave is not None:
                return remote_leave
        countersign = None
        if membership == INVITE and not self._is_local(target):
            countersign = await self._remote_invite_signer(room_id, sender)
        stored = await self._creator.send(
            room_id,
            sender,
            "m.room.member",
            content,
            state_key=target,
            extra_users=frozenset({target}),
            before_persist=countersign,
        )
        if membership == JOIN:
            head = await self._creator.get_head(room_id)
            if head is not None:
                await self._rooms.unforget_room(target, head.room.room_nid)
        return stored

    async def _remote_invite_signer(self, room_id: str, sender: str) -> Callable[[Event], Awaitable[Event]]:
        """The ``before_persist`` step of an invite to another server's user: the port countersigns it.

        Raises:
            MatrixError: 404 unknown room; whatever the port raises (local-only: 400 ``M_UNKNOWN``).
        """
        head = await self._creator.get_head(room_id)
        if head is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        keys = [*INVITE_ROOM_STATE_KEYS, ("m.room.member", sender)]
        state = await self._creator.get_state_events(head.state, keys)
        # Spec v1.16 ("Inviting to a room"): invite_room_state entries are whole PDUs in the room
        # version's format and include m.room.create (Synapse warns about, and for room versions
        # past 11 refuses, stripped entries); the receiver strips them for its clients.
        room_state = [dict(state[k].pdu) for k in keys if k in state]

        async def countersign(event: Event) -> Event:
            signed = await self._remote.invite(event.room_version.identifier, dict(event.pdu), room_state)
            try:
                returned = Event.from_pdu(signed, event.room_version)
            except InvalidEventError:
                returned = None
            if returned is None or returned.event_id != event.event_id:
                raise MatrixError(502, Codes.UNKNOWN, "The invitee's server returned a different invite event")
            return returned

        return countersign

    async def _servers_if_not_in_room(self, head: RoomHead | None, user_id: str) -> list[str] | None:
        """None when the room's membership changes are ours to make (one of our users is joined, or
        the room is local and nobody else is in it); otherwise the servers to go through: the
        server of whoever invited ``user_id`` (or let them knock), the senders of the stripped state
        stored with that invite or knock, the joined members' servers, the room ID's domain.

        A room we hold only through an out-of-band membership (no create event) is never ours.
        """
        if head is None:
            return []
        joined = await self._rooms.get_members(head.room.room_nid, (JOIN,))
        if any(self._is_local(u) for u in joined):
            return None
        servers: list[str] = []
        own = head.state.get(("m.room.member", user_id))
        if own is not None:
            events = await self._creator.get_state_events(head.state, [("m.room.member", user_id)])
            found = events.get(("m.room.member", user_id))
            if found is not None and found.membership in (INVITE, KNOCK):
                servers.append(_domain(found.sender))
                # The stripped state our server was given names servers in the room (a knock was
                # sent by us, so its own sender says nothing).
                stripped = found.unsigned.get(f"{found.membership}_room_state")
                for entry in stripped if isinstance(stripped, list) else []:
                    if isinstance(entry, Mapping) and isinstance(entry.get("sender"), str):
                        servers.append(_domain(entry["sender"]))
        servers.extend(_domain(u) for u in sorted(joined))
        room_domain = _room_domain(head.room.room_id)
        if room_domain is not None:
            servers.append(room_domain)
        servers = [s for s in dict.fromkeys(servers) if s and s != self._server_name]
        if not servers and ("m.room.create", "") in head.state:
            return None
        return servers

    async def _remote_leave(self, room_id: str, user_id: str) -> StoredEvent | None:
        """Leaves (or declines an invite to) a room we are not in through the port; None when the
        leave is a local event (we are in the room, or it is a local room)."""
        head = await self._creator.get_head(room_id)
        servers = await self._servers_if_not_in_room(head, user_id)
        if head is None or servers is None:
            return None
        if not servers:
            raise MatrixError(404, Codes.NOT_FOUND, "No server to leave this room through")
        pdu = await self._remote.leave(servers, room_id, user_id)
        try:
            event_id = Event.from_pdu(pdu, head.version).event_id
        except InvalidEventError:
            raise MatrixError(502, Codes.UNKNOWN, "The remote server returned a malformed leave event") from None
        stored = await self._creator.input.get_stored_event(event_id)
        if stored is None:
            raise MatrixError(502, Codes.UNKNOWN, "The leave event was not stored")
        return stored

    async def _resolve_local_alias(self, alias: str) -> tuple[str, list[str]]:
        found = await self._rooms.get_alias(alias)
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room alias not found")
        return found[0], [self._server_name]

    async def _resolve_target(self, room_id_or_alias: str, servers: Sequence[str]) -> tuple[str, list[str]]:
        """``(room_id, candidate servers)`` for ``/join`` and ``/knock``'s ``{roomIdOrAlias}``."""
        if room_id_or_alias.startswith("#"):
            try:
                RoomAlias.parse(room_id_or_alias)
            except InvalidIdentifierError:
                raise MatrixError(400, Codes.INVALID_PARAM, "Invalid room alias") from None
            room_id, alias_servers = await self._resolve_alias(room_id_or_alias)
            return room_id, [*servers, *alias_servers]
        return str(require_room_id(room_id_or_alias)), list(servers)

    def _remote_servers(self, servers: Sequence[str]) -> list[str]:
        return [s for s in dict.fromkeys(servers) if s != self._server_name]

    async def join_room(
        self, user_id: str, room_id_or_alias: str, *, servers: Sequence[str] = (), reason: str | None = None
    ) -> str:
        """Joins ``user_id`` to a room by ID or alias; returns the room ID.

        A room this server does not know is joined through the remote membership port, via
        ``servers`` (the request's ``via``/``server_name``) and, for an alias, the alias's servers.
        The port's adapter persists what the join returns (ADR 0009).

        Raises:
            MatrixError: 400 malformed ID or alias, 404 unknown room or alias, 403 refused.
        """
        room_id, candidates = await self._resolve_target(room_id_or_alias, servers)
        extra = await self._servers_if_not_in_room(await self._creator.get_head(room_id), user_id)
        if extra is None:
            await self.join(user_id, room_id, reason)
            return room_id
        remote = self._remote_servers([*candidates, *extra])
        if not remote:
            raise MatrixError(404, Codes.NOT_FOUND, "No known room with that ID or alias")
        content: dict[str, Any] = {"membership": JOIN, **(await self._profile_content(user_id))}
        if reason is not None:
            content["reason"] = reason
        await self._remote.join(remote, room_id, user_id, content)
        head = await self._creator.get_head(room_id)
        if head is not None:
            await self._rooms.unforget_room(user_id, head.room.room_nid)
        return room_id

    async def knock_room(
        self, user_id: str, room_id_or_alias: str, *, servers: Sequence[str] = (), reason: str | None = None
    ) -> str:
        """Knocks on a room by ID or alias (through the port when the room is unknown); returns its ID.

        Raises:
            MatrixError: 400 malformed ID or alias, 404 unknown room or alias, 403 refused.
        """
        room_id, candidates = await self._resolve_target(room_id_or_alias, servers)
        extra = await self._servers_if_not_in_room(await self._creator.get_head(room_id), user_id)
        remote = self._remote_servers([*candidates, *(extra or [])])
        if remote and extra is not None:
            content: dict[str, Any] = {"membership": KNOCK, **(await self._profile_content(user_id))}
            if reason is not None:
                content["reason"] = reason
            await self._remote.knock(remote, room_id, user_id, content)
            return room_id
        await self.update_membership(user_id, room_id, user_id, KNOCK, reason=reason)
        return room_id

    async def kick(self, sender: str, room_id: str, target: str, reason: str | None = None) -> StoredEvent:
        """Kicks ``target`` (joined, invited or knocking) out of the room.

        Raises:
            MatrixError: 404 unknown room, 403 the target is not in the room or the rules refuse.
        """
        await self._require_membership(room_id, target, (JOIN, INVITE, KNOCK), "kick")
        return await self.update_membership(sender, room_id, target, LEAVE, reason=reason)

    async def ban(self, sender: str, room_id: str, target: str, reason: str | None = None) -> StoredEvent:
        """Bans ``target`` from the room (whatever their membership).

        Raises:
            MatrixError: 404 unknown room, 403 refused by the rules.
        """
        return await self.update_membership(sender, room_id, target, BAN, reason=reason)

    async def unban(self, sender: str, room_id: str, target: str, reason: str | None = None) -> StoredEvent:
        """Lifts ``target``'s ban (their membership becomes ``leave``).

        Raises:
            MatrixError: 404 unknown room, 403 the target is not banned or the rules refuse.
        """
        await self._require_membership(room_id, target, (BAN,), "unban")
        return await self.update_membership(sender, room_id, target, LEAVE, reason=reason)

    async def _require_membership(self, room_id: str, target: str, allowed: tuple[str, ...], action: str) -> None:
        head = await self._creator.get_head(room_id)
        if head is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        if await self._creator.state.get_membership(room_id, target, head) not in allowed:
            raise MatrixError(403, Codes.FORBIDDEN, f"Cannot {action} a user whose membership is not {'/'.join(allowed)}")

    async def join(self, user_id: str, room_id: str, reason: str | None = None) -> StoredEvent:
        """Joins ``user_id`` to a room this server knows (:meth:`join_room` also joins unknown ones)."""
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
        if not restricted or RoomStateReader.membership_in(state, user_id) in (JOIN, INVITE):
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

    async def get_joined_members(self, user_id: str, room_id: str) -> dict[str, Event]:
        """``user_id -> member event`` of the room's joined members, for a joined member.

        Raises:
            MatrixError: 403 when ``user_id`` is not joined (an unknown room looks the same).
        """
        head = await self._creator.get_head(room_id)
        if head is None or await self._creator.state.get_membership(room_id, user_id, head) != JOIN:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not in this room")
        members = await self._creator.get_state_events(head.state, [k for k in head.state if k[0] == "m.room.member"])
        return {skey: event for (_, skey), event in members.items() if event.membership == JOIN}

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
            member = await self._creator.state.get_current_member(room.room_id, user_id, head)
            if member is None or member.event.membership != JOIN:
                continue
            current = member.event
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
        membership = await self._creator.state.get_membership(room_id, user_id, head)
        if membership is None:
            raise MatrixError(404, Codes.NOT_FOUND, "You were never in this room")
        if membership in (JOIN, INVITE, KNOCK):
            raise MatrixError(400, Codes.UNKNOWN, "You must leave the room before forgetting it")
        await self._rooms.forget_room(user_id, head.room.room_nid)


def _room_domain(room_id: str) -> str | None:
    """The domain of a v1-v11 room ID (the server that created the room), None for v12 IDs."""
    try:
        return RoomID.parse(room_id).domain
    except InvalidIdentifierError:
        return None


def _domain(user_id: str) -> str:
    try:
        return UserID.parse(user_id, historical=True).domain
    except InvalidIdentifierError:
        return ""


def stripped_state(event: Event) -> dict[str, Any]:
    """An event as stripped state (spec "Stripped state"): type, state key, content, sender."""
    return {
        "type": event.type,
        "state_key": event.state_key or "",
        "content": dict(event.content),
        "sender": event.sender,
    }
