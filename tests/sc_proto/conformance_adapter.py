"""Adapter between sc_proto and the shared conformance checker (``check_vectors.py``).

Exposes the functions that ``/work/shared/conformance/README.md`` ("Adapter interface") asks for,
in the checker's calling convention (room versions as strings, signing keys as raw 32-byte
seeds, hashes as unpadded standard Base64), implemented with sc_proto. Usage::

    python ../shared/conformance/check_vectors.py tests/sc_proto/conformance_adapter.py
"""

from __future__ import annotations

from typing import Any

from sc_proto.crypto import keys, signing
from sc_proto.events import hashes, redaction
from sc_proto.json import encode_canonical_json
from sc_proto.room_versions import get_room_version


def _signing_key(key_id: str, seed: bytes) -> keys.SigningKey:
    _, version = keys.parse_key_id(key_id)
    return keys.signing_key_from_seed(seed, version)


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes; raises on floats and out-of-range integers."""
    return encode_canonical_json(obj)


def sign_json(obj: dict[str, Any], server_name: str, key_id: str, signing_key: bytes) -> dict[str, Any]:
    """Signs ``obj`` as ``server_name`` with the key ``key_id`` built from a raw seed."""
    return signing.sign_json(obj, server_name, _signing_key(key_id, signing_key), key_id=key_id)


def sign_event(
    event: dict[str, Any], room_version: str, server_name: str, key_id: str, signing_key: bytes
) -> dict[str, Any]:
    """Adds the content hash and a signature to ``event``."""
    return signing.sign_event(
        event, get_room_version(room_version), server_name, _signing_key(key_id, signing_key), key_id=key_id
    )


def redact(event: dict[str, Any], room_version: str) -> dict[str, Any]:
    """The redaction algorithm of ``room_version``."""
    return redaction.redact(event, get_room_version(room_version))


def compute_content_hash(event: dict[str, Any]) -> str:
    """The content hash, unpadded standard Base64."""
    return hashes.content_hash_b64(event)


def compute_event_id(event: dict[str, Any], room_version: str) -> str:
    """The event ID of ``event`` in ``room_version``."""
    return hashes.compute_event_id(event, get_room_version(room_version))


def compute_reference_hash(event: dict[str, Any], room_version: str) -> str:
    """The reference hash, unpadded standard Base64."""
    return hashes.reference_hash_b64(event, get_room_version(room_version))


def compute_room_id(create_event: dict[str, Any], room_version: str) -> str:
    """The room ID a room v12 create event defines."""
    return hashes.compute_room_id(create_event, get_room_version(room_version))
