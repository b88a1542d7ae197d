"""The rooms core as the federation membership dances see it (:class:`~homeserver.api.services.RoomFederationAPI`).

Templates for ``make_join``/``make_leave``/``make_knock`` are built on the room's current state
like a local event (auth events chosen from it, prev events its forward extremities) and checked
against the auth rules before they are offered, so a server is told 403 at *make* time when the
rules would refuse the event. Restricted joins (v8+) name a local user with the invite power as
``join_authorised_via_users_server`` when the joiner is in one of the allowed rooms we know of.

Persisting a room joined through another server, and memberships in rooms we are not in, are the
room input's (:meth:`~homeserver.events.input_queue.RoomInput.persist_join`,
:meth:`~homeserver.events.input_queue.RoomInput.store_out_of_band_membership`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from homeserver.api.services import JsonDict, MembershipTemplate, PDUOutcome, PDUStatus
from homeserver.events.input_queue import RoomInput
from homeserver.identity import LocalServer
from homeserver.rooms.event_builder import MAX_PREV_EVENTS
from homeserver.rooms.membership import INVITE_ROOM_STATE_KEYS, JOIN, KNOCK, stripped_state
from homeserver.rooms.state_reader import RoomHead, RoomStateReader
from homeserver.storage.stores.events import EventStore
from homeserver.storage.stores.rooms import RoomStore
from homeserver.storage.stores.state_groups import StateGroupStore
from sc_proto.auth.power_levels import get_named_level, get_user_power_level
from sc_proto.auth.rules import auth_event_ids_from_state_map, check_auth
from sc_proto.errors import AuthError, Codes, MatrixError
from sc_proto.events.model import Event, StateKey
from sc_proto.events.redaction import redact
from sc_proto.federation.requests import build_membership_template
from sc_proto.room_versions import get_room_version

MEMBER = "m.room.member"
_STRIPPED_KEYS = ("type", "state_key", "content", "sender")
MAX_STRIPPED_STATE = 100
"""How many stripped state events of another server's invite or knock we keep."""


class RoomFederationService:
    """Implements :class:`~homeserver.api.services.RoomFederationAPI` over the rooms core.

    Args:
        server_name: our server name.
        room_input: the room input (persisting).
        state: the room-state reader.
        events: the event store.
        rooms: the room store.
        state_groups: the state-group store.
        time_msec: the clock (template timestamps).
    """

    def __init__(
        self, server_name: str, room_input: RoomInput, state: RoomStateReader, events: EventStore, rooms: RoomStore,
        state_groups: StateGroupStore, time_msec: Callable[[], int],
    ) -> None:
        self._state_groups = state_groups
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._input = room_input
        self._state = state
        self._events = events
        self._rooms = rooms
        self._now = time_msec

    async def get_room_version(self, room_id: str) -> str | None:
        room = await self._rooms.get_room(room_id)
        return room.room_version if room is not None else None

    async def _joined_head(self, room_id: str) -> RoomHead | None:
        head = await self._state.get_head(room_id)
        if head is None or ("m.room.create", "") not in head.state:
            return None
        members = await self._rooms.get_members(head.room.room_nid, (JOIN,))
        return head if any(self._local.is_mine(u) for u in members) else None

    async def is_server_in_room(self, room_id: str) -> bool:
        return await self._joined_head(room_id) is not None

    async def make_membership_template(self, room_id: str, user_id: str, membership: str) -> MembershipTemplate:
        head = await self._joined_head(room_id)
        if head is None:
            raise MatrixError(404, Codes.NOT_FOUND, "This server is not in the room")
        rv = head.version
        state = await self._state.get_state_events(head.state)
        content: dict[str, Any] = {"membership": membership}
        if membership == JOIN:
            authoriser = await self._restricted_authoriser(head, state, user_id)
            if authoriser is not None:
                content["join_authorised_via_users_server"] = authoriser
        fields = {"type": MEMBER, "sender": user_id, "state_key": user_id, "content": content}
        template = build_membership_template(
            room_version=rv, room_id=room_id, user_id=user_id, membership=membership, origin=self._server_name,
            prev_event_ids=list(head.extremities[-MAX_PREV_EVENTS:]),
            auth_event_ids=auth_event_ids_from_state_map(fields, state, rv), depth=head.max_depth + 1,
            origin_server_ts=self._now(), content=content,
        )
        trial = dict(template)
        if "join_authorised_via_users_server" in content:
            # The rules only look for the authorising server's signature; we add the real one at send_join.
            trial["signatures"] = {self._server_name: {"ed25519:trial": ""}}
        try:
            check_auth(Event(trial, rv, "$trial"), state, rv)
        except AuthError as e:
            raise MatrixError(403, Codes.FORBIDDEN, f"The room's rules do not allow this: {e.reason}") from None
        return MembershipTemplate(rv.identifier, template)

    async def _restricted_authoriser(
        self, head: RoomHead, state: Mapping[StateKey, Event], user_id: str
    ) -> str | None:
        """The local user to name in a restricted join, None when the join needs none.

        Raises:
            MatrixError: 403 when the joiner is in none of the allowed rooms; 400
                ``M_UNABLE_TO_AUTHORISE_JOIN`` when no local user may invite.
        """
        rv = head.version
        join_rules = state.get(("m.room.join_rules", ""))
        rule = join_rules.content.get("join_rule") if join_rules else None
        restricted = (rule == "restricted" and rv.restricted_join_rule) or (
            rule == "knock_restricted" and rv.knock_restricted_join_rule
        )
        current = state.get((MEMBER, user_id))
        if not restricted or (current is not None and current.membership in (JOIN, "invite")):
            return None
        allow = join_rules.content.get("allow") if join_rules else None
        allowed = [
            a.get("room_id") for a in (allow if isinstance(allow, list) else [])
            if isinstance(a, Mapping) and a.get("type") == "m.room_membership" and isinstance(a.get("room_id"), str)
        ]
        for room_id in allowed:
            room = await self._rooms.get_room(str(room_id))
            if room is not None and (await self._rooms.get_members(room.room_nid, (JOIN,))).get(user_id) == JOIN:
                break
        else:
            raise MatrixError(403, Codes.FORBIDDEN, "The user is not in a room that grants access to this one")
        pl = state.get(("m.room.power_levels", ""))
        create = state.get(("m.room.create", ""))
        invite_level = get_named_level(pl, "invite", 0, rv)
        for (etype, skey), event in sorted(state.items()):
            if etype == MEMBER and event.membership == JOIN and self._local.is_mine(skey):
                if get_user_power_level(skey, pl, create, rv) >= invite_level:
                    return skey
        raise MatrixError(400, Codes.UNABLE_TO_AUTHORISE_JOIN, "No user of this server can authorise the join")

    async def get_state_and_auth_chain(self, room_id: str, event_id: str) -> tuple[list[JsonDict], list[JsonDict]]:
        stored = await self._events.get_event(event_id)
        if stored is None or stored.event.room_id != room_id or stored.state_group_before is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No state known at that event")
        if stored.rejected_reason is not None or stored.outlier:
            # Rejected or soft-failed (a retried send_join of a refused join must not look accepted).
            raise MatrixError(403, Codes.FORBIDDEN, "The event was not accepted into the room")
        state_map = await self._state_groups.get_state(stored.state_group_before)
        loaded = await self._events.get_events(state_map.values())
        state = list(loaded.values())
        seen: dict[str, Any] = {}
        todo = [a for s in [*state, stored] for a in s.event.auth_event_ids]
        while todo:
            found = await self._events.get_events([e for e in dict.fromkeys(todo) if e not in seen])
            todo = []
            for eid, s in found.items():
                seen[eid] = s
                todo.extend(a for a in s.event.auth_event_ids if a not in seen)
        return [_pdu(s) for s in state], [_pdu(s) for s in seen.values()]

    async def get_stripped_state(self, room_id: str) -> list[JsonDict]:
        head = await self._state.get_head(room_id)
        if head is None:
            return []
        state = await self._state.get_state_events(head.state, list(INVITE_ROOM_STATE_KEYS))
        return [stripped_state(state[k]) for k in INVITE_ROOM_STATE_KEYS if k in state]

    async def persist_join(
        self, origin: str, room_version: str, auth_chain: Sequence[Event], state: Sequence[Event], event: Event
    ) -> PDUOutcome:
        return await self._input.persist_join(origin, get_room_version(room_version), auth_chain, state, event)

    async def store_out_of_band_membership(self, event: Event, stripped_state: Sequence[JsonDict] | None) -> PDUOutcome:
        pdu = dict(event.pdu)
        if stripped_state is not None:
            key = "knock_room_state" if event.membership == KNOCK else "invite_room_state"
            unsigned = dict(pdu.get("unsigned") or {})
            unsigned[key] = [
                {k: s[k] for k in _STRIPPED_KEYS if k in s} for s in list(stripped_state)[:MAX_STRIPPED_STATE]
            ]
            pdu["unsigned"] = unsigned
        # ``unsigned`` is outside the hashes and the signatures: the event ID is unchanged.
        stored = await self._input.store_out_of_band_membership(Event(pdu, event.room_version, event.event_id))
        status = PDUStatus.ACCEPTED if stored.event_id == event.event_id else PDUStatus.DUPLICATE
        return PDUOutcome(event.event_id, status, None, stored.stream_ordering)


def _pdu(stored: Any) -> JsonDict:
    pdu: Mapping[str, Any] = stored.event.pdu
    if stored.redacted_by is not None:
        pdu = redact(pdu, stored.event.room_version)
    out = {k: v for k, v in pdu.items() if k != "unsigned"}
    return dict(out)
