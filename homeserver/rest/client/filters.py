"""Filters (spec client-server-api, "Filtering").

* ``POST /_matrix/client/v3/user/{userId}/filter``
* ``GET /_matrix/client/v3/user/{userId}/filter/{filterId}``

Uploaded filters are validated by :func:`homeserver.sync.filter_loading.validate_filter`, the same
rules ``/sync`` and the WebSocket apply to inline filters.
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.http.auth import Authenticator
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_json_object_from_request
from homeserver.rest.client.account_data import require_own_user
from homeserver.rest.client.login import client_paths
from homeserver.storage.stores.filters import FilterStore
from homeserver.sync.filter_loading import is_filter_id, validate_filter
from sc_proto.errors import Codes, MatrixError


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
        if not is_filter_id(filter_id):
            raise MatrixError(404, Codes.NOT_FOUND, "No such filter")
        stored = await self._store.get_filter(requester.user_id, int(filter_id))
        if stored is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No such filter")
        return 200, stored
