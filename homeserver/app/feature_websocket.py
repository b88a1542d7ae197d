"""Wires the WebSocket sync push (``/_sc/client/v1/sync/ws``, docs/websocket.md) into a homeserver.

Builds the :class:`~homeserver.rest.client.sync_websocket.SyncPushEndpoint` over the shared sync engine, mounts
it on the client JSON resource (so every client listener serves it), and closes its connections
before the reactor stops. Provides the :class:`SyncPushEndpoint` (nothing when disabled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.web.http_headers import Headers
from twisted.web.server import Request

from homeserver.app.features import Feature, FeatureServices, Provided
from homeserver.http.auth import Authenticator
from homeserver.rest.client.sync_websocket import (
    WS_PATH,
    Authenticate,
    Authenticated,
    ConnectionLimits,
    EndpointOptions,
    FrameSink,
    PushSession,
    PushSettings,
    SyncPushEndpoint,
)
from homeserver.sync.filter_loading import FilterLoader
from sc_proto.errors import Codes, MatrixError

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver

TOKEN_RECHECK_S = 60.0
"""How often an open connection's access token is validated again (a logout closes it within this)."""

MAX_TOKEN_LENGTH = 1024


class _TokenCarrier:
    """Just enough of a request for :meth:`Authenticator.get_requester`: a bearer token and an IP.

    The token arrives in a WebSocket frame, not in a header; presenting it this way reuses every
    rule of the HTTP authenticator (expiry, locks, deactivation, device activity tracking).
    """

    def __init__(self, token: str, ip: str) -> None:
        self.requestHeaders = Headers({b"Authorization": [b"Bearer " + token.encode("utf-8")]})
        self.args: dict[bytes, list[bytes]] = {}
        self._address = _Address(ip)

    def getClientAddress(self) -> Any:
        return self._address

    def getHeader(self, name: bytes) -> bytes | None:
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None


class _Address:
    def __init__(self, host: str) -> None:
        self.host = host


def token_authenticator(authenticator: Authenticator) -> Authenticate:
    """Validates a token from an ``auth`` frame with the HTTP authenticator's rules (guests allowed)."""

    async def authenticate(token: str, ip: str) -> Authenticated:
        if len(token) > MAX_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unrecognised access token")
        carrier = cast(Request, _TokenCarrier(token, ip))
        requester = await authenticator.get_requester(carrier, allow_guest=True)
        return Authenticated(requester.user_id, requester.device_id)

    return authenticate


async def wire(hs: Homeserver, _services: FeatureServices) -> Provided:
    """Mounts the endpoint on ``hs.resource``; provides it (nothing when disabled)."""
    config = hs.config.websocket
    if not config.enabled:
        return []
    limits = ConnectionLimits(config.max_connections_per_user, config.max_connections_per_ip)
    settings = PushSettings(
        auth_timeout_s=config.auth_timeout_s,
        idle_timeout_s=config.idle_timeout_s,
        token_recheck_s=TOKEN_RECHECK_S,
    )
    authenticate = token_authenticator(hs.authenticator)
    load_filter = FilterLoader(hs.stores.filters).load
    engine = hs.sync.engine

    def make_session(sink: FrameSink, ip: str) -> PushSession:
        return PushSession(sink, engine, authenticate, load_filter, limits, hs.clock, settings, ip)

    def admit(_request: Request, ip: str) -> None:
        # A connection attempt costs like any request (audit SEC-5/SEC-10).
        hs.ratelimiter.check("default_request.ip", ip)

    options = EndpointOptions(
        ping_interval_s=config.ping_interval_s,
        ping_timeout_s=config.ping_timeout_s,
        max_frame_size=config.max_frame_size,
    )
    endpoint = SyncPushEndpoint(make_session, limits, options, admit, hs.reactor)
    hs.resource.mount(WS_PATH, cast(Any, endpoint))
    hs.reactor.addSystemEventTrigger("before", "shutdown", endpoint.close_all)
    return [endpoint]


FEATURE = Feature("websocket", wire, provides=(SyncPushEndpoint,))
