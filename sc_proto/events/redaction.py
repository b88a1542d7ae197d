"""The redaction algorithm of each room version.

Rooms v1-v10 keep the top-level keys of the v1 list (rooms/fragments/v1-redactions.md); v11+
drop ``origin``, ``membership`` and ``prev_state`` (v11-redactions.md). Which ``content`` keys
survive depends on the event type and these :class:`~sc_proto.room_versions.RoomVersion` flags:

* ``special_case_aliases_auth`` (v1-v5): ``m.room.aliases`` keeps ``aliases``.
* ``restricted_join_rule`` (v8+): ``m.room.join_rules`` keeps ``allow``.
* ``restricted_join_rule_fix`` (v9+): ``m.room.member`` keeps ``join_authorised_via_users_server``.
* ``updated_redaction_rules`` (v11+): ``m.room.create`` keeps all content, power levels keep
  ``invite``, ``m.room.redaction`` keeps ``redacts``, ``m.room.member`` keeps
  ``third_party_invite.signed``.

Rooms v12 also strip ``room_id`` from ``m.room.create`` events (see the NOTSPEC note in
:func:`redact`). ``unsigned`` is dropped entirely (hosts re-add ``redacted_because`` when serving). The result is
a new dict sharing nothing mutable with the input, and ``redact(redact(e)) == redact(e)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sc_proto.errors import InvalidEventError
from sc_proto.room_versions import RoomVersion

__all__ = ["redact"]

_TOP_LEVEL_KEYS_V1 = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)
_TOP_LEVEL_KEYS_V11 = _TOP_LEVEL_KEYS_V1 - {"origin", "membership", "prev_state"}

_POWER_LEVELS_KEYS = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)


def _allowed_content_keys(event_type: object, room_version: RoomVersion) -> tuple[str, ...] | None:
    """Content keys kept for ``event_type``; ``None`` means "keep all of them"."""
    v11 = room_version.updated_redaction_rules
    if event_type == "m.room.member":
        if room_version.restricted_join_rule_fix:
            return ("membership", "join_authorised_via_users_server")
        return ("membership",)
    if event_type == "m.room.create":
        return None if v11 else ("creator",)
    if event_type == "m.room.join_rules":
        return ("join_rule", "allow") if room_version.restricted_join_rule else ("join_rule",)
    if event_type == "m.room.power_levels":
        return (*_POWER_LEVELS_KEYS, "invite") if v11 else _POWER_LEVELS_KEYS
    if event_type == "m.room.history_visibility":
        return ("history_visibility",)
    if event_type == "m.room.aliases" and room_version.special_case_aliases_auth:
        return ("aliases",)
    if event_type == "m.room.redaction" and v11:
        return ("redacts",)
    return ()


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists and scalars); several times faster than
    :func:`copy.deepcopy` because it knows the shapes JSON can take. Other mappings and sequences
    (tuples, read-only proxies) become dicts and lists."""
    if isinstance(value, Mapping):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [copy_json(v) for v in value]
    return value


def _share(value: Any) -> Any:
    return value


def _redact_content(
    event_type: object, content: Mapping[str, Any], room_version: RoomVersion, copier: Callable[[Any], Any]
) -> dict[str, Any]:
    allowed = _allowed_content_keys(event_type, room_version)
    if allowed is None:
        return {key: copier(value) for key, value in content.items()}
    kept = {key: copier(content[key]) for key in allowed if key in content}
    if event_type == "m.room.member" and room_version.updated_redaction_rules:
        invite = content.get("third_party_invite")
        if isinstance(invite, Mapping) and "signed" in invite:
            kept["third_party_invite"] = {"signed": copier(invite["signed"])}
    return kept


def redact(pdu: Mapping[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """Returns the redacted form of a PDU under ``room_version``'s redaction rules.

    The input is not modified. A ``content`` that is not an object is treated as empty; the
    result always has a ``content`` object.

    Args:
        pdu: the event (federation format).
        room_version: the room version whose redaction algorithm applies.

    Returns:
        A new dict holding only the essential keys.

    Raises:
        InvalidEventError: ``pdu`` is not a JSON object.
    """
    if not isinstance(pdu, Mapping):
        raise InvalidEventError("event must be a JSON object")
    top_level = _TOP_LEVEL_KEYS_V11 if room_version.updated_redaction_rules else _TOP_LEVEL_KEYS_V1
    if room_version.room_id_from_create_event and pdu.get("type") == "m.room.create":
        # NOTSPEC: the v11 redaction list (used by v12) keeps room_id, but a v12 create event has
        # no room_id of its own (one present makes it rejected); like Synapse, and as the
        # conformance vectors expect, it is stripped so the reference hash never covers it.
        top_level = top_level - {"room_id"}
    return _redact(pdu, room_version, top_level, copy_json)


def redact_view(pdu: Mapping[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """Like :func:`redact`, but the result shares nested values with ``pdu`` instead of copying them.

    For read-only uses (hashing, signing, serialising), where copying would be wasted work. Do not
    mutate the result's nested values.

    Raises:
        InvalidEventError: ``pdu`` is not a JSON object.
    """
    if not isinstance(pdu, Mapping):
        raise InvalidEventError("event must be a JSON object")
    top_level = _TOP_LEVEL_KEYS_V11 if room_version.updated_redaction_rules else _TOP_LEVEL_KEYS_V1
    if room_version.room_id_from_create_event and pdu.get("type") == "m.room.create":
        top_level = top_level - {"room_id"}  # NOTSPEC: as in redact()
    return _redact(pdu, room_version, top_level, _share)


def _redact(
    pdu: Mapping[str, Any], room_version: RoomVersion, top_level: frozenset[str], copier: Callable[[Any], Any]
) -> dict[str, Any]:
    redacted = {key: copier(value) for key, value in pdu.items() if key in top_level}
    content = pdu.get("content")
    if not isinstance(content, Mapping):
        content = {}
    redacted["content"] = _redact_content(pdu.get("type"), content, room_version, copier)
    return redacted
