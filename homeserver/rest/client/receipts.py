"""Receipts and read markers (spec client-server-api modules, "Receipts", "Read and unread markers").

* ``POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}``
* ``POST /_matrix/client/v3/rooms/{roomId}/read_markers``
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.ephemeral.receipts import ReceiptService
from homeserver.http.auth import Authenticator, Requester
from homeserver.http.params import parse_room_id
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_json_object_from_request
from homeserver.rest.client.login import client_paths
from sc_proto.errors import Codes, MatrixError

RATE_LIMIT_ACTION = "receipt.user"
MARKER_KEYS = ("m.fully_read", "m.read", "m.read.private")
BODY_LIMIT = 4096
"""Receipt and read-marker bodies hold at most a few IDs."""


class ReceiptServlets:
    """Registers the receipt and read-marker endpoints.

    Args:
        authenticator: authenticates requests.
        service: the receipt service.
        ratelimiter: has a rule for ``receipt.user``.
    """

    def __init__(
        self, authenticator: Authenticator, service: ReceiptService, ratelimiter: RateLimiter
    ) -> None:
        self._auth = authenticator
        self._service = service
        self._ratelimiter = ratelimiter

    def register(self, resource: JsonResource) -> None:
        resource.register(
            "POST", client_paths("/rooms/{roomId}/receipt/{receiptType}/{eventId}"), self.on_post_receipt,
            max_body_size=BODY_LIMIT,
        )
        resource.register(
            "POST", client_paths("/rooms/{roomId}/read_markers"), self.on_post_read_markers, max_body_size=BODY_LIMIT
        )

    def _rate_limit(self, requester: Requester) -> None:
        self._ratelimiter.check_user(RATE_LIMIT_ACTION, requester.user_id, requester.is_admin)

    async def on_post_receipt(
        self, request: Request, room_id: str, receipt_type: str, event_id: str
    ) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        body = parse_json_object_from_request(request, allow_empty=True)
        self._rate_limit(requester)
        await self._service.set_receipt(requester.user_id, room_id, receipt_type, event_id, body.get("thread_id"))
        return 200, {}

    async def on_post_read_markers(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/rooms/{roomId}/read_markers"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        body = parse_json_object_from_request(request)
        for key in MARKER_KEYS:
            if key in body and not isinstance(body[key], str):
                raise MatrixError(400, Codes.INVALID_PARAM, f"{key} must be an event ID")
        self._rate_limit(requester)
        await self._service.set_read_markers(requester.user_id, room_id, {k: body.get(k) for k in MARKER_KEYS})
        return 200, {}
