"""Typing notifications (spec client-server-api modules, "Typing Notifications").

* ``PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}``
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.ephemeral.typing import TypingService
from homeserver.http.auth import Authenticator, Requester
from homeserver.http.params import parse_room_id
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import optional_int, parse_json_object_from_request, require_bool
from homeserver.rest.client.account_data import require_own_user
from homeserver.rest.client.login import client_paths

RATE_LIMIT_ACTION = "typing.user"


class TypingServlets:
    """Registers the typing endpoint.

    Args:
        authenticator: authenticates requests.
        service: the typing service.
        ratelimiter: has a rule for ``typing.user``.
    """

    def __init__(
        self, authenticator: Authenticator, service: TypingService, ratelimiter: RateLimiter
    ) -> None:
        self._auth = authenticator
        self._service = service
        self._ratelimiter = ratelimiter

    def register(self, resource: JsonResource) -> None:
        resource.register("PUT", client_paths("/rooms/{roomId}/typing/{userId}"), self.on_put_typing)

    def _rate_limit(self, requester: Requester) -> None:
        self._ratelimiter.check_user(RATE_LIMIT_ACTION, requester.user_id, requester.is_admin)

    async def on_put_typing(self, request: Request, room_id: str, user_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}"""
        requester = await self._auth.get_requester(request)
        require_own_user(requester.user_id, user_id, "set the typing state of")
        parse_room_id(room_id)
        body = parse_json_object_from_request(request)
        typing = require_bool(body, "typing")
        timeout = optional_int(body, "timeout", minimum=0)
        self._rate_limit(requester)
        await self._service.set_typing(requester.user_id, room_id, typing, timeout)
        return 200, {}
