"""Account life cycle: password changes and deactivation (for the client and admin APIs).

Deactivation runs in a fixed order: the account is marked deactivated first (from that commit on
its tokens are refused even if a later step fails), then every session ends, then the user leaves
their rooms (``on_deactivated``, while the profile still exists so the leave events carry it), and
only then are the profile and, when asked, the account data cleared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from homeserver.auth.sessions import SessionService
from homeserver.storage.stores.account_data import AccountDataStore
from homeserver.storage.stores.profiles import ProfileStore
from homeserver.storage.stores.users import UserStore


class AccountService:
    """Changes passwords and deactivates accounts.

    Args:
        users: the user store.
        sessions: password hashing and session ends.
        profiles: the profile store (cleared on deactivation).
        account_data: the account data store (erased on request), None when the caller never erases it.
        on_deactivated: leaves the user's rooms after deactivation.
    """

    def __init__(
        self,
        users: UserStore,
        sessions: SessionService,
        profiles: ProfileStore,
        account_data: AccountDataStore | None = None,
        on_deactivated: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._profiles = profiles
        self._account_data = account_data
        self._on_deactivated = on_deactivated

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

    async def deactivate(self, user_id: str, *, clear_profile: bool, erase_account_data: bool = False) -> list[str]:
        """Deactivates the account (see the module docstring for the order of steps).

        Returns:
            The device IDs whose sessions ended.
        """
        await self._users.set_deactivated(user_id, True)
        ended = await self._sessions.end_all_sessions(user_id)
        if self._on_deactivated is not None:
            await self._on_deactivated(user_id)
        if clear_profile:
            await self._profiles.clear_profile(user_id)
        if erase_account_data:
            if self._account_data is None:
                raise ValueError("this account service cannot erase account data")
            await self._account_data.delete_all_for_user(user_id)
        return ended
