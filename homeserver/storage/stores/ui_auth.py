"""User-interactive authentication sessions and registration tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn


@dataclass(frozen=True)
class UIASession:
    session_id: str
    created_ts: int
    request_hash: str
    user_id: str | None
    completed_stages: tuple[str, ...]



@dataclass(frozen=True)
class RegistrationTokenRecord:
    """One row of ``registration_tokens`` (admin API, issue 3)."""

    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_ts: int | None


_TOKEN_COLUMNS = "token, uses_allowed, pending, completed, expiry_ts"  # noqa: S105 - column names
_VALID_TOKEN_SQL = "((uses_allowed IS NULL OR pending + completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > ?))"  # noqa: S105 - SQL


def _row_to_token(row: tuple[Any, ...]) -> RegistrationTokenRecord:
    return RegistrationTokenRecord(
        token=str(row[0]),
        uses_allowed=None if row[1] is None else int(row[1]),
        pending=int(row[2]),
        completed=int(row[3]),
        expiry_ts=None if row[4] is None else int(row[4]),
    )

class UIAuthStore:
    """Reads and writes ``ui_auth_sessions`` and ``registration_tokens``."""

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    async def create_session(self, session_id: str, now_ms: int, request_hash: str, user_id: str | None) -> None:
        await self._pool.run_txn(
            "create_ui_auth_session",
            lambda txn: txn.execute(
                "INSERT INTO ui_auth_sessions (session_id, created_ts, request_hash, user_id, completed_stages)"
                " VALUES (?, ?, ?, ?, ?)",
                (session_id, now_ms, request_hash, user_id, "[]"),
            ),
        )

    async def get_session(self, session_id: str) -> UIASession | None:
        def get_txn(txn: Txn) -> UIASession | None:
            txn.execute(
                "SELECT session_id, created_ts, request_hash, user_id, completed_stages FROM ui_auth_sessions"
                " WHERE session_id = ?",
                (session_id,),
            )
            row = txn.fetchone()
            if row is None:
                return None
            return UIASession(
                str(row[0]), int(row[1]), str(row[2]),
                None if row[3] is None else str(row[3]), tuple(json.loads(str(row[4]))),
            )

        return await self._pool.run_read("get_ui_auth_session", get_txn)

    async def add_completed_stage(self, session_id: str, stage: str) -> tuple[str, ...]:
        """Records a completed stage; returns all completed stages of the session."""

        def add_txn(txn: Txn) -> tuple[str, ...]:
            txn.execute("SELECT completed_stages FROM ui_auth_sessions WHERE session_id = ?", (session_id,))
            row = txn.fetchone()
            stages: list[str] = json.loads(str(row[0])) if row else []
            if stage not in stages:
                stages.append(stage)
            txn.execute(
                "UPDATE ui_auth_sessions SET completed_stages = ? WHERE session_id = ?", (json.dumps(stages), session_id)
            )
            return tuple(stages)

        return await self._pool.run_txn("add_ui_auth_stage", add_txn)

    async def delete_session(self, session_id: str) -> None:
        await self._pool.run_txn(
            "delete_ui_auth_session",
            lambda txn: txn.execute("DELETE FROM ui_auth_sessions WHERE session_id = ?", (session_id,)),
        )

    async def delete_expired(self, before_ts: int) -> None:
        await self._pool.run_txn(
            "delete_expired_ui_auth",
            lambda txn: txn.execute("DELETE FROM ui_auth_sessions WHERE created_ts < ?", (before_ts,)),
        )

    async def registration_token_valid(self, token: str, now_ms: int) -> bool:
        """Whether a database registration token exists, is unexpired and has uses left."""

        def valid_txn(txn: Txn) -> bool:
            txn.execute(
                "SELECT uses_allowed, pending, completed, expiry_ts FROM registration_tokens WHERE token = ?", (token,)
            )
            row = txn.fetchone()
            if row is None:
                return False
            uses, pending, completed, expiry = row
            if expiry is not None and int(expiry) <= now_ms:
                return False
            return uses is None or int(pending) + int(completed) < int(uses)

        return await self._pool.run_read("registration_token_valid", valid_txn)

    async def consume_registration_token(self, token: str, now_ms: int) -> bool:
        """Atomically takes one use of a database registration token.

        The check and the count are one conditional ``UPDATE``, so concurrent registrations can never use
        a token more often than ``uses_allowed``. Returns False when the token is unknown, expired or used up.
        """

        def consume_txn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE registration_tokens SET completed = completed + 1 WHERE token = ?"
                " AND (expiry_ts IS NULL OR expiry_ts > ?)"
                " AND (uses_allowed IS NULL OR pending + completed < uses_allowed)",
                (token, now_ms),
            )
            return txn.rowcount == 1

        return await self._pool.run_txn("consume_registration_token", consume_txn)

    async def create_registration_token(self, token: str, uses_allowed: int | None, expiry_ts: int | None) -> None:
        await self._pool.run_txn(
            "create_registration_token",
            lambda txn: txn.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES (?, ?, ?)",
                (token, uses_allowed, expiry_ts),
            ),
        )

    # ------------------------------------------------------------------ admin API (issue 3)

    async def list_registration_tokens(self, valid: bool | None, now_ms: int) -> list[RegistrationTokenRecord]:
        """Returns every registration token, or only the (in)valid ones, ordered by token."""

        def list_txn(txn: Txn) -> list[RegistrationTokenRecord]:
            where, args = "", []
            if valid is not None:
                where = f" WHERE {'' if valid else 'NOT '}{_VALID_TOKEN_SQL}"
                args.append(now_ms)
            txn.execute(f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens{where} ORDER BY token", args)  # noqa: S608
            return [_row_to_token(r) for r in txn.fetchall()]

        return await self._pool.run_read("list_registration_tokens", list_txn)

    async def get_registration_token(self, token: str) -> RegistrationTokenRecord | None:
        def get_txn(txn: Txn) -> RegistrationTokenRecord | None:
            txn.execute(f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens WHERE token = ?", (token,))  # noqa: S608
            row = txn.fetchone()
            return None if row is None else _row_to_token(row)

        return await self._pool.run_read("get_registration_token", get_txn)

    async def add_registration_token(self, token: str, uses_allowed: int | None, expiry_ts: int | None) -> bool:
        """Creates a token unless one with that name exists; returns whether it was created."""

        def add_txn(txn: Txn) -> bool:
            txn.execute("SELECT 1 FROM registration_tokens WHERE token = ?", (token,))
            if txn.fetchone() is not None:
                return False
            txn.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES (?, ?, ?)",
                (token, uses_allowed, expiry_ts),
            )
            return True

        return await self._pool.run_txn("add_registration_token", add_txn)

    async def update_registration_token(
        self, token: str, changes: dict[str, int | None]
    ) -> RegistrationTokenRecord | None:
        """Sets ``uses_allowed`` and/or ``expiry_ts``; returns the new row, or None if there is no such token.

        Raises:
            ValueError: ``changes`` names another column.
        """
        if set(changes) - {"uses_allowed", "expiry_ts"}:
            raise ValueError(f"unknown registration token fields {sorted(changes)}")

        def update_txn(txn: Txn) -> RegistrationTokenRecord | None:
            for column, value in sorted(changes.items()):
                txn.execute(f"UPDATE registration_tokens SET {column} = ? WHERE token = ?", (value, token))  # noqa: S608
            txn.execute(f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens WHERE token = ?", (token,))  # noqa: S608
            row = txn.fetchone()
            return None if row is None else _row_to_token(row)

        return await self._pool.run_txn("update_registration_token", update_txn)

    async def delete_registration_token(self, token: str) -> bool:
        """Deletes a token; returns False when there was none."""

        def delete_txn(txn: Txn) -> bool:
            txn.execute("DELETE FROM registration_tokens WHERE token = ?", (token,))
            return txn.rowcount > 0

        return await self._pool.run_txn("delete_registration_token", delete_txn)
