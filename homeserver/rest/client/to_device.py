"""Send-to-device messaging (spec "Send-to-Device messaging").

* ``PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}``

The body is bounded (:data:`MAX_BODY_BYTES`, 413 ``M_TOO_LARGE`` before it is read) and so is the
number of target devices (413 ``M_TOO_LARGE``). Guests may send (spec "Guest Access").
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.e2ee.to_device import ToDeviceService
from homeserver.http.auth import Authenticator
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_json_object_from_request
from homeserver.rest.client.login import client_paths
from sc_proto.errors import Codes, MatrixError

MAX_BODY_BYTES = 1024 * 1024
"""Largest ``/sendToDevice`` body (NOTSPEC: the spec sets no limit; Olm payloads are small)."""

MAX_EVENT_TYPE_BYTES = 255
"""Longest event type accepted, in UTF-8 bytes (as for room events)."""


class ToDeviceServlets:
    """Registers ``/sendToDevice``.

    Args:
        authenticator: authenticates requests.
        service: the to-device service.
    """

    def __init__(self, authenticator: Authenticator, service: ToDeviceService) -> None:
        self._auth = authenticator
        self._service = service

    def register(self, resource: JsonResource) -> None:
        resource.register(
            "PUT", client_paths("/sendToDevice/{eventType}/{txnId}"), self.on_send, max_body_size=MAX_BODY_BYTES
        )

    async def on_send(self, request: Request, event_type: str, txn_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}"""
        requester = await self._auth.get_requester(request, allow_guest=True)
        if not event_type or len(event_type.encode("utf-8")) > MAX_EVENT_TYPE_BYTES:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid event type")
        if not txn_id or len(txn_id) > 255:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid transaction ID")
        body = parse_json_object_from_request(request)
        if "messages" not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing messages")
        messages = self._service.parse_messages(body["messages"])
        await self._service.send(requester.user_id, requester.device_id or "", event_type, txn_id, messages)
        return 200, {}
