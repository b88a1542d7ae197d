"""Loading a sync filter: one implementation for ``GET /sync?filter=`` and the WebSocket ``auth`` frame.

Spec client-server-api, "Filtering". A ``filter`` value is one of:

* absent or empty: the default filter;
* an inline filter: a JSON object (WebSocket frames may carry the object itself), or a string that
  starts with ``{`` holding one. Larger than :data:`MAX_FILTER_BYTES` is 413 ``M_TOO_LARGE``; a
  string that is not JSON is 400 ``M_NOT_JSON``; a field of the wrong type is 400 ``M_BAD_JSON``;
* the ID of a filter the user uploaded: ASCII digits, at most :data:`MAX_FILTER_ID_DIGITS` (anything
  else is 400 ``M_INVALID_PARAM``); an ID the user never uploaded is 404 ``M_NOT_FOUND``.

Validation is lenient (:func:`validate_filter`): every field the spec defines must have the right JSON
type if present (``null`` counts as absent), ``limit`` must not be negative, and unknown keys are
kept as they are, so a filter written for a newer spec version still uploads. The filter API
(``POST /user/{userId}/filter``) validates uploads with the same function.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from homeserver.storage.stores.filters import FilterStore
from homeserver.sync.filters import SyncFilter, parse_sync_filter
from sc_proto.errors import Codes, MatrixError
from sc_proto.json import encode_canonical_json

MAX_FILTER_BYTES = 64 * 1024
"""Largest filter accepted, as canonical JSON (NOTSPEC: the spec sets no limit)."""

MAX_FILTER_ID_DIGITS = 15
"""Longest filter ID accepted (IDs are small decimal numbers; longer strings are never IDs)."""

# Field kinds of the spec's filter objects (data/api/client-server/definitions/*filter.yaml).
_STR_LIST = "a list of strings"
_BOOL = "a boolean"
_LIMIT = "a non-negative integer"

_EVENT_FILTER: dict[str, Any] = {
    "limit": _LIMIT,
    "types": _STR_LIST,
    "not_types": _STR_LIST,
    "senders": _STR_LIST,
    "not_senders": _STR_LIST,
}
_ROOM_EVENT_FILTER: dict[str, Any] = {
    **_EVENT_FILTER,
    "rooms": _STR_LIST,
    "not_rooms": _STR_LIST,
    "lazy_load_members": _BOOL,
    "include_redundant_members": _BOOL,
    "unread_thread_notifications": _BOOL,
    "contains_url": _BOOL,
}
_ROOM_FILTER: dict[str, Any] = {
    "rooms": _STR_LIST,
    "not_rooms": _STR_LIST,
    "include_leave": _BOOL,
    "ephemeral": _ROOM_EVENT_FILTER,
    "state": _ROOM_EVENT_FILTER,
    "timeline": _ROOM_EVENT_FILTER,
    "account_data": _ROOM_EVENT_FILTER,
}
_FILTER: dict[str, Any] = {
    "event_fields": _STR_LIST,
    "event_format": ("client", "federation"),
    "presence": _EVENT_FILTER,
    "account_data": _EVENT_FILTER,
    "room": _ROOM_FILTER,
}


def _bad(path: str, expected: str) -> MatrixError:
    return MatrixError(400, Codes.BAD_JSON, f"Invalid filter: '{path}' must be {expected}")


def _check_value(path: str, value: Any, kind: Any) -> None:
    if isinstance(kind, dict):
        _check_object(path, value, kind)
    elif isinstance(kind, tuple):
        if value not in kind:
            raise _bad(path, "one of " + ", ".join(kind))
    elif kind == _STR_LIST:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise _bad(path, kind)
    elif kind == _BOOL:
        if not isinstance(value, bool):
            raise _bad(path, kind)
    elif kind == _LIMIT:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _bad(path, kind)


def _check_object(path: str, value: Any, fields: Mapping[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _bad(path, "an object")
    prefix = f"{path}." if path else ""
    for key, kind in fields.items():
        if value.get(key) is not None:
            _check_value(prefix + key, value[key], kind)


def validate_filter(body: Any) -> None:
    """Checks an uploaded filter's shape (see the module docstring).

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` naming the first bad field; 413 ``M_TOO_LARGE`` when the filter
            is bigger than :data:`MAX_FILTER_BYTES`.
    """
    _check_object("", body, _FILTER)
    if len(encode_canonical_json(body)) > MAX_FILTER_BYTES:
        raise MatrixError(413, Codes.TOO_LARGE, f"Filter is larger than {MAX_FILTER_BYTES} bytes")


def is_filter_id(value: str) -> bool:
    """Whether ``value`` could be a filter ID we issued (ASCII digits, not too long)."""
    return value.isascii() and value.isdigit() and 0 < len(value) <= MAX_FILTER_ID_DIGITS


class FilterLoader:
    """Resolves a ``filter`` value (see the module docstring) into a :class:`SyncFilter`.

    Args:
        store: the uploaded filters.
    """

    def __init__(self, store: FilterStore) -> None:
        self._store = store

    async def load(self, user_id: str, raw: object) -> tuple[SyncFilter, str]:
        """Parses an inline filter or loads an uploaded one.

        Args:
            user_id: whose uploaded filters an ID refers to.
            raw: None, a string (filter ID or JSON object) or a JSON object.

        Returns:
            The filter and its sharing key (the canonical JSON of an inline filter, the ID of an
            uploaded one, "" for the default): equal keys mean equal filters for the same user.

        Raises:
            MatrixError: 400 ``M_NOT_JSON``/``M_BAD_JSON``/``M_INVALID_PARAM``, 413 ``M_TOO_LARGE``,
                404 ``M_NOT_FOUND`` (see the module docstring).
        """
        if raw is None or raw == "":
            return SyncFilter(), ""
        if isinstance(raw, str) and raw.startswith("{"):
            if len(raw.encode("utf-8")) > MAX_FILTER_BYTES:
                raise MatrixError(413, Codes.TOO_LARGE, "Filter is too large")
            try:
                raw = json.loads(raw)
            except (ValueError, RecursionError):
                raise MatrixError(400, Codes.NOT_JSON, "The filter is not valid JSON") from None
        if isinstance(raw, dict):
            validate_filter(raw)
            return parse_sync_filter(raw), encode_canonical_json(raw).decode("utf-8")
        if not isinstance(raw, str) or not is_filter_id(raw):
            raise MatrixError(400, Codes.INVALID_PARAM, "'filter' must be a filter ID or a JSON object")
        stored = await self._store.get_filter(user_id, int(raw))
        if stored is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No such filter")
        return parse_sync_filter(stored), raw
