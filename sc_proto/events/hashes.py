"""Content hashes, reference hashes, event IDs and (room v12) room IDs.

Server-server API, "Calculating the content hash for an event" and "Calculating the reference
hash for an event"; room versions' "Event IDs" sections; appendices, "Room IDs".

* content hash: sha256 of the canonical JSON of the PDU without ``unsigned``, ``signatures`` and
  ``hashes``.
* reference hash: sha256 of the canonical JSON of the *redacted* PDU without ``signatures`` and
  ``unsigned``.
* event ID (v3+): ``$`` + unpadded Base64 of the reference hash (standard alphabet in v3, URL-safe
  from v4 on). Rooms v1/v2 carry the ID in the PDU's ``event_id`` field.
* room ID (v12): ``!`` + URL-safe unpadded Base64 of the create event's reference hash.

Rooms v1-v5 must not enforce canonical JSON strictly (rooms/v1 "Canonical JSON"), so for those
versions out-of-range integers and floats are hashed with a lenient encoder instead of rejected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from sc_proto.errors import CanonicalJSONError, InvalidEventError, LocalProtocolError
from sc_proto.json import encode_canonical_json
from sc_proto.room_versions import EventFormat, RoomVersion

__all__ = [
    "check_content_hash",
    "compute_content_hash",
    "compute_event_id",
    "compute_reference_hash",
    "compute_room_id",
    "content_hash_b64",
    "encode_base64",
    "encode_event_json",
    "reference_hash_b64",
]

_CONTENT_HASH_EXCLUDED = frozenset({"unsigned", "signatures", "hashes"})
_REFERENCE_HASH_EXCLUDED = frozenset({"unsigned", "signatures"})


def encode_base64(data: bytes, *, urlsafe: bool = False) -> str:
    """Unpadded Base64 (standard alphabet, or URL-safe when ``urlsafe``).

    Defined here rather than imported from :mod:`sc_proto.crypto.keys` so that the crypto
    package (which signs events) can depend on this module without an import cycle.
    """
    encoded = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return encoded.rstrip(b"=").decode("ascii")


def _to_dict(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _lenient_encode(value: Any) -> bytes:
    """Canonical layout (sorted keys, compact, raw UTF-8) without canonical JSON's value limits."""
    try:
        text = json.dumps(
            value,
            ensure_ascii=False,
            allow_nan=False,
            sort_keys=True,
            separators=(",", ":"),
            default=_to_dict,
        )
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidEventError("event is not encodable as JSON") from e


def encode_event_json(value: Any, room_version: RoomVersion | None = None) -> bytes:
    """Encodes (part of) an event as canonical JSON for hashing, signing or size checks.

    Args:
        value: the JSON value.
        room_version: the event's room version. For versions without strict canonical JSON
            (v1-v5) and for ``None``, integers beyond ±(2^53-1) and floats are tolerated.

    Raises:
        InvalidEventError: the value cannot be encoded (under the version's rules).
    """
    try:
        return encode_canonical_json(value)
    except UnicodeEncodeError as e:
        raise InvalidEventError("event holds invalid Unicode (lone surrogates)") from e
    except CanonicalJSONError as e:
        if room_version is not None and room_version.strict_canonicaljson:
            raise InvalidEventError(f"event is not canonical JSON: {e.message}") from e
    # Rooms v1-v5 require servers NOT to enforce canonical JSON strictly (rooms/v1).
    return _lenient_encode(value)


def _require_mapping(pdu: object) -> Mapping[str, Any]:
    if not isinstance(pdu, Mapping):
        raise InvalidEventError("event must be a JSON object")
    return pdu


def compute_content_hash(pdu: Mapping[str, Any], room_version: RoomVersion | None = None) -> bytes:
    """Returns the sha256 content hash of a PDU (32 raw bytes).

    Args:
        pdu: the event.
        room_version: optional; when given and strict (v6+), non-canonical values raise.

    Raises:
        InvalidEventError: ``pdu`` is not an object or not encodable.
    """
    pdu = _require_mapping(pdu)
    stripped = {k: v for k, v in pdu.items() if k not in _CONTENT_HASH_EXCLUDED}
    return hashlib.sha256(encode_event_json(stripped, room_version)).digest()


def content_hash_b64(pdu: Mapping[str, Any], room_version: RoomVersion | None = None) -> str:
    """Returns the content hash as unpadded standard Base64 (the ``hashes.sha256`` value).

    Args:
        pdu: the event.
        room_version: optional; when given and strict (v6+), non-canonical values raise.

    Raises:
        InvalidEventError: ``pdu`` is not an object or not encodable.
    """
    return encode_base64(compute_content_hash(pdu, room_version))


def check_content_hash(pdu: Mapping[str, Any], room_version: RoomVersion | None = None) -> bool:
    """Whether ``hashes.sha256`` of the PDU matches its content hash.

    Returns ``False`` (never raises) when the hash is missing, malformed or the event cannot be
    encoded; per the spec the caller then uses the redacted copy of the event.
    """
    candidate: object = pdu
    if not isinstance(candidate, Mapping):
        return False
    hashes = candidate.get("hashes")
    if not isinstance(hashes, Mapping):
        return False
    claimed = hashes.get("sha256")
    if not isinstance(claimed, str):
        return False
    try:
        actual = content_hash_b64(pdu, room_version)
    except InvalidEventError:
        return False
    # Padding is optional on input (appendices, "Unpadded Base64").
    return hmac.compare_digest(claimed.rstrip("=").encode("utf-8", "replace"), actual.encode("ascii"))


def compute_reference_hash(pdu: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """Returns the sha256 reference hash of a PDU (32 raw bytes).

    Raises:
        InvalidEventError: ``pdu`` is not an object or not encodable.
    """
    from sc_proto.events.redaction import redact

    redacted = redact(_require_mapping(pdu), room_version)
    stripped = {k: v for k, v in redacted.items() if k not in _REFERENCE_HASH_EXCLUDED}
    return hashlib.sha256(encode_event_json(stripped, room_version)).digest()


def reference_hash_b64(pdu: Mapping[str, Any], room_version: RoomVersion, *, urlsafe: bool = False) -> str:
    """Returns the reference hash as unpadded Base64.

    Args:
        pdu: the event.
        room_version: its room version (the hash covers the version's redacted form).
        urlsafe: the URL-safe alphabet (as in event IDs from room version 4 on) instead of the
            standard one.

    Raises:
        InvalidEventError: ``pdu`` is not an object or not encodable.
    """
    return encode_base64(compute_reference_hash(pdu, room_version), urlsafe=urlsafe)


def compute_event_id(pdu: Mapping[str, Any], room_version: RoomVersion) -> str:
    """Returns the event ID of a PDU in ``room_version``.

    v1/v2: the PDU's ``event_id`` field. v3: ``$`` + standard unpadded Base64 of the reference
    hash. v4+: ``$`` + URL-safe unpadded Base64 of the reference hash.

    Raises:
        InvalidEventError: malformed PDU, or (v1/v2) no string ``event_id``.
    """
    pdu = _require_mapping(pdu)
    fmt = room_version.event_format
    if fmt is EventFormat.V1:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise InvalidEventError("'event_id' is required in this room version")
        return event_id
    digest = compute_reference_hash(pdu, room_version)
    return "$" + encode_base64(digest, urlsafe=fmt is not EventFormat.V2)


def compute_room_id(create_pdu: Mapping[str, Any], room_version: RoomVersion) -> str:
    """Returns the room ID of a room v12+ room from its ``m.room.create`` event.

    Raises:
        LocalProtocolError: the room version does not derive room IDs from the create event.
        InvalidEventError: ``create_pdu`` is not an ``m.room.create`` event.
    """
    if not room_version.room_id_from_create_event:
        raise LocalProtocolError(f"room version {room_version.identifier} does not hash room IDs")
    create_pdu = _require_mapping(create_pdu)
    if create_pdu.get("type") != "m.room.create":
        raise InvalidEventError("room IDs are derived from m.room.create events only")
    return "!" + encode_base64(compute_reference_hash(create_pdu, room_version), urlsafe=True)
