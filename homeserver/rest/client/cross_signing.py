"""Cross-signing (spec client-server-api, "Cross-signing").

* ``POST /_matrix/client/v3/keys/device_signing/upload``: publish master, self-signing and
  user-signing keys (user-interactive auth to replace existing keys).
* ``POST /_matrix/client/v3/keys/signatures/upload``: publish signatures of keys; per-key failures are
  reported in ``failures``.

The cross-signing parts of ``/keys/query`` are added by
:meth:`homeserver.e2ee.cross_signing.CrossSigningService.decorate_query`.
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.e2ee.cross_signing import CrossSigningService
from homeserver.http.auth import Authenticator
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_json_object_from_request
from homeserver.rest.client.login import client_paths


class CrossSigningServlets:
    """Registers the cross-signing upload endpoints.

    Args:
        authenticator: authenticates requests.
        cross_signing: the cross-signing service.
    """

    def __init__(self, authenticator: Authenticator, cross_signing: CrossSigningService) -> None:
        self._auth = authenticator
        self._cross_signing = cross_signing

    def register(self, resource: JsonResource) -> None:
        resource.register("POST", client_paths("/keys/device_signing/upload"), self.on_upload_keys)
        resource.register("POST", client_paths("/keys/signatures/upload"), self.on_upload_signatures)

    async def on_upload_keys(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/keys/device_signing/upload"""
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request)
        await self._cross_signing.upload_keys(requester.user_id, body)
        return 200, {}

    async def on_upload_signatures(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/keys/signatures/upload"""
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request)
        return 200, await self._cross_signing.upload_signatures(requester.user_id, body)
