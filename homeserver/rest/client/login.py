"""Login, logout, token refresh and whoami (spec client-server-api, "Login", "Refreshing access tokens").

* ``GET/POST /_matrix/client/v3/login``
* ``POST /_matrix/client/v3/logout`` and ``/logout/all``
* ``POST /_matrix/client/v3/refresh``
* ``GET /_matrix/client/v3/account/whoami``
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from twisted.web.server import Request

from homeserver.auth.sessions import SessionService
from homeserver.http.auth import Authenticator
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import optional_bool, optional_str, parse_json_object_from_request, require_str
from homeserver.http.site import client_ip_of
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import UserID

logger = logging.getLogger(__name__)

LOGIN_TYPE_PASSWORD = "m.login.password"  # noqa: S105 - a login type, not a secret
LOGIN_TYPE_TOKEN = "m.login.token"  # noqa: S105 - a login type


def client_paths(path: str) -> list[str]:
    """The ``r0`` and ``v3`` forms of a client API path (``path`` starts after the version)."""
    return [f"/_matrix/client/r0{path}", f"/_matrix/client/v3{path}"]


def user_agent_of(request: Request) -> str:
    value = request.getHeader(b"User-Agent")
    if value is None:
        return ""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:512]


def parse_user_identifier(body: Mapping[str, Any], server_name: str) -> str:
    """Reads ``identifier`` (or the deprecated top-level ``user``) as a full user ID.

    Raises:
        MatrixError: 400 for an unsupported identifier type or a malformed user.
    """
    identifier = body.get("identifier")
    if identifier is None:
        user = body.get("user")
        if not isinstance(user, str):
            raise MatrixError(400, Codes.MISSING_PARAM, "'identifier' is required")
    else:
        if not isinstance(identifier, Mapping):
            raise MatrixError(400, Codes.BAD_JSON, "'identifier' must be an object")
        if identifier.get("type") != "m.id.user":
            raise MatrixError(400, Codes.UNRECOGNIZED, "Only m.id.user identifiers are supported")
        user = identifier.get("user")
        if not isinstance(user, str):
            raise MatrixError(400, Codes.BAD_JSON, "'identifier.user' must be a string")
    if not user.startswith("@"):
        user = f"@{user}:{server_name}"
    try:
        parsed = UserID.parse(user, historical=True)
    except InvalidIdentifierError:
        raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password") from None
    if parsed.domain != server_name:
        raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password")
    return str(parsed)


class LoginServlets:
    """Registers the login/logout/refresh/whoami endpoints.

    Args:
        server_name: our server name.
        sessions: the session service.
        users: used to resolve the stored spelling of a user ID.
        authenticator: authenticates requests.
        ratelimiter: rate limits login attempts per IP and per user.
    """

    def __init__(
        self,
        server_name: str,
        sessions: SessionService,
        find_user: Any,
        authenticator: Authenticator,
        ratelimiter: RateLimiter,
    ) -> None:
        self._server_name = server_name
        self._sessions = sessions
        self._find_user = find_user
        self._auth = authenticator
        self._ratelimiter = ratelimiter

    def register(self, resource: JsonResource) -> None:
        resource.register("GET", client_paths("/login"), self.on_get_login)
        resource.register("POST", client_paths("/login"), self.on_post_login)
        resource.register("POST", client_paths("/logout"), self.on_logout)
        resource.register("POST", client_paths("/logout/all"), self.on_logout_all)
        resource.register("POST", ["/_matrix/client/v1/refresh", "/_matrix/client/v3/refresh"], self.on_refresh)
        resource.register("GET", client_paths("/account/whoami"), self.on_whoami)

    async def on_get_login(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/login"""
        return 200, {"flows": [{"type": LOGIN_TYPE_PASSWORD}]}

    async def on_post_login(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/login"""
        body = parse_json_object_from_request(request)
        login_type = require_str(body, "type")
        ip = client_ip_of(request)
        self._ratelimiter.check("login.ip", ip)
        if login_type != LOGIN_TYPE_PASSWORD:
            raise MatrixError(400, Codes.UNKNOWN, f"Unknown login type {login_type}")
        password = require_str(body, "password")
        device_id = optional_str(body, "device_id")
        display_name = optional_str(body, "initial_device_display_name")
        want_refresh = optional_bool(body, "refresh_token", False) or False
        claimed = parse_user_identifier(body, self._server_name)
        self._ratelimiter.check("login.user", claimed.lower())
        user_id = await self._find_user(claimed) or claimed
        if not await self._sessions.check_password(user_id, password):
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password")
        # Only after the password proved who is asking: a locked account gets no new token.
        await self._sessions.ensure_not_locked(user_id)
        result = await self._sessions.create_session(
            user_id,
            device_id=device_id,
            display_name=display_name,
            want_refresh=want_refresh,
            ip=ip,
            user_agent=user_agent_of(request),
        )
        logger.info("login", extra={"user_id": user_id, "device_id": result.device_id})
        return 200, result.to_json(self._server_name)

    async def on_logout(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/logout

        Ends exactly the session whose token made the request; there is no way to name another.
        """
        requester = await self._auth.get_requester(request, allow_guest=True, allow_locked=True)
        if requester.device_id is not None:
            await self._sessions.end_device_sessions(requester.user_id, [requester.device_id])
        return 200, {}

    async def on_logout_all(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/logout/all"""
        requester = await self._auth.get_requester(request, allow_guest=True, allow_locked=True)
        await self._sessions.end_all_sessions(requester.user_id)
        return 200, {}

    async def on_refresh(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/refresh"""
        body = parse_json_object_from_request(request)
        token = require_str(body, "refresh_token")
        result = await self._sessions.refresh(token)
        return 200, {
            "access_token": result.access_token,
            "refresh_token": result.refresh_token,
            "expires_in_ms": result.expires_in_ms,
        }

    async def on_whoami(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/account/whoami"""
        requester = await self._auth.get_requester(request, allow_guest=True)
        body: JsonDict = {"user_id": requester.user_id, "is_guest": requester.is_guest}
        if requester.device_id is not None:
            body["device_id"] = requester.device_id
        return 200, body
