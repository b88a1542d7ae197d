"""Filters (spec client-server-api, "Filtering").

* ``POST /_matrix/client/v3/user/{userId}/filter``
* ``GET /_matrix/client/v3/user/{userId}/filter/{filterId}``

Uploaded filters are validated leniently (:func:`validate_filter`): every field the spec defines must
have the right JSON type if present (``null`` counts as absent), ``limit`` must not be negative, and
unknown keys are kept as they are, so a filter written for a newer spec version still uploads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.web.server import Request

from homeserver.http.auth import Authenticator
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_json_object_from_request
from homeserver.rest.client.account_data import require_own_user
from homeserver.rest.client.login import client_paths
from homeserver.storage.stores.filters import FilterStore
from sc_proto.errors import Codes, MatrixError
from sc_proto.json import encode_canonical_json

MAX_FILTER_BYTES = 64 * 1024
"""Largest filter accepted, as canonical JSON (NOTSPEC: the spec sets no limit)."""

_MAX_FILTER_ID_DIGITS = 15

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


class FilterServlets:
    """Registers the filter endpoints.

    Args:
        authenticator: authenticates requests.
        store: the filters store.
    """

    def __init__(self, authenticator: Authenticator, store: FilterStore) -> None:
        self._auth = authenticator
        self._store = store

    def register(self, resource: JsonResource) -> None:
        resource.register("POST", client_paths("/user/{userId}/filter"), self.on_post_filter)
        resource.register("GET", client_paths("/user/{userId}/filter/{filterId}"), self.on_get_filter)

    async def on_post_filter(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/user/{userId}/filter"""
        requester = await self._auth.get_requester(request, allow_guest=True)
        require_own_user(requester.user_id, user_id, "create filters for")
        body = parse_json_object_from_request(request)
        validate_filter(body)
        filter_id = await self._store.add_filter(requester.user_id, body)
        return 200, {"filter_id": str(filter_id)}

    async def on_get_filter(self, request: Request, user_id: str, filter_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/user/{userId}/filter/{filterId}

        An ID we could never have issued (not a small decimal number) is simply unknown: 404.
        """
        requester = await self._auth.get_requester(request, allow_guest=True)
        require_own_user(requester.user_id, user_id, "read the filters of")
        if not (filter_id.isascii() and filter_id.isdigit()) or len(filter_id) > _MAX_FILTER_ID_DIGITS:
            raise MatrixError(404, Codes.NOT_FOUND, "No such filter")
        stored = await self._store.get_filter(requester.user_id, int(filter_id))
        if stored is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No such filter")
        return 200, stored
