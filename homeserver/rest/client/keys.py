"""End-to-end key endpoints (spec "End-to-End Encryption"): the server stores and forwards public keys.

* ``POST /_matrix/client/v3/keys/upload``
* ``POST /_matrix/client/v3/keys/query``
* ``POST /_matrix/client/v3/keys/claim``
* ``GET /_matrix/client/v3/keys/changes?from=&to=``

Guests may upload, query and claim keys (spec "Guest Access").
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.e2ee.device_keys import DeviceKeysService
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.one_time_keys import OneTimeKeyService
from homeserver.http.auth import Authenticator, Requester
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import optional_int, parse_json_object_from_request, parse_string
from homeserver.rest.client.login import client_paths
from homeserver.streams.tokens import StreamToken
from homeserver.sync.sources.device_lists import EVENTS, DeviceListsSource
from sc_proto.errors import Codes, MatrixError


def _require_device(requester: Requester) -> str:
    if requester.device_id is None:
        raise MatrixError(400, Codes.UNKNOWN_DEVICE, "This access token has no device")
    return requester.device_id


class KeyServlets:
    """Registers the ``/keys`` endpoints.

    Args:
        authenticator: authenticates requests.
        device_keys: upload and query.
        one_time_keys: claims.
        device_lists: ``/keys/changes``.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        device_keys: DeviceKeysService,
        one_time_keys: OneTimeKeyService,
        device_lists: DeviceListTracker,
    ) -> None:
        self._auth = authenticator
        self._device_keys = device_keys
        self._otks = one_time_keys
        self._device_lists = device_lists

    def register(self, resource: JsonResource) -> None:
        resource.register("POST", client_paths("/keys/upload"), self.on_upload)
        resource.register("POST", client_paths("/keys/query"), self.on_query)
        resource.register("POST", client_paths("/keys/claim"), self.on_claim)
        resource.register("GET", client_paths("/keys/changes"), self.on_changes)

    async def on_upload(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/keys/upload"""
        requester = await self._auth.get_requester(request, allow_guest=True)
        device_id = _require_device(requester)
        body = parse_json_object_from_request(request)
        counts = await self._device_keys.upload(requester.user_id, device_id, body)
        return 200, {"one_time_key_counts": counts}

    async def on_query(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/keys/query"""
        requester = await self._auth.get_requester(request, allow_guest=True)
        body = parse_json_object_from_request(request)
        if "device_keys" not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing device_keys")
        timeout = optional_int(body, "timeout", minimum=0)
        return 200, await self._device_keys.query(requester.user_id, body["device_keys"], timeout)

    async def on_claim(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/keys/claim"""
        await self._auth.get_requester(request, allow_guest=True)
        body = parse_json_object_from_request(request)
        if "one_time_keys" not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing one_time_keys")
        timeout = optional_int(body, "timeout", minimum=0)
        return 200, await self._otks.claim(body["one_time_keys"], timeout)

    async def on_changes(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/keys/changes?from=&to="""
        requester = await self._auth.get_requester(request)
        from_raw = parse_string(request, "from", required=True)
        to_raw = parse_string(request, "to", required=True)
        now = StreamToken({DeviceListsSource.name: self._device_lists.current_position()})
        to_token = StreamToken.decode(to_raw, now)
        from_token = StreamToken.decode(from_raw, to_token)
        dl_to = min(to_token.get(DeviceListsSource.name), self._device_lists.current_position())
        dl_from = min(from_token.get(DeviceListsSource.name), dl_to)
        events_to = to_token.get(EVENTS)
        events_from = min(from_token.get(EVENTS, events_to), events_to)
        changes = await self._device_lists.get_changes(requester.user_id, dl_from, dl_to, events_from, events_to)
        return 200, {"changed": changes.changed, "left": changes.left}
