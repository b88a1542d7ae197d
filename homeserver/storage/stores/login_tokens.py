"""Short-lived, single-use ``m.login.token`` tokens (stored as SHA-256 digests, ADR 0002)."""

from __future__ import annotations

from homeserver.storage.pool import DatabasePool, Txn


class LoginTokenStore:
    """Reads and writes ``login_tokens``."""

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    async def add(self, token_hash: str, user_id: str, expires_at_ts: int) -> None:
        await self._pool.run_txn(
            "add_login_token",
            lambda txn: txn.execute(
                "INSERT INTO login_tokens (token_hash, user_id, expires_at_ts) VALUES (?, ?, ?)",
                (token_hash, user_id, expires_at_ts),
            ),
        )

    async def consume(self, token_hash: str, now_ms: int) -> str | None:
        """Uses a token up: returns its user if it existed and had not expired. Never usable twice."""

        def consume_txn(txn: Txn) -> str | None:
            txn.execute("SELECT user_id, expires_at_ts FROM login_tokens WHERE token_hash = ?", (token_hash,))
            row = txn.fetchone()
            if row is None:
                return None
            txn.execute("DELETE FROM login_tokens WHERE token_hash = ?", (token_hash,))
            if txn.rowcount != 1:  # a concurrent login used it first
                return None
            txn.execute("DELETE FROM login_tokens WHERE expires_at_ts <= ?", (now_ms,))
            return str(row[0]) if int(row[1]) > now_ms else None

        return await self._pool.run_txn("consume_login_token", consume_txn)
