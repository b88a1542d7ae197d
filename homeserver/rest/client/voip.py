"""VoIP endpoints: ``GET /_matrix/client/v3/voip/turnServer``."""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.calls.turn import TurnCredentialIssuer
from homeserver.http.auth import Authenticator
from homeserver.http.server import JsonDict, JsonResource
from homeserver.rest.client.login import client_paths


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

        Answers ``{}`` when no TURN server is configured (clients then fall back to their own).
        """
        requester = await self._auth.get_requester(request, allow_guest=True)
        credentials = self._turn.issue(requester.user_id, requester.is_guest)
        return 200, ({} if credentials is None else credentials.to_json())
