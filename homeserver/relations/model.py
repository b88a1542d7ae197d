"""Reading ``m.relates_to`` out of event content (spec client-server-api, "Forming relationships between
events").

Only the cleartext ``m.relates_to`` counts (the server cannot read encrypted payloads). A relationship
that does not match the schema (not an object, ``rel_type`` or ``event_id`` missing or not strings) is
ignored, as the spec says; rich replies (``m.in_reply_to`` without a ``rel_type``) are not indexed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.identity import is_event_id

REL_ANNOTATION = "m.annotation"
REL_REPLACE = "m.replace"
REL_THREAD = "m.thread"
REL_REFERENCE = "m.reference"
RELATES_TO = "m.relates_to"
NEW_CONTENT = "m.new_content"
ENCRYPTED_TYPE = "m.room.encrypted"

MAX_ID_LENGTH = 255
"""rel_types longer than this are ignored (event IDs are checked by :class:`sc_proto.identifiers.EventID`)."""


@dataclass(frozen=True)
class Relation:
    """One event's relationship to its parent.

    Attributes:
        rel_type: the relationship type (``m.replace``, ``m.annotation``, custom types...).
        parent_id: the event it relates to.
        key: the annotation key (``m.annotation`` only, when a string).
    """

    rel_type: str
    parent_id: str
    key: str | None = None




def parse_relation(content: Mapping[str, Any]) -> Relation | None:
    """The relationship in ``content``, or None when it has none (or a malformed one)."""
    raw = content.get(RELATES_TO)
    if not isinstance(raw, Mapping):
        return None
    rel_type = raw.get("rel_type")
    parent_id = raw.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(parent_id, str):
        return None
    if not rel_type or len(rel_type) > MAX_ID_LENGTH or not is_event_id(parent_id):
        return None
    key = raw.get("key") if rel_type == REL_ANNOTATION else None
    key = key if isinstance(key, str) else None
    if "\x00" in rel_type or "\x00" in parent_id or (key is not None and "\x00" in key):
        # NOTSPEC: the spec allows NUL in these strings, but PostgreSQL text cannot index it; the
        # event is stored (its JSON escapes NUL) and simply not aggregated as a relation.
        return None
    return Relation(rel_type, parent_id, key)


def replacement_shape_ok(event_type: str, state_key: str | None, content: Mapping[str, Any]) -> bool:
    """Whether an ``m.replace`` child has the shape of a valid replacement on its own: no state key,
    and ``m.new_content`` an object (encrypted edits carry it inside the ciphertext, so they pass)."""
    if state_key is not None:
        return False
    return event_type == ENCRYPTED_TYPE or isinstance(content.get(NEW_CONTENT), Mapping)
