"""Server-side key backups (spec client-server-api, "Server-side key backups").

* ``POST/GET /_matrix/client/v3/room_keys/version``, ``GET/PUT/DELETE .../room_keys/version/{version}``
* ``PUT/GET/DELETE /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version=...``

Users only ever see and change their own backups. The server stores the encrypted session data as
sent and never decrypts it.
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.e2ee.key_backup import (
    KeyBackupService,
    check_session_id,
    parse_room_key,
    parse_rooms,
    parse_sessions,
    rooms_to_json,
)
from homeserver.http.auth import Authenticator
from homeserver.http.params import parse_room_id
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_json_object_from_request, parse_string
from homeserver.rest.client.login import client_paths
from sc_proto.errors import Codes, MatrixError


class RoomKeysServlets:
    """Registers the key-backup endpoints.

    Args:
        authenticator: authenticates requests.
        backups: the key-backup service.
    """

    def __init__(self, authenticator: Authenticator, backups: KeyBackupService) -> None:
        self._auth = authenticator
        self._backups = backups

    def register(self, resource: JsonResource) -> None:
        versions = client_paths("/room_keys/version")
        version = client_paths("/room_keys/version/{version}")
        resource.register("POST", versions, self.on_create_version)
        resource.register("GET", versions, self.on_get_current_version)
        resource.register("GET", version, self.on_get_version)
        resource.register("PUT", version, self.on_put_version)
        resource.register("DELETE", version, self.on_delete_version)
        keys = client_paths("/room_keys/keys")
        room = client_paths("/room_keys/keys/{roomId}")
        session = client_paths("/room_keys/keys/{roomId}/{sessionId}")
        for paths, suffix in ((keys, "all"), (room, "room"), (session, "session")):
            resource.register("PUT", paths, getattr(self, f"on_put_{suffix}"))
            resource.register("GET", paths, getattr(self, f"on_get_{suffix}"))
            resource.register("DELETE", paths, getattr(self, f"on_delete_{suffix}"))

    # ------------------------------------------------------------------ versions

    async def on_create_version(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/room_keys/version"""
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request)
        return 200, {"version": await self._backups.create_version(requester.user_id, body)}

    async def on_get_current_version(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/room_keys/version"""
        requester = await self._auth.get_requester(request)
        return 200, await self._backups.get_version(requester.user_id, None)

    async def on_get_version(self, request: Request, version: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/room_keys/version/{version}"""
        requester = await self._auth.get_requester(request)
        return 200, await self._backups.get_version(requester.user_id, version)

    async def on_put_version(self, request: Request, version: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/room_keys/version/{version}"""
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request)
        await self._backups.update_version(requester.user_id, version, body)
        return 200, {}

    async def on_delete_version(self, request: Request, version: str) -> tuple[int, JsonDict]:
        """DELETE /_matrix/client/v3/room_keys/version/{version}"""
        requester = await self._auth.get_requester(request)
        await self._backups.delete_version(requester.user_id, version)
        return 200, {}

    # ------------------------------------------------------------------ keys

    async def _user_and_version(self, request: Request) -> tuple[str, str]:
        requester = await self._auth.get_requester(request)
        return requester.user_id, parse_string(request, "version", required=True)

    async def on_put_all(self, request: Request) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/room_keys/keys"""
        user_id, version = await self._user_and_version(request)
        keys = parse_rooms(parse_json_object_from_request(request))
        return 200, await self._backups.put_keys(user_id, version, keys)

    async def on_put_room(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/room_keys/keys/{roomId}"""
        user_id, version = await self._user_and_version(request)
        room_id = parse_room_id(room_id)
        sessions = parse_sessions(parse_json_object_from_request(request))
        return 200, await self._backups.put_keys(user_id, version, {room_id: sessions})

    async def on_put_session(self, request: Request, room_id: str, session_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}"""
        user_id, version = await self._user_and_version(request)
        room_id, session_id = parse_room_id(room_id), check_session_id(session_id)
        key = parse_room_key(parse_json_object_from_request(request))
        return 200, await self._backups.put_keys(user_id, version, {room_id: {session_id: key}})

    async def on_get_all(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/room_keys/keys"""
        user_id, version = await self._user_and_version(request)
        return 200, rooms_to_json(await self._backups.get_keys(user_id, version))

    async def on_get_room(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/room_keys/keys/{roomId}

        A room without keys answers ``{"sessions": {}}``, as the spec says.
        """
        user_id, version = await self._user_and_version(request)
        room_id = parse_room_id(room_id)
        keys = await self._backups.get_keys(user_id, version, room_id)
        return 200, rooms_to_json(keys)["rooms"].get(room_id, {"sessions": {}})

    async def on_get_session(self, request: Request, room_id: str, session_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}"""
        user_id, version = await self._user_and_version(request)
        room_id, session_id = parse_room_id(room_id), check_session_id(session_id)
        keys = await self._backups.get_keys(user_id, version, room_id, session_id)
        key = keys.get(room_id, {}).get(session_id)
        if key is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Key not found.")
        return 200, key.to_json()

    async def on_delete_all(self, request: Request) -> tuple[int, JsonDict]:
        """DELETE /_matrix/client/v3/room_keys/keys"""
        user_id, version = await self._user_and_version(request)
        return 200, await self._backups.delete_keys(user_id, version)

    async def on_delete_room(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """DELETE /_matrix/client/v3/room_keys/keys/{roomId}"""
        user_id, version = await self._user_and_version(request)
        return 200, await self._backups.delete_keys(user_id, version, parse_room_id(room_id))

    async def on_delete_session(self, request: Request, room_id: str, session_id: str) -> tuple[int, JsonDict]:
        """DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}"""
        user_id, version = await self._user_and_version(request)
        room_id, session_id = parse_room_id(room_id), check_session_id(session_id)
        return 200, await self._backups.delete_keys(user_id, version, room_id, session_id)
