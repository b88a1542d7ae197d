"""The ``presence_state`` aggregate: the last broadcast presence of each local user.

Presence lives in memory (:class:`homeserver.presence.service.PresenceService`); this table only lets
a restart resume where the process stopped. Rows are written on change, in batches (one transaction
per sweep), and read once at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from homeserver.storage.pool import DatabasePool, Txn


@dataclass(frozen=True)
class StoredPresence:
    """One user's persisted presence.

    Attributes:
        user_id: the (local) user.
        state: ``online``, ``unavailable`` or ``offline``.
        status_msg: the status message, if any.
        last_active_ts: when the user was last active (ms since the epoch; 0 for never).
        stream_id: the presence stream position of the change.
    """

    user_id: str
    state: str
    status_msg: str | None
    last_active_ts: int
    stream_id: int


class PresenceStore:
    """Reads and writes ``presence_state``.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    async def store_presence(self, rows: Sequence[StoredPresence]) -> None:
        """Upserts the given users' presence in one transaction (no-op for an empty batch)."""
        if not rows:
            return

        def store_presence_txn(txn: Txn) -> None:
            txn.execute_many(
                "INSERT INTO presence_state (user_id, state, status_msg, last_active_ts, stream_id)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,"
                " status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,"
                " stream_id = excluded.stream_id",
                [(r.user_id, r.state, r.status_msg, r.last_active_ts, r.stream_id) for r in rows],
            )

        await self._pool.run_txn("store_presence", store_presence_txn)

    async def get_max_stream_id(self) -> int:
        """The highest stored presence stream position (0 when empty)."""

        def max_txn(txn: Txn) -> int:
            txn.execute("SELECT MAX(stream_id) FROM presence_state")
            row = txn.fetchone()
            return 0 if row is None or row[0] is None else int(row[0])

        return await self._pool.run_read("get_presence_max_stream_id", max_txn)

    async def get_interesting_presence(self) -> list[StoredPresence]:
        """Every stored presence worth restoring: not offline, or carrying a status message."""

        def load_txn(txn: Txn) -> list[StoredPresence]:
            txn.execute(
                "SELECT user_id, state, status_msg, last_active_ts, stream_id FROM presence_state"
                " WHERE state <> 'offline' OR status_msg IS NOT NULL"
            )
            return [
                StoredPresence(
                    user_id=str(r[0]),
                    state=str(r[1]),
                    status_msg=None if r[2] is None else str(r[2]),
                    last_active_ts=int(r[3]),
                    stream_id=int(r[4]),
                )
                for r in txn.fetchall()
            ]

        return await self._pool.run_read("get_interesting_presence", load_txn)

    async def get_presence(self, user_id: str) -> StoredPresence | None:
        """One user's stored presence, or None."""

        def one_txn(txn: Txn) -> StoredPresence | None:
            txn.execute(
                "SELECT state, status_msg, last_active_ts, stream_id FROM presence_state WHERE user_id = ?",
                (user_id,),
            )
            r = txn.fetchone()
            if r is None:
                return None
            return StoredPresence(user_id, str(r[0]), None if r[1] is None else str(r[1]), int(r[2]), int(r[3]))

        return await self._pool.run_read("get_presence", one_txn)
