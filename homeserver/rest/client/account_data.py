"""Client config: account data (spec client-server-api modules, "Client Config").

* ``GET/PUT /_matrix/client/v3/user/{userId}/account_data/{type}``
* ``GET/PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}``

Users may only read and write their own account data. Types the server manages (``m.fully_read``,
``m.push_rules``) can be read but not set here (405 ``M_BAD_JSON``, as the spec says).
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.http.auth import Authenticator
from homeserver.http.params import parse_room_id
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_json_object_from_request
from homeserver.rest.client.login import client_paths
from homeserver.storage.stores.account_data import AccountDataStore
from sc_proto.errors import Codes, MatrixError

SERVER_MANAGED_TYPES = frozenset({"m.fully_read", "m.push_rules"})
"""Account data types clients may not set through this API."""

MAX_TYPE_BYTES = 255
"""Longest account data type accepted (as event types are bounded), in UTF-8 bytes."""


def require_own_user(requester_user_id: str, path_user_id: str, action: str) -> None:
    """Refuses a request about another user's resources.

    Args:
        requester_user_id: the authenticated user.
        path_user_id: the user named in the path.
        action: completes "Cannot {action} other users" in the error.

    Raises:
        MatrixError: 403 ``M_FORBIDDEN`` when they differ.
    """
    if requester_user_id != path_user_id:
        raise MatrixError(403, Codes.FORBIDDEN, f"Cannot {action} other users")


def _check_type(data_type: str) -> None:
    if len(data_type.encode("utf-8")) > MAX_TYPE_BYTES:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Account data type is longer than {MAX_TYPE_BYTES} bytes")


class AccountDataServlets:
    """Registers the account data endpoints.

    Args:
        authenticator: authenticates requests.
        store: the account data store.
    """

    def __init__(self, authenticator: Authenticator, store: AccountDataStore) -> None:
        self._auth = authenticator
        self._store = store

    def register(self, resource: JsonResource) -> None:
        global_path = client_paths("/user/{userId}/account_data/{dataType}")
        room_path = client_paths("/user/{userId}/rooms/{roomId}/account_data/{dataType}")
        resource.register("GET", global_path, self.on_get_global)
        resource.register("PUT", global_path, self.on_put_global)
        resource.register("GET", room_path, self.on_get_room)
        resource.register("PUT", room_path, self.on_put_room)

    async def _get(self, request: Request, user_id: str, room_id: str | None, data_type: str) -> tuple[int, JsonDict]:
        requester = await self._auth.get_requester(request)
        require_own_user(requester.user_id, user_id, "read the account data of")
        room_id = None if room_id is None else parse_room_id(room_id)
        content = await self._store.get_account_data(requester.user_id, room_id, data_type)
        if content is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Account data not found")
        return 200, content

    async def _put(self, request: Request, user_id: str, room_id: str | None, data_type: str) -> tuple[int, JsonDict]:
        requester = await self._auth.get_requester(request)
        require_own_user(requester.user_id, user_id, "add account data for")
        room_id = None if room_id is None else parse_room_id(room_id)
        if data_type in SERVER_MANAGED_TYPES:
            raise MatrixError(405, Codes.BAD_JSON, f"Cannot set {data_type} through this API")
        _check_type(data_type)
        content = parse_json_object_from_request(request)
        await self._store.set_account_data(requester.user_id, room_id, data_type, content)
        return 200, {}

    async def on_get_global(self, request: Request, user_id: str, data_type: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/user/{userId}/account_data/{type}"""
        return await self._get(request, user_id, None, data_type)

    async def on_put_global(self, request: Request, user_id: str, data_type: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/user/{userId}/account_data/{type}"""
        return await self._put(request, user_id, None, data_type)

    async def on_get_room(
        self, request: Request, user_id: str, room_id: str, data_type: str
    ) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}"""
        return await self._get(request, user_id, room_id, data_type)

    async def on_put_room(
        self, request: Request, user_id: str, room_id: str, data_type: str
    ) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}"""
        return await self._put(request, user_id, room_id, data_type)
