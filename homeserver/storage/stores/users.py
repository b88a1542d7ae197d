"""The ``users`` aggregate: accounts, admin flags, deactivation and failed-login accounting.

Failed-login accounting is pessimistic and atomic (audit AUTH-1, RACE-5/7): a login *reserves* a password
check in a write transaction before the password is verified, and reports the outcome afterwards. Within
one window, failures plus checks still in flight never exceed ``max_attempts``, so however many wrong
passwords arrive at once, at most ``max_attempts`` are ever checked. Only real failures lock the account
(a burst of correct logins is at worst asked to retry a moment later); a success clears the failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.profiles import ProfileStore


@dataclass(frozen=True)
class UserRecord:
    """One account row."""

    user_id: str
    password_hash: str | None
    created_ts: int
    is_admin: bool
    is_guest: bool
    deactivated: bool
    locked_until_ts: int
    locked: bool = False
    """The administrative lock (``users.locked``); unrelated to the failed-login ``locked_until_ts``."""


@dataclass(frozen=True)
class AttemptDecision:
    """Result of :meth:`UserStore.reserve_login_attempt`.

    Attributes:
        allowed: whether the caller may check the password now.
        locked_until_ts: when the lock ends (0 when not locked).
        busy: refused only because other checks of this account are in flight (retry shortly).
    """

    allowed: bool
    locked_until_ts: int
    busy: bool = False


_USER_COLUMNS = "user_id, password_hash, created_ts, is_admin, is_guest, deactivated, locked_until_ts, locked"


def _row_to_user(row: tuple[Any, ...]) -> UserRecord:
    return UserRecord(
        user_id=str(row[0]),
        password_hash=None if row[1] is None else str(row[1]),
        created_ts=int(row[2]),
        is_admin=bool(row[3]),
        is_guest=bool(row[4]),
        deactivated=bool(row[5]),
        locked_until_ts=int(row[6]),
        locked=bool(row[7]),
    )



@dataclass(frozen=True)
class AdminUserView:
    """An account as the admin API shows it: flags plus profile."""

    user_id: str
    created_ts: int
    is_admin: bool
    is_guest: bool
    deactivated: bool
    locked: bool
    displayname: str | None
    avatar_url: str | None


@dataclass(frozen=True)
class AdminUserQuery:
    """Filters, order and page of :meth:`UserStore.list_users_admin`.

    Attributes:
        offset: rows to skip.
        limit: most rows to return.
        domain: the server name; ``name`` matches localparts of ``@<localpart>:<domain>``.
        name: substring (case-insensitive) of the localpart or the display name.
        user_id_contains: substring (case-insensitive) of the whole user ID; ignored when ``name`` is set.
        guests: include guest accounts.
        deactivated: include deactivated accounts.
        admins: None for everyone, True for admins only, False for non-admins only.
        locked: include administratively locked accounts.
        order_by: one of :data:`ADMIN_USER_ORDERS`.
        descending: reverse the order.
    """

    offset: int = 0
    limit: int = 100
    domain: str = ""
    name: str | None = None
    user_id_contains: str | None = None
    guests: bool = True
    deactivated: bool = False
    admins: bool | None = None
    locked: bool = True
    order_by: str = "name"
    descending: bool = False


ADMIN_USER_ORDERS: dict[str, str] = {
    "name": "u.user_id",
    "creation_ts": "u.created_ts",
    "admin": "u.is_admin",
    "is_guest": "u.is_guest",
    "deactivated": "u.deactivated",
    "locked": "u.locked",
    "displayname": "COALESCE(p.displayname, '')",
}
"""``order_by`` values of the admin user list, mapped to fixed SQL expressions (never user input)."""

_ADMIN_VIEW_COLUMNS = "u.user_id, u.created_ts, u.is_admin, u.is_guest, u.deactivated, u.locked, p.displayname, p.avatar_url"
_ADMIN_VIEW_FROM = "users AS u LEFT JOIN profiles AS p ON p.user_id = u.user_id"


def _like_escape(text: str) -> str:
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _row_to_admin_view(row: tuple[Any, ...]) -> AdminUserView:
    return AdminUserView(
        user_id=str(row[0]),
        created_ts=int(row[1]),
        is_admin=bool(row[2]),
        is_guest=bool(row[3]),
        deactivated=bool(row[4]),
        locked=bool(row[5]),
        displayname=None if row[6] is None else str(row[6]),
        avatar_url=None if row[7] is None else str(row[7]),
    )


def _admin_where(query: AdminUserQuery) -> tuple[str, list[object]]:
    where: list[str] = []
    args: list[object] = []
    if query.name:
        pattern = f"%{_like_escape(query.name)}%"
        where.append("(lower(u.user_id) LIKE ? ESCAPE '\\' OR lower(p.displayname) LIKE ? ESCAPE '\\')")
        args.extend([f"@{pattern}:{_like_escape(query.domain)}", pattern])
    elif query.user_id_contains:
        where.append("lower(u.user_id) LIKE ? ESCAPE '\\'")
        args.append(f"%{_like_escape(query.user_id_contains)}%")
    for include, column in ((query.guests, "u.is_guest"), (query.deactivated, "u.deactivated"),
                            (query.locked, "u.locked")):
        if not include:
            where.append(f"{column} = ?")
            args.append(False)
    if query.admins is not None:
        where.append("u.is_admin = ?")
        args.append(query.admins)
    return (" WHERE " + " AND ".join(where)) if where else "", args

class UserStore:
    """Reads and writes the ``users`` table.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    async def create_user(
        self,
        user_id: str,
        password_hash: str | None,
        now_ms: int,
        *,
        is_admin: bool = False,
        is_guest: bool = False,
        displayname: str | None = None,
        avatar_url: str | None = None,
    ) -> bool:
        """Creates an account and its profile row in one transaction.

        Returns False (and changes nothing) when the user ID is taken, in any spelling of its case.
        Two creations of the same ID at once are safe on both engines: the insert does nothing on a
        conflict (and PostgreSQL's serialization failure for a row its snapshot cannot see is retried,
        when the re-run of the check finds the row), so exactly one returns True.
        """

        def create_user_txn(txn: Txn) -> bool:
            txn.execute("SELECT 1 FROM users WHERE lower(user_id) = lower(?)", (user_id,))
            if txn.fetchone() is not None:
                return False
            txn.execute(
                "INSERT INTO users (user_id, password_hash, created_ts, is_admin, is_guest) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO NOTHING",
                (user_id, password_hash, now_ms, is_admin, is_guest),
            )
            if txn.rowcount != 1:
                return False
            ProfileStore.insert_profile_txn(txn, user_id, displayname, avatar_url)
            return True

        return await self._pool.run_txn("create_user", create_user_txn)

    async def get_user(self, user_id: str) -> UserRecord | None:
        """Returns the account, or None."""

        def get_user_txn(txn: Txn) -> UserRecord | None:
            txn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = ?", (user_id,))  # noqa: S608
            row = txn.fetchone()
            return None if row is None else _row_to_user(row)

        return await self._pool.run_read("get_user", get_user_txn)

    async def find_user_case_insensitive(self, user_id: str) -> str | None:
        """Returns the stored spelling of ``user_id`` (logins are case-insensitive), or None."""

        def find_txn(txn: Txn) -> str | None:
            txn.execute("SELECT user_id FROM users WHERE user_id = ?", (user_id,))
            row = txn.fetchone()
            if row is None:
                txn.execute("SELECT user_id FROM users WHERE lower(user_id) = lower(?)", (user_id,))
                rows = txn.fetchall()
                row = rows[0] if len(rows) == 1 else None
            return None if row is None else str(row[0])

        return await self._pool.run_read("find_user_case_insensitive", find_txn)

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> None:
        await self._pool.run_txn(
            "set_password_hash",
            lambda txn: txn.execute("UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id)),
        )

    async def set_admin(self, user_id: str, is_admin: bool) -> None:
        await self._pool.run_txn(
            "set_admin", lambda txn: txn.execute("UPDATE users SET is_admin = ? WHERE user_id = ?", (is_admin, user_id))
        )

    async def set_deactivated(self, user_id: str, deactivated: bool) -> None:
        """Marks the account (de)activated. Callers also end its sessions."""

        def set_deactivated_txn(txn: Txn) -> None:
            txn.execute("UPDATE users SET deactivated = ? WHERE user_id = ?", (deactivated, user_id))
            if deactivated:
                txn.execute("UPDATE users SET password_hash = NULL WHERE user_id = ?", (user_id,))

        await self._pool.run_txn("set_deactivated", set_deactivated_txn)

    async def count_users(self) -> int:
        def count_txn(txn: Txn) -> int:
            txn.execute("SELECT COUNT(*) FROM users")
            row = txn.fetchone()
            return int(row[0]) if row else 0

        return await self._pool.run_read("count_users", count_txn)

    async def list_users(
        self, *, offset: int, limit: int, name_contains: str | None, include_deactivated: bool, admins_only: bool | None
    ) -> tuple[list[UserRecord], int]:
        """Returns one page of accounts ordered by user ID, and the total matching."""

        def list_users_txn(txn: Txn) -> tuple[list[UserRecord], int]:
            where: list[str] = []
            args: list[object] = []
            if name_contains:
                where.append("lower(user_id) LIKE ? ESCAPE '\\'")
                escaped = name_contains.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                args.append(f"%{escaped}%")
            if not include_deactivated:
                where.append("deactivated = ?")
                args.append(False)
            if admins_only is not None:
                where.append("is_admin = ?")
                args.append(admins_only)
            clause = (" WHERE " + " AND ".join(where)) if where else ""
            txn.execute(f"SELECT COUNT(*) FROM users{clause}", args)  # noqa: S608
            total_row = txn.fetchone()
            total = int(total_row[0]) if total_row else 0
            txn.execute(
                f"SELECT {_USER_COLUMNS} FROM users{clause} ORDER BY user_id LIMIT ? OFFSET ?",  # noqa: S608
                [*args, limit, offset],
            )
            return [_row_to_user(r) for r in txn.fetchall()], total

        return await self._pool.run_read("list_users", list_users_txn)

    async def reserve_login_attempt(
        self, user_id: str, now_ms: int, *, max_attempts: int, window_ms: int, lock_ms: int
    ) -> AttemptDecision:
        """Atomically reserves one password check for ``user_id``.

        Refused while the account is locked, and while failures plus checks in flight already reach
        ``max_attempts`` in the current window (``busy`` when that is due to checks in flight).
        Every allowed reservation must be followed by :meth:`finish_login_attempt`.
        ``max_attempts <= 0`` disables accounting.
        """

        def reserve_txn(txn: Txn) -> AttemptDecision:
            txn.execute(
                "SELECT failed_logins, pending_logins, failed_window_start_ts, locked_until_ts FROM users"
                " WHERE user_id = ?",
                (user_id,),
            )
            row = txn.fetchone()
            if row is None or max_attempts <= 0:
                return AttemptDecision(True, 0)
            failures, pending, window_start, locked_until = (int(v) for v in row)
            if locked_until > now_ms:
                return AttemptDecision(False, locked_until)
            if now_ms - window_start >= window_ms or locked_until:
                # A new window. Checks lost in a crash (pending never finished) are forgotten too.
                failures, pending, window_start = 0, 0, now_ms
            if failures + pending >= max_attempts:
                txn.execute(
                    "UPDATE users SET failed_logins = ?, pending_logins = ?, failed_window_start_ts = ?,"
                    " locked_until_ts = 0 WHERE user_id = ?",
                    (failures, pending, window_start, user_id),
                )
                return AttemptDecision(False, 0, busy=True)
            txn.execute(
                "UPDATE users SET failed_logins = ?, pending_logins = ?, failed_window_start_ts = ?,"
                " locked_until_ts = 0 WHERE user_id = ?",
                (failures, pending + 1, window_start, user_id),
            )
            return AttemptDecision(True, 0)

        return await self._pool.run_txn("reserve_login_attempt", reserve_txn)

    async def finish_login_attempt(
        self, user_id: str, now_ms: int, *, success: bool, max_attempts: int, lock_ms: int
    ) -> None:
        """Reports the outcome of a reserved check: a success clears failures; the failure that reaches
        ``max_attempts`` locks the account for ``lock_ms``."""

        def finish_txn(txn: Txn) -> None:
            txn.execute("SELECT failed_logins, pending_logins FROM users WHERE user_id = ?", (user_id,))
            row = txn.fetchone()
            if row is None:
                return
            failures, pending = int(row[0]), max(int(row[1]) - 1, 0)
            if success:
                txn.execute(
                    "UPDATE users SET failed_logins = 0, pending_logins = ?, locked_until_ts = 0 WHERE user_id = ?",
                    (pending, user_id),
                )
                return
            failures += 1
            locked_until = now_ms + lock_ms if max_attempts > 0 and failures >= max_attempts else 0
            txn.execute(
                "UPDATE users SET failed_logins = ?, pending_logins = ?, locked_until_ts = ? WHERE user_id = ?",
                (failures, pending, locked_until, user_id),
            )

        await self._pool.run_txn("finish_login_attempt", finish_txn)

    async def set_lock(self, user_id: str, locked_until_ts: int) -> None:
        """Locks (or with 0 unlocks) an account; used by admins."""
        await self._pool.run_txn(
            "set_lock",
            lambda txn: txn.execute(
                "UPDATE users SET locked_until_ts = ?, failed_logins = 0 WHERE user_id = ?", (locked_until_ts, user_id)
            ),
        )

    # ------------------------------------------------------------------ admin API (issue 3)

    async def get_user_admin_view(self, user_id: str) -> AdminUserView | None:
        """Returns the account with its profile, or None."""

        def get_view_txn(txn: Txn) -> AdminUserView | None:
            txn.execute(
                f"SELECT {_ADMIN_VIEW_COLUMNS} FROM {_ADMIN_VIEW_FROM} WHERE u.user_id = ?", (user_id,)  # noqa: S608
            )
            row = txn.fetchone()
            return None if row is None else _row_to_admin_view(row)

        return await self._pool.run_read("get_user_admin_view", get_view_txn)

    async def list_users_admin(self, query: AdminUserQuery) -> tuple[list[AdminUserView], int]:
        """Returns one page of accounts (with profiles) and the number of accounts matching the filters.

        Raises:
            ValueError: ``query.order_by`` is not in :data:`ADMIN_USER_ORDERS` (callers validate it).
        """
        order = ADMIN_USER_ORDERS.get(query.order_by)
        if order is None:
            raise ValueError(f"unknown order {query.order_by!r}")
        direction = "DESC" if query.descending else "ASC"

        def list_txn(txn: Txn) -> tuple[list[AdminUserView], int]:
            clause, args = _admin_where(query)
            txn.execute(f"SELECT COUNT(*) FROM {_ADMIN_VIEW_FROM}{clause}", args)  # noqa: S608
            total_row = txn.fetchone()
            total = int(total_row[0]) if total_row else 0
            txn.execute(
                f"SELECT {_ADMIN_VIEW_COLUMNS} FROM {_ADMIN_VIEW_FROM}{clause}"  # noqa: S608 - fixed fragments
                f" ORDER BY {order} {direction}, u.user_id {direction} LIMIT ? OFFSET ?",
                [*args, query.limit, query.offset],
            )
            return [_row_to_admin_view(r) for r in txn.fetchall()], total

        return await self._pool.run_read("list_users_admin", list_txn)

    async def set_admin_lock(self, user_id: str, locked: bool) -> bool:
        """Sets the administrative lock (``users.locked``). Returns False when the user does not exist.

        This lock makes every access token of the account answer ``M_USER_LOCKED``; the failed-login
        lockout (``locked_until_ts``, :meth:`set_lock`) is a different thing and is left alone.
        """

        def lock_txn(txn: Txn) -> bool:
            txn.execute("UPDATE users SET locked = ? WHERE user_id = ?", (locked, user_id))
            return txn.rowcount > 0

        return await self._pool.run_txn("set_admin_lock", lock_txn)
