"""Events: the frozen model, builder, hashes, event IDs, redaction and validation."""

from sc_proto.events.builder import build_event, finalise_event
from sc_proto.events.hashes import (
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    compute_room_id,
    content_hash_b64,
    reference_hash_b64,
)
from sc_proto.events.model import Event, StateKey
from sc_proto.events.redaction import redact
from sc_proto.events.validation import MAX_PDU_BYTES, validate_pdu

__all__ = [
    "MAX_PDU_BYTES",
    "Event",
    "StateKey",
    "build_event",
    "check_content_hash",
    "compute_content_hash",
    "compute_event_id",
    "compute_reference_hash",
    "compute_room_id",
    "content_hash_b64",
    "finalise_event",
    "redact",
    "reference_hash_b64",
    "validate_pdu",
]
