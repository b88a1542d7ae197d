"""Building PDUs from their inputs, then hashing and signing them.

:func:`build_event` assembles an *unsigned* PDU in the room version's format; the host supplies
everything that needs state or a clock (auth events, prev events, depth, timestamp).
:func:`finalise_event` adds the content hash and the signature and returns a validated
:class:`~sc_proto.events.model.Event`.

Format differences handled here:

* rooms v1/v2: ``event_id`` is ``$localpart:server`` and ``prev_events``/``auth_events`` are
  ``[event_id, hashes]`` pairs;
* rooms v11+: an ``m.room.redaction`` names its target in ``content.redacts``, earlier rooms in
  the top-level ``redacts``;
* rooms v12: the ``m.room.create`` event has no ``room_id``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sc_proto.crypto.keys import SigningKey
from sc_proto.crypto.signing import sign_event
from sc_proto.errors import LocalProtocolError
from sc_proto.events.model import Event
from sc_proto.events.redaction import copy_json
from sc_proto.room_versions import EventFormat, RoomVersion

__all__ = ["build_event", "finalise_event"]


def _server_of(user_id: str) -> str:
    _, sep, server = user_id.partition(":")
    if not sep or not server:
        raise LocalProtocolError(f"sender {user_id!r} has no server name")
    return server


def _refs(
    event_ids: Sequence[str], event_format: EventFormat, hashes: Mapping[str, Mapping[str, str]]
) -> list[Any]:
    if isinstance(event_ids, str) or not all(isinstance(e, str) for e in event_ids):
        raise LocalProtocolError("event ID lists must be sequences of strings")
    if event_format is EventFormat.V1:
        # NOTSPEC: v1/v2 references should carry the referenced event's hashes; when the host
        # does not supply them an empty object is sent, as deployed servers do and accept.
        return [[event_id, dict(hashes.get(event_id, {}))] for event_id in event_ids]
    return list(event_ids)


def _check_room_id(room_version: RoomVersion, event_type: str, room_id: str | None) -> None:
    if room_version.room_id_from_create_event and event_type == "m.room.create":
        if room_id is not None:
            raise LocalProtocolError("room v12+ create events have no room_id")
    elif not isinstance(room_id, str):
        raise LocalProtocolError("room_id is required")


def build_event(
    *,
    room_version: RoomVersion,
    room_id: str | None,
    type: str,
    sender: str,
    content: Mapping[str, Any],
    prev_event_ids: Sequence[str],
    auth_event_ids: Sequence[str],
    depth: int,
    origin_server_ts: int,
    state_key: str | None = None,
    redacts: str | None = None,
    origin: str | None = None,
    unsigned: Mapping[str, Any] | None = None,
    event_id_localpart: str | None = None,
    reference_hashes: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Builds an unsigned PDU (no ``hashes``/``signatures`` yet) in ``room_version``'s format.

    Args:
        room_version: the room's version.
        room_id: the room ID; must be ``None`` for a room v12+ ``m.room.create`` event.
        type: the event type.
        sender: the sender's user ID.
        content: the event content (copied).
        prev_event_ids: the event IDs of the prev events.
        auth_event_ids: the event IDs of the auth events.
        depth: the event's depth.
        origin_server_ts: creation time in milliseconds (the host reads the clock).
        state_key: the state key for a state event.
        redacts: the redacted event's ID, for ``m.room.redaction`` only.
        origin: the origin server name, included when given.
        unsigned: unsigned data, included when given (copied).
        event_id_localpart: rooms v1/v2: the ID's localpart; random when omitted.
        reference_hashes: rooms v1/v2: hashes objects of referenced events, by event ID.

    Returns:
        The PDU as a new dict.

    Raises:
        LocalProtocolError: inconsistent inputs (e.g. ``room_id`` on a v12 create event,
            ``redacts`` on a non-redaction, a non-integer depth).
    """
    _check_room_id(room_version, type, room_id)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        raise LocalProtocolError("depth must be a non-negative integer")
    if not isinstance(origin_server_ts, int) or isinstance(origin_server_ts, bool):
        raise LocalProtocolError("origin_server_ts must be an integer")
    if not isinstance(content, Mapping):
        raise LocalProtocolError("content must be a mapping")
    if redacts is not None and type != "m.room.redaction":
        raise LocalProtocolError("redacts is only valid on m.room.redaction events")
    fmt = room_version.event_format
    hashes = reference_hashes or {}
    pdu: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": copy_json(content),
        "depth": depth,
        "origin_server_ts": origin_server_ts,
        "prev_events": _refs(prev_event_ids, fmt, hashes),
        "auth_events": _refs(auth_event_ids, fmt, hashes),
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if origin is not None:
        pdu["origin"] = origin
    if unsigned is not None:
        pdu["unsigned"] = copy_json(unsigned)
    if redacts is not None:
        if room_version.updated_redaction_rules:
            pdu["content"]["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    if fmt is EventFormat.V1:
        localpart = event_id_localpart if event_id_localpart is not None else secrets.token_urlsafe(18)
        pdu["event_id"] = f"${localpart}:{origin if origin is not None else _server_of(sender)}"
    return pdu


def finalise_event(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    key_id: str,
    signing_key: SigningKey,
) -> Event:
    """Adds the content hash and ``server_name``'s signature, then validates and wraps the PDU.

    Args:
        pdu: an unsigned PDU, typically from :func:`build_event` (not modified).
        room_version: the room's version.
        server_name: the signing server (normally the sender's server).
        key_id: the signing key's ID, e.g. ``ed25519:a_1``.
        signing_key: the signing key.

    Returns:
        The finished event, with its event ID computed.

    Raises:
        InvalidEventError: the finished PDU fails validation (e.g. too large).
    """
    signed = sign_event(pdu, room_version, server_name, signing_key, key_id=key_id)
    return Event.from_pdu(signed, room_version)
