"""Room directory, alias and upgrade endpoints.

* ``PUT/GET/DELETE /_matrix/client/v3/directory/room/{roomAlias}``
* ``GET /_matrix/client/v3/rooms/{roomId}/aliases``
* ``GET/PUT /_matrix/client/v3/directory/list/room/{roomId}``
* ``GET/POST /_matrix/client/v3/publicRooms``
* ``POST /_matrix/client/v3/rooms/{roomId}/upgrade``
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.web.server import Request

from homeserver.api.local import LocalOnlyRoomDirectory
from homeserver.api.ports import RemoteRoomDirectory
from homeserver.http.auth import Authenticator
from homeserver.http.params import parse_server_name
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import (
    optional_bool,
    optional_int,
    optional_object,
    optional_str,
    parse_integer,
    parse_json_object_from_request,
    parse_string,
    require_str,
)
from homeserver.identity import LocalServer
from homeserver.rest.client.login import client_paths
from homeserver.rooms.aliases import RoomAliasService
from homeserver.rooms.directory import PublicRoomsQuery, RoomDirectoryService
from homeserver.rooms.upgrade import RoomUpgradeService
from sc_proto.errors import Codes, MatrixError


def parse_public_rooms_filter(body: Mapping[str, Any]) -> tuple[str | None, tuple[str | None, ...] | None]:
    """``(generic_search_term, room_types)`` from a ``POST /publicRooms`` body.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for a malformed filter.
    """
    search_filter = optional_object(body, "filter") or {}
    term = optional_str(search_filter, "generic_search_term")
    raw_types = search_filter.get("room_types")
    if raw_types is None:
        return term, None
    if not isinstance(raw_types, list) or not all(t is None or isinstance(t, str) for t in raw_types):
        raise MatrixError(400, Codes.INVALID_PARAM, "'filter.room_types' must be a list of strings or nulls")
    return term, tuple(raw_types)


class DirectoryServlets:
    """Registers the directory, alias and upgrade endpoints.

    Args:
        server_name: our server name (``server`` parameter of ``/publicRooms``).
        authenticator: access-token authentication.
        aliases: room aliases.
        directory: the published room directory.
        upgrades: room upgrades.
        remote: other servers' directories (``server`` naming another server; local-only: 400).
    """

    def __init__(
        self,
        server_name: str,
        authenticator: Authenticator,
        aliases: RoomAliasService,
        directory: RoomDirectoryService,
        upgrades: RoomUpgradeService,
        remote: RemoteRoomDirectory | None = None,
    ) -> None:
        self._server_name = server_name
        self._remote: RemoteRoomDirectory = remote or LocalOnlyRoomDirectory()
        self._local = LocalServer(server_name)
        self._auth = authenticator
        self._aliases = aliases
        self._directory = directory
        self._upgrades = upgrades

    def register(self, resource: JsonResource) -> None:
        """Adds the routes to ``resource``."""
        r = resource
        alias_path = client_paths("/directory/room/{roomAlias}")
        r.register("PUT", alias_path, self.on_put_alias)
        r.register("GET", alias_path, self.on_get_alias)
        r.register("DELETE", alias_path, self.on_delete_alias)
        r.register("GET", client_paths("/rooms/{roomId}/aliases"), self.on_get_room_aliases)
        list_path = client_paths("/directory/list/room/{roomId}")
        r.register("GET", list_path, self.on_get_visibility)
        r.register("PUT", list_path, self.on_put_visibility)
        r.register("GET", client_paths("/publicRooms"), self.on_get_public_rooms)
        r.register("POST", client_paths("/publicRooms"), self.on_post_public_rooms)
        r.register("POST", client_paths("/rooms/{roomId}/upgrade"), self.on_upgrade)

    # ------------------------------------------------------------------ aliases

    async def on_put_alias(self, request: Request, room_alias: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/directory/room/{roomAlias}"""
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request)
        room_id = require_str(body, "room_id")
        await self._aliases.create_alias(requester.user_id, requester.is_admin, room_alias, room_id)
        return 200, {}

    async def on_get_alias(self, request: Request, room_alias: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/directory/room/{roomAlias}"""
        await self._auth.get_optional_requester(request, allow_guest=True)
        room_id, servers = await self._aliases.resolve_alias(room_alias)
        return 200, {"room_id": room_id, "servers": servers}

    async def on_delete_alias(self, request: Request, room_alias: str) -> tuple[int, JsonDict]:
        """DELETE /_matrix/client/v3/directory/room/{roomAlias}"""
        requester = await self._auth.get_requester(request)
        await self._aliases.delete_alias(requester.user_id, requester.is_admin, room_alias)
        return 200, {}

    async def on_get_room_aliases(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/rooms/{roomId}/aliases"""
        requester = await self._auth.get_requester(request, allow_guest=True)
        aliases = await self._aliases.get_local_aliases(requester.user_id, requester.is_admin, room_id)
        return 200, {"aliases": aliases}

    # ------------------------------------------------------------------ published directory

    async def on_get_visibility(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/directory/list/room/{roomId}"""
        return 200, {"visibility": await self._directory.get_visibility(room_id)}

    async def on_put_visibility(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/directory/list/room/{roomId}"""
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request, allow_empty=True)
        visibility = body.get("visibility", "public")
        await self._directory.set_visibility(requester.user_id, requester.is_admin, room_id, visibility)
        return 200, {}

    def _remote_server(self, request: Request) -> str | None:
        """The ``server`` parameter when it names another server (400 when malformed)."""
        server = parse_string(request, "server")
        if server is None or self._local.is_mine_server(server):
            return None
        return str(parse_server_name(server))

    async def on_get_public_rooms(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/publicRooms"""
        await self._auth.get_optional_requester(request, allow_guest=True)
        server = self._remote_server(request)
        limit = parse_integer(request, "limit", minimum=0)
        since = parse_string(request, "since")
        if server is not None:
            return 200, await self._remote.get_public_rooms(server, limit=limit, since=since)
        return 200, await self._directory.list_public_rooms(PublicRoomsQuery(limit=limit, since=since))

    async def on_post_public_rooms(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/publicRooms"""
        await self._auth.get_requester(request, allow_guest=True)
        server = self._remote_server(request)
        body = parse_json_object_from_request(request, allow_empty=True)
        term, room_types = parse_public_rooms_filter(body)
        limit = optional_int(body, "limit", minimum=0)
        since = optional_str(body, "since")
        third_party = optional_str(body, "third_party_instance_id")
        if server is not None:
            include_all = optional_bool(body, "include_all_networks", False)
            return 200, await self._remote.get_public_rooms(
                server, limit=limit, since=since, search_term=term, include_all_networks=bool(include_all),
                third_party_instance_id=third_party, room_types=room_types,
            )
        query = PublicRoomsQuery(limit=limit, since=since, search_term=term, room_types=room_types)
        if third_party is not None:
            # No application services bridge third-party networks here: their lists are empty.
            return 200, {"chunk": [], "total_room_count_estimate": 0}
        return 200, await self._directory.list_public_rooms(query)

    # ------------------------------------------------------------------ upgrades

    async def on_upgrade(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/rooms/{roomId}/upgrade"""
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request)
        new_version = require_str(body, "new_version")
        replacement = await self._upgrades.upgrade(
            requester.user_id, room_id, new_version, body.get("additional_creators")
        )
        return 200, {"replacement_room": replacement}
