"""Account life cycle: creation, password changes and deactivation, for every entry point.

The client API (``POST /register``), the admin API (``PUT /_synapse/admin/v2/users/{userId}``,
``POST /_synapse/admin/v1/deactivate/{userId}``), the ``register-user`` command and the test
harness (``Homeserver.create_user``) all create and deactivate accounts here, so the rules and
the effects are the same wherever they are triggered (ADR 0015).

Creation:

* The localpart must fit the current user-ID grammar (``[a-z0-9._=\\-/+]``, no upper case) and the
  whole ``@localpart:ourname`` at most 255 bytes: 400 ``M_INVALID_USERNAME`` otherwise, with one
  message. A user ID given in full must be ours (400 ``M_INVALID_PARAM`` "not a user of this
  server" for ``@bob:other.org``).
* The ID must be free in every spelling of its case (``M_USER_IN_USE``). The check is repeated
  by the store in the creating transaction, so of two creations of one ID at once exactly one wins
  and the other gets ``M_USER_IN_USE`` (:meth:`UserStore.create_user`).
* The password policy applies unless the caller is an admin (as in Synapse); the password is
  hashed off the reactor (:meth:`SessionService.hash_password`).
* The account row and its profile row (initial display name and avatar, none by default) are
  written in one transaction, with the admin and guest flags.
* Logging in (a first device and tokens) is the caller's business (``/register`` does it unless
  ``inhibit_login``).

Deactivation runs in a fixed order, whoever asks: the account is marked deactivated first (from
that commit on its tokens are refused even if a later step fails; the password hash is dropped),
then every session ends (devices and their tokens), then the user leaves or declines every room
(``on_deactivated``), then the profile is cleared and the change is sent to any room the user is
still joined to (``on_profile_changed``; normally none is left), and with ``erase`` the account
data is deleted too. This server stores no third-party identifiers and no pushers, so there is
nothing more to remove.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from homeserver.auth.passwords import PasswordPolicy
from homeserver.auth.sessions import SessionService
from homeserver.identity import LocalServer
from homeserver.storage.stores.account_data import AccountDataStore
from homeserver.storage.stores.profiles import ProfileStore
from homeserver.storage.stores.users import UserStore
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import is_valid_user_localpart

logger = logging.getLogger(__name__)

MAX_LOCALPART_BYTES = 255 - 2
"""A user ID is at most 255 bytes; ``@`` and ``:`` take two (the domain is checked with the whole ID)."""

INVALID_USERNAME_MESSAGE = "User ID may contain only a-z, 0-9, . _ = - / and +"
USER_IN_USE_MESSAGE = "User ID already taken"
GENERATED_LOCALPART_ATTEMPTS = 10


@dataclass(frozen=True)
class NewAccount:
    """An account an entry point asks for.

    Attributes:
        localpart: the localpart of the new user ID (validated by the service).
        password: the password, or None for an account without password login (admin API).
        admin: the server-admin flag.
        guest: a guest account (the only user type we store).
        displayname: the initial display name (None: no display name).
        avatar_url: the initial avatar URL (None: no avatar).
        enforce_password_policy: False only for server admins, whom the policy does not bind.
    """

    localpart: str
    password: str | None
    admin: bool = False
    guest: bool = False
    displayname: str | None = None
    avatar_url: str | None = None
    enforce_password_policy: bool = True


class AccountService:
    """Creates accounts, changes passwords and deactivates accounts.

    Args:
        local: our server name and identifiers.
        users: the user store.
        sessions: password hashing and session ends.
        profiles: the profile store (created with the account, cleared on deactivation).
        policy: the password policy for new passwords.
        time_msec: the clock (account creation time).
        account_data: the account data store (erased on request).
        on_deactivated: leaves the user's rooms after deactivation.
        on_profile_changed: sends the cleared profile into the rooms the user is still joined to.
    """

    def __init__(
        self,
        local: LocalServer,
        users: UserStore,
        sessions: SessionService,
        profiles: ProfileStore,
        policy: PasswordPolicy,
        time_msec: Callable[[], int],
        account_data: AccountDataStore,
        *,
        on_deactivated: Callable[[str], Awaitable[None]] | None = None,
        on_profile_changed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._local = local
        self._users = users
        self._sessions = sessions
        self._profiles = profiles
        self._policy = policy
        self._now = time_msec
        self._account_data = account_data
        self._on_deactivated = on_deactivated
        self._on_profile_changed = on_profile_changed

    # ------------------------------------------------------------------ creation

    def requested_localpart(self, user: str) -> str:
        """The localpart of a user the CLI or admin API names (a bare localpart or a full user ID).

        A bare localpart is returned as it is; it and the localpart of a full ID are validated by
        :meth:`user_id_for`, so both spellings get the same errors as ``/register``.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a malformed full ID or another server's user.
        """
        if not user.startswith("@"):
            return user
        return self._local.local_user(user, user).localpart

    def user_id_for(self, localpart: str) -> str:
        """``@localpart:ourname`` for a new account.

        Raises:
            MatrixError: 400 ``M_INVALID_USERNAME`` when the localpart does not fit the grammar for new
                users or the user ID would be longer than 255 bytes.
        """
        if not is_valid_user_localpart(localpart) or len(localpart.encode()) > MAX_LOCALPART_BYTES:
            raise MatrixError(400, Codes.INVALID_USERNAME, INVALID_USERNAME_MESSAGE)
        try:
            return self._local.user_id(localpart)
        except InvalidIdentifierError:  # the localpart passed its check, so only the length is left
            raise MatrixError(400, Codes.INVALID_USERNAME, "User ID is too long") from None

    async def check_available(self, localpart: str) -> str:
        """Validates the localpart and checks that nobody has the user ID; returns it.

        Raises:
            MatrixError: 400 ``M_INVALID_USERNAME`` (see :meth:`user_id_for`), 400 ``M_USER_IN_USE``.
        """
        user_id = self.user_id_for(localpart)
        if await self._users.find_user_case_insensitive(user_id) is not None:
            raise MatrixError(400, Codes.USER_IN_USE, USER_IN_USE_MESSAGE)
        return user_id

    def check_password(self, password: str, localpart: str | None) -> None:
        """Applies the password policy to a new account's password.

        Raises:
            MatrixError: 400 ``M_WEAK_PASSWORD`` (or ``M_INVALID_PARAM`` when too long).
        """
        self._policy.check(password, localpart)

    async def generate_localpart(self) -> str:
        """A free random localpart (``/register`` without a username).

        Raises:
            MatrixError: 500 when no free one was found (practically impossible).
        """
        for _ in range(GENERATED_LOCALPART_ATTEMPTS):
            candidate = "u" + secrets.token_hex(6)
            if await self._users.find_user_case_insensitive(self._local.user_id(candidate)) is None:
                return candidate
        raise MatrixError(500, Codes.UNKNOWN, "Could not allocate a user ID")

    async def create_account(self, account: NewAccount) -> str:
        """Creates the account and its profile (see the module docstring); returns the user ID.

        Raises:
            MatrixError: 400 ``M_INVALID_USERNAME``, ``M_USER_IN_USE``, ``M_WEAK_PASSWORD``, checked
                in that order.
        """
        user_id = await self.check_available(account.localpart)
        if account.password is not None and account.enforce_password_policy:
            self.check_password(account.password, account.localpart)
        password_hash = None if account.password is None else await self._sessions.hash_password(account.password)
        created = await self._users.create_user(
            user_id,
            password_hash,
            self._now(),
            is_admin=account.admin,
            is_guest=account.guest,
            displayname=account.displayname,
            avatar_url=account.avatar_url,
        )
        if not created:  # created meanwhile (the store checks again in its transaction)
            raise MatrixError(400, Codes.USER_IN_USE, USER_IN_USE_MESSAGE)
        logger.info("account created", extra={"user_id": user_id, "admin": account.admin})
        return user_id

    # ------------------------------------------------------------------ passwords

    async def change_password(
        self, user_id: str, new_password: str, *, logout_devices: bool, keep_device_id: str | None = None
    ) -> list[str]:
        """Sets a new password; with ``logout_devices`` ends every session but ``keep_device_id``'s.

        Returns:
            The device IDs whose sessions ended.
        """
        await self._users.set_password_hash(user_id, await self._sessions.hash_password(new_password))
        if not logout_devices:
            return []
        return await self._sessions.end_all_sessions(user_id, except_device_id=keep_device_id)

    # ------------------------------------------------------------------ deactivation

    async def deactivate(self, user_id: str, *, erase: bool = False) -> list[str]:
        """Deactivates the account (see the module docstring for the steps and their order).

        Args:
            user_id: a local account.
            erase: also delete the account data (the client's and the admin's ``erase``).

        Returns:
            The device IDs whose sessions ended.
        """
        await self._users.set_deactivated(user_id, True)
        ended = await self._sessions.end_all_sessions(user_id)
        if self._on_deactivated is not None:
            await self._on_deactivated(user_id)
        await self._profiles.clear_profile(user_id)
        if self._on_profile_changed is not None:
            await self._on_profile_changed(user_id)
        if erase:
            await self._account_data.delete_all_for_user(user_id)
        logger.info("account deactivated", extra={"user_id": user_id, "erase": erase})
        return ended
