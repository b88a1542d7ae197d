"""Server-side search (spec client-server-api, "Server Side Search").

* ``POST /_matrix/client/v3/search``

Only the ``room_events`` category exists. Encrypted rooms are never searchable server-side.
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.events.serialize import Viewer
from homeserver.http.auth import Authenticator
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_json_object_from_request, parse_string
from homeserver.rest.client.login import client_paths
from homeserver.search.query import ROOM_EVENTS, parse_search_body
from homeserver.search.service import RoomEventSearch
from sc_proto.errors import Codes, MatrixError

MAX_SEARCH_BODY = 64 * 1024
"""Largest request body accepted (room lists in the filter can be long; the term is capped separately)."""

MAX_NEXT_BATCH_LENGTH = 128


class SearchServlets:
    """Registers the search endpoint.

    Args:
        authenticator: access-token authentication.
        ratelimiter: rate limits (a search costs one ``default_request`` token per user).
        search: the room-events search.
    """

    def __init__(self, authenticator: Authenticator, ratelimiter: RateLimiter, search: RoomEventSearch) -> None:
        self._auth = authenticator
        self._ratelimiter = ratelimiter
        self._search = search

    def register(self, resource: JsonResource) -> None:
        resource.register("POST", client_paths("/search"), self.on_search, max_body_size=MAX_SEARCH_BODY)

    async def on_search(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/search"""
        requester = await self._auth.get_requester(request)
        self._ratelimiter.check("default_request.user", requester.user_id)
        next_batch = parse_string(request, "next_batch")
        if next_batch is not None and len(next_batch) > MAX_NEXT_BATCH_LENGTH:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid next_batch token")
        body = parse_json_object_from_request(request)
        criteria = parse_search_body(body)
        categories: JsonDict = {}
        if criteria is not None:
            viewer = Viewer(requester.user_id, requester.device_id)
            categories[ROOM_EVENTS] = await self._search.search(viewer, criteria, next_batch or None)
        return 200, {"search_categories": categories}
