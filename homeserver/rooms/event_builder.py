"""The local event builder: picks auth events from the room's head, builds and signs the PDU.

Pure with respect to storage except for loading the auth events' bodies through the room-state
reader; authorisation and persistence are the room input's job (:mod:`homeserver.events.input_queue`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from homeserver.rooms.state_reader import RoomHead, RoomStateReader
from sc_proto.auth.rules import auth_types_for_event
from sc_proto.crypto.keys import SigningKey, get_key_id
from sc_proto.events.builder import build_event, finalise_event
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import RoomVersion

MAX_PREV_EVENTS = 10


class LocalEventBuilder:
    """Builds and signs events originating on this server.

    Args:
        server_name: our server name (the event origin and signer).
        signing_key: our signing key.
        state: the room-state reader (auth event bodies).
        time_msec: the clock.
    """

    def __init__(
        self, server_name: str, signing_key: SigningKey, state: RoomStateReader, time_msec: Callable[[], int]
    ) -> None:
        self.server_name = server_name
        self._key = signing_key
        self._key_id = get_key_id(signing_key)
        self._state = state
        self._now = time_msec

    async def build(
        self,
        head: RoomHead,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None,
        redacts: str | None,
    ) -> tuple[Event, dict[StateKey, Event]]:
        """Builds and signs the next event of ``head``'s room.

        Returns:
            The event, and the auth state to check it against (its auth events plus the create and
            power-levels events), ``(type, state_key) -> Event``.
        """
        rv = head.version
        fields: dict[str, Any] = {"type": event_type, "sender": sender, "content": dict(content)}
        if state_key is not None:
            fields["state_key"] = state_key
        auth_keys = auth_types_for_event(fields, rv)
        needed = list(dict.fromkeys([*auth_keys, ("m.room.create", ""), ("m.room.power_levels", "")]))
        state_events = await self._state.get_state_events(head.state, needed)
        auth_ids = [state_events[k].event_id for k in auth_keys if k in state_events]
        if redacts is not None and rv.updated_redaction_rules:
            fields["content"]["redacts"] = redacts
        pdu = build_event(
            room_version=rv,
            room_id=head.room.room_id,
            type=event_type,
            sender=sender,
            content=fields["content"],
            state_key=state_key,
            prev_event_ids=list(head.extremities[-MAX_PREV_EVENTS:]),
            auth_event_ids=auth_ids,
            depth=head.max_depth + 1,
            origin_server_ts=self._now(),
            redacts=redacts,
            origin=self.server_name,
            event_id_localpart=None,
        )
        return finalise_event(pdu, rv, self.server_name, self._key_id, self._key), state_events

    def build_create(
        self, creator: str, room_version: RoomVersion, content: Mapping[str, Any], room_id: str | None, ts: int
    ) -> Event:
        """Builds and signs a room's ``m.room.create`` event (``room_id`` None in v12: derived)."""
        pdu = build_event(
            room_version=room_version,
            room_id=room_id,
            type="m.room.create",
            sender=creator,
            content=dict(content),
            state_key="",
            prev_event_ids=[],
            auth_event_ids=[],
            depth=1,
            origin_server_ts=ts,
            origin=self.server_name,
        )
        return finalise_event(pdu, room_version, self.server_name, self._key_id, self._key)
