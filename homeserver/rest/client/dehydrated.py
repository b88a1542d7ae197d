"""Dehydrated devices (MSC3814), under the unstable prefix ``/_matrix/client/unstable/org.matrix.msc3814.v1``.

* ``PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device``
* ``GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device``
* ``DELETE /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device``
* ``POST /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events``

Guests are refused: they have no key backup or secret storage to keep the dehydration key in.
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.e2ee.dehydrated import DehydratedDeviceService
from homeserver.http.auth import Authenticator
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_json_object_from_request
from sc_proto.errors import Codes, MatrixError

PREFIX = "/_matrix/client/unstable/org.matrix.msc3814.v1"
"""The MSC3814 unstable prefix."""

MAX_BODY_BYTES = 1024 * 1024
"""Largest ``PUT /dehydrated_device`` body (NOTSPEC: the MSC sets no limit)."""

MAX_EVENTS_BODY_BYTES = 4096
"""Largest ``POST .../events`` body (it holds one token)."""


class DehydratedDeviceServlets:
    """Registers the MSC3814 endpoints.

    Args:
        authenticator: authenticates requests.
        service: the dehydrated-device service.
    """

    def __init__(self, authenticator: Authenticator, service: DehydratedDeviceService) -> None:
        self._auth = authenticator
        self._service = service

    def register(self, resource: JsonResource) -> None:
        path = f"{PREFIX}/dehydrated_device"
        resource.register("PUT", path, self.on_put, max_body_size=MAX_BODY_BYTES)
        resource.register("GET", path, self.on_get)
        resource.register("DELETE", path, self.on_delete)
        resource.register(
            "POST", f"{path}/{{deviceId}}/events", self.on_events, max_body_size=MAX_EVENTS_BODY_BYTES
        )

    async def on_put(self, request: Request) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"""
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request)
        device_id = await self._service.put(requester.user_id, body)
        return 200, {"device_id": device_id}

    async def on_get(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"""
        requester = await self._auth.get_requester(request)
        device = await self._service.get(requester.user_id)
        if device is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No dehydrated device available")
        return 200, {"device_id": device.device_id, "device_data": device.device_data}

    async def on_delete(self, request: Request) -> tuple[int, JsonDict]:
        """DELETE /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"""
        requester = await self._auth.get_requester(request)
        device_id = await self._service.delete(requester.user_id)
        if device_id is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No dehydrated device available")
        return 200, {"device_id": device_id}

    async def on_events(self, request: Request, device_id: str) -> tuple[int, JsonDict]:
        """POST /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events"""
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request, allow_empty=True)
        events, next_batch = await self._service.get_events(requester.user_id, device_id, body.get("next_batch"))
        return 200, {"events": events, "next_batch": next_batch}
