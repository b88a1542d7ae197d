"""Login, logout, token refresh and whoami (spec client-server-api, "Login", "Refreshing access tokens").

* ``GET/POST /_matrix/client/v3/login``
* ``POST /_matrix/client/v3/logout`` and ``/logout/all``
* ``POST /_matrix/client/v3/refresh``
* ``GET /_matrix/client/v3/account/whoami``
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from twisted.web.server import Request

from homeserver.auth.sessions import SessionService
from homeserver.auth.tokens import LOGIN_TOKEN_PREFIX, new_token, token_digest
from homeserver.auth.uia import InteractiveAuth
from homeserver.http.auth import Authenticator
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import optional_bool, optional_str, parse_json_object_from_request, require_str
from homeserver.http.site import client_ip_of, user_agent_of
from homeserver.identity import LocalServer
from homeserver.storage.stores.login_tokens import LoginTokenStore
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import UserID

logger = logging.getLogger(__name__)

LOGIN_TYPE_PASSWORD = "m.login.password"  # noqa: S105 - a login type, not a secret
LOGIN_TYPE_TOKEN = "m.login.token"  # noqa: S105 - a login type
LOGIN_TOKEN_LIFETIME_MS = 120_000


def client_paths(path: str) -> list[str]:
    """The ``r0`` and ``v3`` forms of a client API path (``path`` starts after the version)."""
    return [f"/_matrix/client/r0{path}", f"/_matrix/client/v3{path}"]


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
    local = LocalServer(server_name)
    try:
        parsed = UserID.parse(local.qualify(user), historical=True)
    except InvalidIdentifierError:
        raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password") from None
    if not local.is_mine(parsed):
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
        *,
        login_tokens: LoginTokenStore | None = None,
        uia: InteractiveAuth | None = None,
        time_msec: Callable[[], int] | None = None,
    ) -> None:
        self._login_tokens = login_tokens
        self._uia = uia
        self._now: Callable[[], int] = time_msec or (lambda: 0)
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
        if self._login_tokens is not None:
            resource.register("POST", ["/_matrix/client/v1/login/get_token"], self.on_get_token)

    async def on_get_login(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/login"""
        flows: list[JsonDict] = [{"type": LOGIN_TYPE_PASSWORD}]
        if self._login_tokens is not None:
            flows.append({"type": LOGIN_TYPE_TOKEN, "get_login_token": True})
        return 200, {"flows": flows}

    async def on_get_token(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v1/login/get_token

        Issues a short-lived, single-use ``m.login.token`` for signing in another device, after the
        user re-authenticates with their password (user-interactive auth).
        """
        assert self._login_tokens is not None and self._uia is not None
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request, allow_empty=True)
        await self._uia.authenticate(
            "POST /login/get_token", body, [["m.login.password"]], user_id=requester.user_id
        )
        token = new_token(LOGIN_TOKEN_PREFIX)
        await self._login_tokens.add(token_digest(token), requester.user_id, self._now() + LOGIN_TOKEN_LIFETIME_MS)
        return 200, {"login_token": token, "expires_in_ms": LOGIN_TOKEN_LIFETIME_MS}

    async def on_post_login(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/login"""
        body = parse_json_object_from_request(request)
        login_type = require_str(body, "type")
        ip = client_ip_of(request)
        self._ratelimiter.check("login.ip", ip)
        device_id = optional_str(body, "device_id")
        display_name = optional_str(body, "initial_device_display_name")
        want_refresh = optional_bool(body, "refresh_token", False) or False
        if login_type == LOGIN_TYPE_TOKEN and self._login_tokens is not None:
            token = require_str(body, "token")
            found = await self._login_tokens.consume(token_digest(token), self._now())
            if found is None:
                raise MatrixError(403, Codes.FORBIDDEN, "Invalid or expired login token")
            user_id = found
        elif login_type == LOGIN_TYPE_PASSWORD:
            password = require_str(body, "password")
            claimed = parse_user_identifier(body, self._server_name)
            self._ratelimiter.check("login.user", claimed.lower())
            user_id = await self._find_user(claimed) or claimed
            if not await self._sessions.check_password(user_id, password):
                raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password")
        else:
            raise MatrixError(400, Codes.UNKNOWN, f"Unknown login type {login_type}")
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
