"""Presence endpoints (spec client-server-api modules, "Presence").

* ``GET /_matrix/client/v3/presence/{userId}/status``: yourself, or a user you share a room with
  (403 ``M_FORBIDDEN`` otherwise; 404 ``M_NOT_FOUND`` for a user this server does not know).
* ``PUT /_matrix/client/v3/presence/{userId}/status``: only your own (403 otherwise); ``presence`` is
  ``online``, ``unavailable`` or ``offline`` (400 ``M_INVALID_PARAM`` otherwise); ``status_msg`` is an
  optional string of at most :data:`MAX_STATUS_MSG_CHARS` characters (null or absent clears it).

With presence disabled in the config the endpoints keep their checks, GET answers ``offline`` and
PUT is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from twisted.web.server import Request

from homeserver.http.auth import Authenticator
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import optional_str, parse_json_object_from_request, require_str
from homeserver.presence.service import MAX_STATUS_MSG_CHARS, PresenceService
from homeserver.presence.state import OFFLINE, PRESENCE_STATES
from homeserver.rest.client.login import client_paths
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import UserID


def _check_user_id(user_id: str) -> str:
    try:
        return str(UserID.parse(user_id, historical=True))
    except InvalidIdentifierError:
        raise MatrixError(400, Codes.INVALID_PARAM, "Invalid user ID") from None


class PresenceServlets:
    """Registers the presence endpoints.

    Args:
        authenticator: authenticates requests.
        ratelimiter: rate limits PUT (action ``default_request``, per user).
        service: the presence service, or None when presence is disabled.
        user_exists: whether a user ID is an account of this server.
        joined_rooms: a user's joined room IDs.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        ratelimiter: RateLimiter,
        service: PresenceService | None,
        user_exists: Callable[[str], Awaitable[bool]],
        joined_rooms: Callable[[str], Awaitable[Iterable[str]]],
    ) -> None:
        self._auth = authenticator
        self._ratelimiter = ratelimiter
        self._service = service
        self._user_exists = user_exists
        self._joined_rooms = joined_rooms

    def register(self, resource: JsonResource) -> None:
        path = client_paths("/presence/{userId}/status")
        resource.register("GET", path, self.on_get_status)
        resource.register("PUT", path, self.on_put_status)

    async def on_get_status(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/presence/{userId}/status"""
        requester = await self._auth.get_requester(request, allow_guest=True)
        user_id = _check_user_id(user_id)
        if user_id != requester.user_id:
            if not await self._user_exists(user_id):
                raise MatrixError(404, Codes.NOT_FOUND, "Unknown user")
            viewer_rooms = set(await self._joined_rooms(requester.user_id))
            if viewer_rooms.isdisjoint(await self._joined_rooms(user_id)):
                raise MatrixError(403, Codes.FORBIDDEN, "You are not allowed to see their presence")
        if self._service is None:
            return 200, {"presence": OFFLINE}
        return 200, self._service.get_presence(user_id)

    async def on_put_status(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/presence/{userId}/status"""
        requester = await self._auth.get_requester(request, allow_guest=True)
        if user_id != requester.user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "You cannot set the presence of another user")
        self._ratelimiter.check("default_request.user", requester.user_id)
        body = parse_json_object_from_request(request)
        state = require_str(body, "presence")
        if state not in PRESENCE_STATES:
            raise MatrixError(400, Codes.INVALID_PARAM, "'presence' must be online, unavailable or offline")
        status_msg = optional_str(body, "status_msg")
        if status_msg is not None and len(status_msg) > MAX_STATUS_MSG_CHARS:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"'status_msg' is longer than {MAX_STATUS_MSG_CHARS} characters"
            )
        if self._service is not None:
            self._service.set_presence(requester.user_id, state, status_msg)
        return 200, {}
