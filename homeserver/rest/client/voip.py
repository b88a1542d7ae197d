"""VoIP endpoints: ``GET /_matrix/client/v3/voip/turnServer``."""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.calls.turn import TurnCredentialIssuer
from homeserver.http.auth import Authenticator
from homeserver.http.server import JsonDict, JsonResource
from homeserver.rest.client.login import client_paths
from sc_proto.errors import Codes, MatrixError


class VoipServlets:
    """Registers the VoIP endpoints.

    Args:
        authenticator: access-token authentication.
        turn: mints TURN credentials.
    """

    def __init__(self, authenticator: Authenticator, turn: TurnCredentialIssuer) -> None:
        self._auth = authenticator
        self._turn = turn

    def register(self, resource: JsonResource) -> None:
        """Adds the routes to ``resource``."""
        resource.register("GET", client_paths("/voip/turnServer"), self.on_get_turn_server)

    async def on_get_turn_server(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/voip/turnServer

        Answers 404 ``M_NOT_FOUND`` when no TURN server is configured (clients then use their own).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` without TURN; 403 ``M_FORBIDDEN`` for refused guests.
        """
        requester = await self._auth.get_requester(request, allow_guest=True)
        credentials = self._turn.issue(requester.user_id, requester.is_guest)
        if credentials is None:
            # NOTSPEC: the spec documents only 200 (username, password, uris and ttl all required)
            # for a server that "MAY provide a TURN server"; without one there are no credentials to
            # give, and 200 with an empty ``uris`` breaks WebRTC clients (an ICE server needs a URL),
            # so we answer the standard error for a missing resource. Found by the API fuzzer (issue 12).
            raise MatrixError(404, Codes.NOT_FOUND, "No TURN server is configured")
        return 200, credentials.to_json()
