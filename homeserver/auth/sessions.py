"""Sessions: password and token logins, refresh, logout, and access-token lookup.

Theory of operation:

* A session is a device plus its tokens; :class:`SessionService` is the only code that creates or ends
  one. Ending a session always starts from the caller's own token (``/logout``) or from an explicitly
  authenticated device-management request, so one session can never end another by naming it
  (audit AUTH-3).
* Password checks go through :meth:`SessionService.check_password`, which first reserves an attempt in the
  database (see :mod:`homeserver.storage.stores.users`), then verifies the Argon2id hash off the reactor.
  Every login path (``/login``, user-interactive auth) uses it, so lockout cannot be bypassed (AUTH-1).
* The session limit is enforced in the same transaction that creates the session (AUTH-4).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from homeserver.auth.passwords import PasswordHasher
from homeserver.auth.tokens import (
    ACCESS_PREFIX,
    REFRESH_PREFIX,
    TokenInfo,
    new_device_id,
    new_token,
    token_digest,
)
from homeserver.config.auth import AuthConfig
from homeserver.storage.stores.devices import DeviceStore, NewSession
from homeserver.storage.stores.users import UserStore
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

T = TypeVar("T")
BUSY_RETRY_MS = 1000
ThreadRunner = Callable[..., Awaitable[Any]]
"""Runs a blocking callable off the reactor: ``await run(fn, *args)`` (``deferToThread`` in production)."""


@dataclass(frozen=True)
class LoginResult:
    """What a successful login or registration returns to the client."""

    user_id: str
    device_id: str
    access_token: str
    refresh_token: str | None
    expires_in_ms: int | None

    def to_json(self, server_name: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "access_token": self.access_token,
            "home_server": server_name,
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        if self.expires_in_ms is not None:
            body["expires_in_ms"] = self.expires_in_ms
        return body


class SessionService:
    """Creates, refreshes, looks up and ends sessions.

    Args:
        users: the users store.
        devices: the devices/tokens store.
        hasher: the password hasher.
        config: the ``auth`` config section.
        time_msec: the clock.
        run_in_thread: runs blocking work (password hashing) off the reactor.
    """

    def __init__(
        self,
        users: UserStore,
        devices: DeviceStore,
        hasher: PasswordHasher,
        config: AuthConfig,
        time_msec: Callable[[], int],
        run_in_thread: ThreadRunner,
    ) -> None:
        self._users = users
        self._devices = devices
        self._hasher = hasher
        self._config = config
        self._now = time_msec
        self._run_in_thread = run_in_thread

    async def hash_password(self, password: str) -> str:
        """Hashes a new password off the reactor."""
        result: str = await self._run_in_thread(self._hasher.hash, password)
        return result

    async def check_password(self, user_id: str, password: str) -> bool:
        """Checks ``password`` for ``user_id`` under lockout accounting.

        Returns:
            Whether the password is right (False for unknown or deactivated accounts too).

        Raises:
            MatrixError: the account is locked (429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``, or
                401 ``M_USER_LOCKED``, by config).
        """
        lock = self._config.lockout
        now = self._now()
        decision = await self._users.reserve_login_attempt(
            user_id,
            now,
            max_attempts=lock.max_failed_attempts,
            window_ms=lock.window_s * 1000,
            lock_ms=lock.lockout_duration_s * 1000,
        )
        if not decision.allowed:
            if decision.busy:
                logger.info("login refused: too many password checks in flight", extra={"user_id": user_id})
                raise MatrixError(429, Codes.LIMIT_EXCEEDED, "Too many login attempts at once; retry shortly",
                                  {"retry_after_ms": BUSY_RETRY_MS})
            logger.info("login refused: account locked", extra={"user_id": user_id})
            retry_after = max(1, decision.locked_until_ts - now)
            if lock.response == "user_locked":
                raise MatrixError(401, Codes.USER_LOCKED, "Too many failed logins; try again later",
                                  {"soft_logout": False, "retry_after_ms": retry_after})
            raise MatrixError(429, Codes.LIMIT_EXCEEDED, "Too many failed logins; try again later",
                              {"retry_after_ms": retry_after})
        ok = False
        stored_hash: str | None = None
        try:
            user = await self._users.get_user(user_id)
            stored_hash = None if user is None or user.deactivated else user.password_hash
            ok = bool(await self._run_in_thread(self._hasher.verify, stored_hash, password))
        finally:
            await self._users.finish_login_attempt(
                user_id, self._now(), success=ok, max_attempts=lock.max_failed_attempts,
                lock_ms=lock.lockout_duration_s * 1000,
            )
        if ok:
            if stored_hash and self._hasher.needs_rehash(stored_hash):
                await self._users.set_password_hash(user_id, await self.hash_password(password))
        else:
            logger.info("failed password check", extra={"user_id": user_id})
        return ok

    async def create_session(
        self,
        user_id: str,
        *,
        device_id: str | None,
        display_name: str | None,
        want_refresh: bool,
        ip: str | None,
        user_agent: str | None,
    ) -> LoginResult:
        """Issues tokens for a (new or taken-over) device of ``user_id``."""
        now = self._now()
        device_id = device_id or new_device_id()
        access = new_token(ACCESS_PREFIX)
        refresh = new_token(REFRESH_PREFIX) if want_refresh else None
        if refresh is not None:
            expires_in: int | None = self._config.refreshable_access_token_lifetime_ms
        else:
            expires_in = self._config.access_token_lifetime_ms
        refresh_life = self._config.refresh_token_lifetime_ms
        evicted = await self._devices.create_session(
            NewSession(
                user_id=user_id,
                device_id=device_id,
                display_name=display_name,
                access_hash=token_digest(access),
                access_expires_at_ts=None if expires_in is None else now + expires_in,
                refresh_hash=None if refresh is None else token_digest(refresh),
                refresh_expires_at_ts=None if refresh is None or refresh_life is None else now + refresh_life,
                ip=ip,
                user_agent=user_agent,
            ),
            now,
            self._config.max_sessions_per_user,
        )
        if evicted:
            logger.info("session limit evicted %d device(s)", len(evicted), extra={"user_id": user_id})
        return LoginResult(user_id, device_id, access, refresh, expires_in)

    async def refresh(self, refresh_token: str) -> LoginResult:
        """Exchanges a refresh token (spec ``POST /refresh``).

        Raises:
            MatrixError: 401 ``M_UNKNOWN_TOKEN`` (``soft_logout: true``) when unknown or expired.
        """
        now = self._now()
        access = new_token(ACCESS_PREFIX)
        refresh = new_token(REFRESH_PREFIX)
        lifetime = self._config.refreshable_access_token_lifetime_ms
        refresh_life = self._config.refresh_token_lifetime_ms
        owner = await self._devices.rotate_refresh_token(
            token_digest(refresh_token),
            now,
            token_digest(access),
            now + lifetime,
            token_digest(refresh),
            None if refresh_life is None else now + refresh_life,
        )
        if owner is None:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unknown or expired refresh token", {"soft_logout": True})
        await self.ensure_not_locked(owner[0])
        return LoginResult(owner[0], owner[1], access, refresh, lifetime)

    async def ensure_not_locked(self, user_id: str) -> None:
        """Refuses new tokens for an administratively locked account (spec "Account locking").

        Raises:
            MatrixError: 401 ``M_USER_LOCKED`` with ``soft_logout: true``.
        """
        user = await self._users.get_user(user_id)
        if user is not None and user.locked:
            raise MatrixError(401, Codes.USER_LOCKED, "This account has been locked", {"soft_logout": True})

    async def lookup(self, token: str) -> TokenInfo | None:
        """Resolves an access token (the ``TokenLookup`` port of the HTTP layer)."""
        record = await self._devices.get_token(token_digest(token))
        if record is None:
            return None
        return TokenInfo(
            user_id=record.user_id,
            device_id=record.device_id,
            token_id=record.token_hash,
            expires_at_ms=record.expires_at_ts,
            is_admin=record.is_admin,
            is_guest=record.is_guest,
            deactivated=record.deactivated,
            locked=record.locked,
        )

    async def end_device_sessions(self, user_id: str, device_ids: list[str]) -> None:
        """Ends the given sessions of ``user_id`` (callers have authenticated the request)."""
        await self._devices.delete_devices(user_id, device_ids)

    async def end_all_sessions(self, user_id: str, except_device_id: str | None = None) -> list[str]:
        """Ends every session of ``user_id`` (but ``except_device_id``)."""
        return await self._devices.delete_all_devices(user_id, except_device_id)
