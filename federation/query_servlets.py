"""Inbound queries: our aliases, our users' profiles and our room directory, for other servers.

* ``GET /_matrix/federation/v1/query/directory?room_alias=``
* ``GET /_matrix/federation/v1/query/profile?user_id=&field=``
* ``GET /_matrix/federation/v1/publicRooms`` and ``POST /_matrix/federation/v1/publicRooms``

All are authenticated routes (the transport checks ``X-Matrix``). Malformed parameters answer 400
(``M_MISSING_PARAM``/``M_INVALID_PARAM``); identifiers of other servers and unknown ones answer 404
``M_NOT_FOUND`` (we only speak for our own); nothing here answers 500 for bad input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from federation.interfaces import FederationRequest, FederationRouter
from homeserver.api.services import ProfileAPI, RoomDirectoryAPI
from homeserver.http.servlet import optional_bool, optional_int, optional_object, optional_str
from homeserver.identity import LocalServer
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import RoomAlias, UserID

JsonDict = dict[str, Any]

PREFIX = "/_matrix/federation/v1"
MAX_FIELD_LENGTH = 255
MAX_PUBLIC_ROOMS_LIMIT = 500
MAX_TEXT_PARAM = 1000


def _param(query: Mapping[str, Sequence[str]], name: str, *, required: bool = False) -> str | None:
    values = query.get(name)
    if not values:
        if required:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing parameter: {name}")
        return None
    value = values[0]
    if not isinstance(value, str) or len(value) > MAX_TEXT_PARAM:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid parameter: {name}")
    return value


def _limit_param(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise MatrixError(400, Codes.INVALID_PARAM, "'limit' must be a non-negative integer")
    return int(raw)


def _bool_param(raw: str | None, name: str) -> bool:
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise MatrixError(400, Codes.INVALID_PARAM, f"'{name}' must be 'true' or 'false'")
    return raw == "true"


def _room_types(search_filter: Mapping[str, Any]) -> tuple[str | None, ...] | None:
    raw = search_filter.get("room_types")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(t is None or isinstance(t, str) for t in raw):
        raise MatrixError(400, Codes.INVALID_PARAM, "'filter.room_types' must be a list of strings or nulls")
    return tuple(raw)


class QueryServlets:
    """Registers the query and public-room endpoints.

    Args:
        server_name: our server name.
        directory: our aliases and published rooms.
        profiles: our users' profiles.
    """

    def __init__(self, server_name: str, directory: RoomDirectoryAPI, profiles: ProfileAPI) -> None:
        self._local = LocalServer(server_name)
        self._directory = directory
        self._profiles = profiles

    def register(self, router: FederationRouter) -> None:
        """Adds the routes to ``router``."""
        router.register("GET", f"{PREFIX}/query/directory", self.on_query_directory)
        router.register("GET", f"{PREFIX}/query/profile", self.on_query_profile)
        router.register("GET", f"{PREFIX}/publicRooms", self.on_get_public_rooms)
        router.register("POST", f"{PREFIX}/publicRooms", self.on_post_public_rooms)

    async def on_query_directory(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/query/directory"""
        raw = _param(request.query, "room_alias", required=True)
        assert raw is not None
        try:
            alias = RoomAlias.parse(raw)
        except InvalidIdentifierError:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid room alias") from None
        found = await self._directory.get_local_alias(str(alias)) if self._local.is_mine(alias) else None
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room alias not found")
        room_id, servers = found
        return 200, {"room_id": room_id, "servers": list(servers)}

    async def on_query_profile(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/query/profile"""
        raw = _param(request.query, "user_id", required=True)
        assert raw is not None
        try:
            user_id = UserID.parse(raw, historical=True)
        except InvalidIdentifierError:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid user ID") from None
        field = _param(request.query, "field")
        if field is not None and (not field or len(field) > MAX_FIELD_LENGTH):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid profile field")
        profile = await self._profiles.get_local_profile(str(user_id)) if self._local.is_mine(user_id) else None
        if profile is None:
            raise MatrixError(404, Codes.NOT_FOUND, "User does not exist")
        if field is None:
            return 200, profile
        if profile.get(field) is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"The user has no {field}")
        return 200, {field: profile[field]}

    async def on_get_public_rooms(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/publicRooms"""
        query = request.query
        limit = _limit_param(_param(query, "limit"))
        since = _param(query, "since")
        include_all = _bool_param(_param(query, "include_all_networks"), "include_all_networks")
        if _param(query, "third_party_instance_id") is not None and not include_all:
            # No application services bridge third-party networks here: their lists are empty.
            return 200, {"chunk": [], "total_room_count_estimate": 0}
        return 200, await self._directory.list_public_rooms(_capped(limit), since)

    async def on_post_public_rooms(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """POST /_matrix/federation/v1/publicRooms"""
        body = request.content
        if not isinstance(body, dict):
            raise MatrixError(400, Codes.NOT_JSON, "The body must be a JSON object")
        limit = optional_int(body, "limit", minimum=0)
        since = optional_str(body, "since")
        include_all = optional_bool(body, "include_all_networks", False)
        search_filter = optional_object(body, "filter") or {}
        term = optional_str(search_filter, "generic_search_term")
        room_types = _room_types(search_filter)
        if optional_str(body, "third_party_instance_id") is not None and not include_all:
            return 200, {"chunk": [], "total_room_count_estimate": 0}
        return 200, await self._directory.list_public_rooms(_capped(limit), since, term, room_types)


def _capped(limit: int | None) -> int | None:
    """The spec's 0 means "no limit"; the directory caps pages anyway."""
    if limit is None or limit == 0:
        return None
    return min(limit, MAX_PUBLIC_ROOMS_LIMIT)
