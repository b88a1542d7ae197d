"""Devices and the sessions (access and refresh tokens) that belong to them.

Every session is a device: logging in creates (or takes over) a device and issues tokens for it, and
ending a session deletes the device and its tokens in one transaction. Tokens are stored as SHA-256
digests (docs/adr/0002-hashed-access-tokens.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn


@dataclass(frozen=True)
class TokenRecord:
    """What an access token resolves to."""

    token_hash: str
    user_id: str
    device_id: str
    expires_at_ts: int | None
    is_admin: bool
    is_guest: bool
    deactivated: bool
    locked: bool = False
    """The account's administrative lock (``users.locked``), not the failed-login lockout."""


@dataclass(frozen=True)
class DeviceRecord:
    user_id: str
    device_id: str
    display_name: str | None
    created_ts: int
    last_seen_ts: int | None
    last_seen_ip: str | None
    last_seen_user_agent: str | None


@dataclass(frozen=True)
class NewSession:
    """Tokens (as digests) and device details for :meth:`DeviceStore.create_session`."""

    user_id: str
    device_id: str
    display_name: str | None
    access_hash: str
    access_expires_at_ts: int | None
    refresh_hash: str | None
    refresh_expires_at_ts: int | None
    ip: str | None
    user_agent: str | None


_DEVICE_COLUMNS = "user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent"


def _row_to_device(row: tuple[Any, ...]) -> DeviceRecord:
    return DeviceRecord(
        user_id=str(row[0]),
        device_id=str(row[1]),
        display_name=None if row[2] is None else str(row[2]),
        created_ts=int(row[3]),
        last_seen_ts=None if row[4] is None else int(row[4]),
        last_seen_ip=None if row[5] is None else str(row[5]),
        last_seen_user_agent=None if row[6] is None else str(row[6]),
    )


DeleteHook = Callable[[Txn, str, Sequence[str]], None]
"""``hook(txn, user_id, device_ids)`` runs inside a device-deleting transaction, before the rows go."""


def _delete_devices_txn(txn: Txn, user_id: str, device_ids: Sequence[str], hooks: Sequence[DeleteHook] = ()) -> None:
    for hook in hooks:
        hook(txn, user_id, device_ids)
    for device_id in device_ids:
        txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id))
        txn.execute("DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id))
        txn.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id))


class DeviceStore:
    """Reads and writes ``devices``, ``access_tokens`` and ``refresh_tokens``."""

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool
        self.on_delete_txn: list[DeleteHook] = []
        """Run inside every transaction that deletes devices (keys, to-device inboxes and device lists
        are cleaned up atomically with the device)."""

    async def create_session(self, session: NewSession, now_ms: int, max_sessions: int) -> list[str]:
        """Creates or takes over a device and issues its tokens, in one transaction.

        Logging in with an existing device ID ends that device's previous tokens. When the user then has
        more than ``max_sessions`` devices (``0`` = no limit), the least recently used other devices are
        deleted with their tokens (audit AUTH-4).

        Returns:
            The device IDs evicted by the session limit.
        """

        def create_session_txn(txn: Txn) -> list[str]:
            s = session
            # Take the user's row lock first: concurrent logins of one user then serialise (on
            # PostgreSQL the later one fails to serialise and is retried on the new state), so the
            # session count below can never be overtaken (audit AUTH-4 under concurrency).
            txn.execute("UPDATE users SET user_id = user_id WHERE user_id = ?", (s.user_id,))
            txn.execute("SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (s.user_id, s.device_id))
            if txn.fetchone() is None:
                txn.execute(
                    "INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip,"
                    " last_seen_user_agent) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (s.user_id, s.device_id, s.display_name, now_ms, now_ms, s.ip, s.user_agent),
                )
            else:
                txn.execute(
                    "DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (s.user_id, s.device_id)
                )
                txn.execute(
                    "DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?", (s.user_id, s.device_id)
                )
                txn.execute(
                    "UPDATE devices SET last_seen_ts = ?, last_seen_ip = ?, last_seen_user_agent = ?"
                    " WHERE user_id = ? AND device_id = ?",
                    (now_ms, s.ip, s.user_agent, s.user_id, s.device_id),
                )
                if s.display_name is not None:
                    txn.execute(
                        "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                        (s.display_name, s.user_id, s.device_id),
                    )
            if s.refresh_hash is not None:
                txn.execute(
                    "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, expires_at_ts)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (s.refresh_hash, s.user_id, s.device_id, now_ms, s.refresh_expires_at_ts),
                )
            txn.execute(
                "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_at_ts,"
                " refresh_token_hash) VALUES (?, ?, ?, ?, ?, ?)",
                (s.access_hash, s.user_id, s.device_id, now_ms, s.access_expires_at_ts, s.refresh_hash),
            )
            if max_sessions <= 0:
                return []
            txn.execute(
                "SELECT device_id FROM devices WHERE user_id = ? AND device_id != ?"
                " ORDER BY COALESCE(last_seen_ts, created_ts) DESC, created_ts DESC, device_id",
                (s.user_id, s.device_id),
            )
            others = [str(r[0]) for r in txn.fetchall()]
            evicted = others[max_sessions - 1 :]
            _delete_devices_txn(txn, s.user_id, evicted, self.on_delete_txn)
            return evicted

        return await self._pool.run_txn("create_session", create_session_txn)

    async def get_token(self, token_hash: str) -> TokenRecord | None:
        """Resolves an access token digest to its session and account flags."""

        def get_token_txn(txn: Txn) -> TokenRecord | None:
            txn.execute(
                "SELECT t.token_hash, t.user_id, t.device_id, t.expires_at_ts, u.is_admin, u.is_guest, u.deactivated,"
                " u.locked FROM access_tokens AS t JOIN users AS u ON u.user_id = t.user_id WHERE t.token_hash = ?",
                (token_hash,),
            )
            row = txn.fetchone()
            if row is None:
                return None
            return TokenRecord(
                token_hash=str(row[0]),
                user_id=str(row[1]),
                device_id=str(row[2]),
                expires_at_ts=None if row[3] is None else int(row[3]),
                is_admin=bool(row[4]),
                is_guest=bool(row[5]),
                deactivated=bool(row[6]),
                locked=bool(row[7]),
            )

        return await self._pool.run_read("get_token", get_token_txn)

    async def rotate_refresh_token(
        self, old_hash: str, now_ms: int, new_access_hash: str, new_access_expires: int | None,
        new_refresh_hash: str, new_refresh_expires: int | None,
    ) -> tuple[str, str] | None:
        """Exchanges a refresh token for a new access/refresh pair (spec ``POST /refresh``).

        The old refresh token stays usable until its successor is used (a retried refresh after a lost
        response works): using a token ends its predecessor, and refreshing the same token twice replaces
        the pair issued the first time.

        Returns:
            ``(user_id, device_id)``, or None when the token is unknown or expired.
        """

        def rotate_txn(txn: Txn) -> tuple[str, str] | None:
            txn.execute(
                "SELECT user_id, device_id, expires_at_ts, next_token_hash FROM refresh_tokens WHERE token_hash = ?",
                (old_hash,),
            )
            row = txn.fetchone()
            if row is None:
                return None
            user_id, device_id, expires, next_hash = str(row[0]), str(row[1]), row[2], row[3]
            if expires is not None and int(expires) <= now_ms:
                return None
            if next_hash is not None:  # a retry: drop the pair handed out the first time
                txn.execute("DELETE FROM access_tokens WHERE refresh_token_hash = ?", (next_hash,))
                txn.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (next_hash,))
            # Using this token retires the token it replaced, and that token's access tokens.
            txn.execute("SELECT token_hash FROM refresh_tokens WHERE next_token_hash = ?", (old_hash,))
            for (pred,) in txn.fetchall():
                txn.execute("DELETE FROM access_tokens WHERE refresh_token_hash = ?", (pred,))
                txn.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (pred,))
            txn.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, expires_at_ts)"
                " VALUES (?, ?, ?, ?, ?)",
                (new_refresh_hash, user_id, device_id, now_ms, new_refresh_expires),
            )
            txn.execute(
                "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_at_ts,"
                " refresh_token_hash) VALUES (?, ?, ?, ?, ?, ?)",
                (new_access_hash, user_id, device_id, now_ms, new_access_expires, new_refresh_hash),
            )
            txn.execute("UPDATE refresh_tokens SET next_token_hash = ? WHERE token_hash = ?", (new_refresh_hash, old_hash))
            return user_id, device_id

        return await self._pool.run_txn("rotate_refresh_token", rotate_txn)

    async def delete_devices(self, user_id: str, device_ids: Sequence[str]) -> None:
        """Deletes the user's devices and every token of them (unknown IDs are ignored)."""
        await self._pool.run_txn("delete_devices", _delete_devices_txn, user_id, list(device_ids), self.on_delete_txn)

    async def delete_all_devices(self, user_id: str, except_device_id: str | None = None) -> list[str]:
        """Deletes all of a user's devices (but one), returning the deleted IDs."""

        def delete_all_txn(txn: Txn) -> list[str]:
            txn.execute("SELECT device_id FROM devices WHERE user_id = ?", (user_id,))
            ids = [str(r[0]) for r in txn.fetchall() if str(r[0]) != except_device_id]
            _delete_devices_txn(txn, user_id, ids, self.on_delete_txn)
            return ids

        return await self._pool.run_txn("delete_all_devices", delete_all_txn)

    def delete_devices_txn(self, txn: Txn, user_id: str, device_ids: Sequence[str]) -> None:
        """Deletes the user's devices, their tokens and (through the hooks) their keys and inboxes
        inside the caller's transaction (unknown IDs are ignored)."""
        _delete_devices_txn(txn, user_id, list(device_ids), self.on_delete_txn)

    async def get_devices(self, user_id: str) -> list[DeviceRecord]:
        def get_devices_txn(txn: Txn) -> list[DeviceRecord]:
            txn.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = ? ORDER BY device_id", (user_id,)  # noqa: S608
            )
            return [_row_to_device(r) for r in txn.fetchall()]

        return await self._pool.run_read("get_devices", get_devices_txn)

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        def get_device_txn(txn: Txn) -> DeviceRecord | None:
            txn.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = ? AND device_id = ?",  # noqa: S608
                (user_id, device_id),
            )
            row = txn.fetchone()
            return None if row is None else _row_to_device(row)

        return await self._pool.run_read("get_device", get_device_txn)

    async def set_display_name(self, user_id: str, device_id: str, display_name: str | None) -> bool:
        """Renames a device. Returns False when it does not exist."""

        def rename_txn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                (display_name, user_id, device_id),
            )
            return txn.rowcount > 0

        return await self._pool.run_txn("set_device_display_name", rename_txn)

    async def record_last_seen(self, user_id: str, device_id: str, ip: str | None, user_agent: str | None, ts: int) -> None:
        """Stores when, where from and with what client a device was last used (audit AUTH-6)."""
        await self._pool.run_txn(
            "record_last_seen",
            lambda txn: txn.execute(
                "UPDATE devices SET last_seen_ts = ?, last_seen_ip = ?, last_seen_user_agent = ?"
                " WHERE user_id = ? AND device_id = ?",
                (ts, ip, user_agent, user_id, device_id),
            ),
        )
