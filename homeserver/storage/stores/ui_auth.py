"""User-interactive authentication sessions and registration tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass

from homeserver.storage.pool import DatabasePool, Txn


@dataclass(frozen=True)
class UIASession:
    session_id: str
    created_ts: int
    request_hash: str
    user_id: str | None
    completed_stages: tuple[str, ...]


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
