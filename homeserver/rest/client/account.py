"""Account management: password change, deactivation, and the password policy.

* ``POST /_matrix/client/v3/account/password`` (spec "Password management")
* ``POST /_matrix/client/v3/account/deactivate`` (spec "Account deactivation")
* ``GET /_matrix/client/v3/password_policy`` (NOTSPEC extension, see :meth:`AccountServlets.on_password_policy`)

Both account endpoints need an access token *and* user-interactive auth with the account's own password
(``m.login.password``), so a stolen access token alone can neither lock the owner out nor destroy the
account.
"""

from __future__ import annotations

import logging

from twisted.web.server import Request

from homeserver.auth.accounts import AccountService
from homeserver.auth.passwords import PasswordPolicy
from homeserver.auth.uia import PASSWORD, InteractiveAuth
from homeserver.http.auth import Authenticator
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import optional_bool, optional_str, parse_json_object_from_request, require_str
from homeserver.rest.client.login import client_paths
from sc_proto.identifiers import UserID

logger = logging.getLogger(__name__)

PASSWORD_FLOWS = [[PASSWORD]]
"""The UIA flows the account endpoints accept: the user's own password."""


def localpart_of(user_id: str) -> str:
    """``@alice:example.org`` -> ``alice`` (``@alice:localhost:8448`` -> ``alice`` too)."""
    return UserID.parse(user_id, historical=True).localpart


class AccountServlets:
    """Registers the password, deactivation and password-policy endpoints.

    Args:
        authenticator: authenticates requests.
        accounts: changes passwords and deactivates accounts.
        uia: user-interactive auth.
        policy: the password policy new passwords must meet.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        accounts: AccountService,
        uia: InteractiveAuth,
        policy: PasswordPolicy,
    ) -> None:
        self._accounts = accounts
        self._auth = authenticator
        self._uia = uia
        self._policy = policy

    def register(self, resource: JsonResource) -> None:
        resource.register("POST", client_paths("/account/password"), self.on_password)
        resource.register("POST", client_paths("/account/deactivate"), self.on_deactivate)
        resource.register("GET", client_paths("/password_policy"), self.on_password_policy)

    async def on_password(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/account/password

        The new password is checked against the policy before the user is asked to authenticate. On
        success every *other* session of the user ends unless ``logout_devices`` is false; the
        caller's own session survives (the spec says the server SHOULD NOT revoke it).
        """
        # NOTSPEC: the spec also allows this endpoint without an access token (password reset via
        # e-mail); we have no e-mail stage, so a token is required.
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request)
        new_password = require_str(body, "new_password")
        logout_devices = optional_bool(body, "logout_devices", True)
        self._policy.check(new_password, localpart_of(requester.user_id))
        await self._uia.authenticate("POST /account/password", body, PASSWORD_FLOWS, user_id=requester.user_id)
        ended = await self._accounts.change_password(
            requester.user_id, new_password, logout_devices=bool(logout_devices), keep_device_id=requester.device_id
        )
        logger.info(
            "password changed; %d other session(s) ended", len(ended),
            extra={"user_id": requester.user_id, "device_id": requester.device_id},
        )
        return 200, {}

    async def on_deactivate(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/account/deactivate

        Deactivates the account through :meth:`AccountService.deactivate`, as the admin API does: it is
        marked deactivated (its password hash is forgotten, so it can never log in again), every
        session ends, the user leaves their rooms and the profile is cleared. With ``erase: true``
        the account data is erased too.
        """
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request, allow_empty=True)
        erase = optional_bool(body, "erase", False)
        optional_str(body, "id_server")  # validated only: no third-party identifiers are stored
        await self._uia.authenticate("POST /account/deactivate", body, PASSWORD_FLOWS, user_id=requester.user_id)
        await self._accounts.deactivate(requester.user_id, erase=bool(erase))
        # The spec requires "success" when the server holds no third-party identifiers to unbind,
        # which is always the case here (we store none).
        return 200, {"id_server_unbind_result": "success"}

    async def on_password_policy(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/password_policy

        NOTSPEC: a widely implemented extension (Synapse, read by Element) that advertises the password
        policy as ``m.minimum_length``, ``m.require_digit``... (``{}`` when the policy is disabled). It
        needs no authentication so registration screens can show it.
        """
        return 200, dict(self._policy.as_capability())
