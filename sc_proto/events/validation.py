"""Structural validation of PDUs: required keys, their types, and size limits.

Checks (server-server API PDU definitions ``pdu_v1``..``pdu_v12``; client-server API "Size
limits"):

* the PDU is a JSON object; in room v6+ it is strict canonical JSON (no floats, integers within
  ±(2^53-1)); its canonical JSON is at most 65,536 bytes (413 ``M_TOO_LARGE``);
* ``type``, ``sender`` (``@``-sigil), ``content`` (object), ``origin_server_ts`` (integer),
  ``depth`` (non-negative integer), ``hashes`` (object with a string ``sha256``), ``signatures`` (object of
  objects of strings) are present;
* ``room_id`` (``!``-sigil) is present, except on a room v12 ``m.room.create`` event;
* ``prev_events`` (≤ 20) and ``auth_events`` (≤ 10) are lists of event IDs (v3+) or
  ``[event_id, hashes]`` pairs (v1/v2), and v1/v2 events carry an ``event_id``;
* optional ``state_key``, ``origin``, ``redacts`` (before v11) are strings and ``unsigned`` an
  object when present;
* ``sender``, ``room_id``, ``type``, ``state_key`` and ``event_id`` are at most 255 bytes of UTF-8.

Unknown top-level and content keys are always accepted: validation never rejects an event for
carrying something new (unlike nio's strict schemas). Authorization is a separate step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sc_proto.errors import Codes, InvalidEventError
from sc_proto.events.hashes import encode_event_json
from sc_proto.room_versions import EventFormat, RoomVersion

__all__ = [
    "MAX_AUTH_EVENTS",
    "MAX_IDENTIFIER_BYTES",
    "MAX_PDU_BYTES",
    "MAX_PREV_EVENTS",
    "validate_pdu",
]

MAX_PDU_BYTES = 65536
"""Largest allowed canonical-JSON size of a whole PDU, signatures included."""
MAX_IDENTIFIER_BYTES = 255
"""Largest allowed UTF-8 size of ``sender``, ``room_id``, ``type``, ``state_key``, ``event_id``."""
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
_MAX_INT64 = 2**63 - 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_string(pdu: Mapping[str, Any], key: str, *, required: bool, sigil: str | None = None) -> None:
    if key not in pdu:
        if required:
            raise InvalidEventError(f"missing '{key}'")
        return
    value = pdu[key]
    if not isinstance(value, str):
        raise InvalidEventError(f"'{key}' must be a string")
    if sigil is not None and not value.startswith(sigil):
        raise InvalidEventError(f"'{key}' must start with {sigil!r}")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_IDENTIFIER_BYTES:
        raise InvalidEventError(f"'{key}' is longer than {MAX_IDENTIFIER_BYTES} bytes")


def _check_event_id(value: object, field: str) -> None:
    if not isinstance(value, str) or not value.startswith("$"):
        raise InvalidEventError(f"'{field}' entries must be event IDs")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_IDENTIFIER_BYTES:
        raise InvalidEventError(f"an event ID in '{field}' is longer than {MAX_IDENTIFIER_BYTES} bytes")


def _check_refs(pdu: Mapping[str, Any], field: str, limit: int, event_format: EventFormat) -> None:
    if field not in pdu:
        raise InvalidEventError(f"missing '{field}'")
    refs = pdu[field]
    if not isinstance(refs, list):
        raise InvalidEventError(f"'{field}' must be a list")
    if len(refs) > limit:
        raise InvalidEventError(f"'{field}' has more than {limit} entries")
    for ref in refs:
        if event_format is EventFormat.V1:
            if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[1], Mapping)):
                raise InvalidEventError(f"'{field}' entries must be [event_id, hashes] pairs")
            _check_event_id(ref[0], field)
        else:
            _check_event_id(ref, field)


def _check_int(pdu: Mapping[str, Any], key: str, minimum: int, maximum: int) -> None:
    if key not in pdu:
        raise InvalidEventError(f"missing '{key}'")
    value = pdu[key]
    if not _is_int(value):
        raise InvalidEventError(f"'{key}' must be an integer")
    if not minimum <= value <= maximum:
        raise InvalidEventError(f"'{key}' is out of range")


def _check_hashes_and_signatures(pdu: Mapping[str, Any]) -> None:
    hashes = pdu.get("hashes")
    if not isinstance(hashes, Mapping):
        raise InvalidEventError("'hashes' must be an object" if "hashes" in pdu else "missing 'hashes'")
    if not isinstance(hashes.get("sha256"), str):
        raise InvalidEventError("'hashes.sha256' must be a string")
    signatures = pdu.get("signatures")
    if not isinstance(signatures, Mapping):
        raise InvalidEventError(
            "'signatures' must be an object" if "signatures" in pdu else "missing 'signatures'"
        )
    for server_sigs in signatures.values():
        if not isinstance(server_sigs, Mapping) or not all(isinstance(s, str) for s in server_sigs.values()):
            raise InvalidEventError("'signatures' must map server names to {key_id: signature}")


def _check_room_id(pdu: Mapping[str, Any], room_version: RoomVersion) -> None:
    is_create = pdu.get("type") == "m.room.create"
    if room_version.room_id_from_create_event and is_create:
        # Rooms v12: the create event carries no room_id; whether one present is acceptable is
        # an authorization-rule question, so only its type is checked here.
        _check_string(pdu, "room_id", required=False, sigil="!")
        return
    _check_string(pdu, "room_id", required=True, sigil="!")


def validate_pdu(pdu: Mapping[str, Any], room_version: RoomVersion) -> None:
    """Checks a PDU's structure and size for ``room_version``.

    Args:
        pdu: the event in federation format.
        room_version: the room version of the event's room.

    Raises:
        InvalidEventError: the event is malformed (400 ``M_BAD_JSON``) or larger than 65,536
            bytes as canonical JSON (413 ``M_TOO_LARGE``).
    """
    if not isinstance(pdu, Mapping):
        raise InvalidEventError("event must be a JSON object")
    if not all(isinstance(key, str) for key in pdu):
        raise InvalidEventError("event keys must be strings")
    # Encoding first: it rejects non-JSON values (and, for v6+, non-canonical numbers) before
    # any field is inspected, and yields the size.
    size = len(encode_event_json(pdu, room_version))
    if size > MAX_PDU_BYTES:
        raise InvalidEventError(
            f"event is {size} bytes; the limit is {MAX_PDU_BYTES}", Codes.TOO_LARGE, http_status=413
        )
    _check_string(pdu, "type", required=True)
    _check_string(pdu, "sender", required=True, sigil="@")
    _check_string(pdu, "state_key", required=False)
    _check_room_id(pdu, room_version)
    if not isinstance(pdu.get("content"), Mapping):
        raise InvalidEventError("'content' must be an object" if "content" in pdu else "missing 'content'")
    _check_int(pdu, "origin_server_ts", -_MAX_INT64, _MAX_INT64)
    _check_int(pdu, "depth", 0, _MAX_INT64)
    _check_hashes_and_signatures(pdu)
    fmt = room_version.event_format
    _check_refs(pdu, "prev_events", MAX_PREV_EVENTS, fmt)
    _check_refs(pdu, "auth_events", MAX_AUTH_EVENTS, fmt)
    if fmt is EventFormat.V1:
        _check_string(pdu, "event_id", required=True, sigil="$")
    _check_string(pdu, "origin", required=False)
    if not room_version.updated_redaction_rules:
        _check_string(pdu, "redacts", required=False)
    if "unsigned" in pdu and not isinstance(pdu["unsigned"], Mapping):
        raise InvalidEventError("'unsigned' must be an object")
