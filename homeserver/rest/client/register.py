"""Account registration (spec client-server-api, "Account registration and management").

* ``POST /_matrix/client/v3/register``
* ``GET /_matrix/client/v3/register/available``
* ``GET /_matrix/client/v1/register/m.login.registration_token/validity``
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.server import Request

from homeserver.auth.accounts import AccountService, NewAccount
from homeserver.auth.sessions import SessionService
from homeserver.auth.uia import DUMMY, REGISTRATION_TOKEN, InteractiveAuth
from homeserver.config.registration import RegistrationConfig
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import (
    optional_bool,
    optional_str,
    parse_json_object_from_request,
    parse_string,
)
from homeserver.http.site import client_ip_of, user_agent_of
from homeserver.rest.client.login import client_paths
from homeserver.storage.stores.ui_auth import UIAuthStore
from sc_proto.errors import Codes, MatrixError


class RegistrationServlets:
    """Registers the registration endpoints (accounts are created by :class:`AccountService`).

    Args:
        server_name: our server name.
        config: the ``registration`` config section.
        accounts: validates and creates accounts.
        sessions: creates the first session.
        uia: user-interactive auth.
        ratelimiter: rate limits registrations per IP.
        time_msec: the clock.
        ui_auth_store: registration-token lookups.
    """

    def __init__(
        self,
        server_name: str,
        config: RegistrationConfig,
        accounts: AccountService,
        sessions: SessionService,
        uia: InteractiveAuth,
        ratelimiter: RateLimiter,
        time_msec: Callable[[], int],
        ui_auth_store: UIAuthStore,
    ) -> None:
        self._server_name = server_name
        self._config = config
        self._accounts = accounts
        self._sessions = sessions
        self._uia = uia
        self._ratelimiter = ratelimiter
        self._now = time_msec
        self._tokens = ui_auth_store

    def register(self, resource: JsonResource) -> None:
        resource.register("POST", client_paths("/register"), self.on_register)
        resource.register("GET", client_paths("/register/available"), self.on_available)
        resource.register(
            "GET",
            ["/_matrix/client/v1/register/m.login.registration_token/validity"],
            self.on_token_validity,
        )

    def _flows(self) -> list[list[str]]:
        if self._config.mode == "open":
            return [[DUMMY]]
        if self._config.mode == "token":
            return [[REGISTRATION_TOKEN]]
        return []

    async def on_register(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/register"""
        kind = parse_string(request, "kind", default="user", allowed_values=("user", "guest"))
        if kind == "guest":
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest access is disabled")
        body = parse_json_object_from_request(request)
        flows = self._flows()
        if not flows:
            raise MatrixError(403, Codes.FORBIDDEN, "Registration is disabled")
        ip = client_ip_of(request)
        self._ratelimiter.check("registration.ip", ip)
        username = optional_str(body, "username")
        password = optional_str(body, "password")
        device_id = optional_str(body, "device_id")
        display_name = optional_str(body, "initial_device_display_name")
        inhibit_login = optional_bool(body, "inhibit_login", False) or False
        want_refresh = optional_bool(body, "refresh_token", False) or False
        # The spec's username is "the basis for the localpart": we lower-case it, as Synapse does.
        localpart = username.lower() if username is not None else None
        # Checked before UIA so that a client learns about a bad name or password at its first try.
        if localpart is not None:
            await self._accounts.check_available(localpart)
        if password is not None:
            self._accounts.check_password(password, localpart)
        await self._uia.authenticate("POST /register", body, flows)
        if password is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "'password' is required")
        if localpart is None:
            localpart = await self._accounts.generate_localpart()
        user_id = await self._accounts.create_account(NewAccount(localpart, password))
        response: JsonDict = {"user_id": user_id, "home_server": self._server_name}
        if inhibit_login:
            return 200, response
        result = await self._sessions.create_session(
            user_id,
            device_id=device_id,
            display_name=display_name,
            want_refresh=want_refresh,
            ip=ip,
            user_agent=user_agent_of(request),
        )
        return 200, result.to_json(self._server_name)

    async def on_available(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/register/available"""
        self._ratelimiter.check("registration.ip", client_ip_of(request))
        username = parse_string(request, "username", required=True)
        assert username is not None  # required=True
        await self._accounts.check_available(username)
        return 200, {"available": True}

    async def on_token_validity(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v1/register/m.login.registration_token/validity"""
        self._ratelimiter.check("registration.ip", client_ip_of(request))
        token = parse_string(request, "token", required=True)
        assert token is not None  # required=True
        if self._config.mode != "token":
            raise MatrixError(403, Codes.FORBIDDEN, "Registration tokens are not in use")
        valid = token in self._config.tokens or await self._tokens.registration_token_valid(token, self._now())
        return 200, {"valid": valid}


