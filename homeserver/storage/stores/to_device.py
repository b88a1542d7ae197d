"""The to-device aggregate: per-device inboxes and client transaction IDs.

Theory of operation (spec "Send-to-Device messaging"):

* One ``/sendToDevice`` request takes one stream id and writes at most one inbox row per target
  device, with its client transaction ID, in one transaction: a retried transaction ID finds its row
  and writes nothing, so nothing is delivered twice.
* ``/sync`` reads a device's inbox after the position the device acknowledged, in stream order, and
  deletes rows up to that position (the device has seen them: it synced with a later token).
* Stream ids: a PostgreSQL sequence; on SQLite an in-process counter seeded from
  ``to_device_stream_hwm``, which every write raises (inbox rows are deleted, so their maximum cannot
  seed it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn

JsonDict = dict[str, Any]


class ToDeviceStore:
    """Reads and writes ``to_device_inbox`` and ``to_device_txns``.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ positions

    async def get_max_stream_id(self) -> int:
        """The highest stream id ever handed out (every one of them is finished at start-up)."""

        def max_txn(txn: Txn) -> int:
            if txn.engine.name == "postgres":
                txn.execute("SELECT last_value, is_called FROM to_device_stream_seq")
                row = txn.fetchone()
                return int(row[0]) if row and bool(row[1]) else 0
            txn.execute("SELECT MAX(stream_id) FROM to_device_stream_hwm")
            row = txn.fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        return await self._pool.run_read("to_device_max_stream_id", max_txn)

    @staticmethod
    def raise_high_water_mark_txn(txn: Txn, stream_id: int) -> None:
        """Records ``stream_id`` as handed out (SQLite only; PostgreSQL's sequence remembers)."""
        if txn.engine.name != "postgres":
            txn.execute("UPDATE to_device_stream_hwm SET stream_id = ? WHERE stream_id < ?", (stream_id, stream_id))

    # ------------------------------------------------------------------ sending

    @staticmethod
    def claim_txn_id_txn(txn: Txn, sender: tuple[str, str, str], stream_id: int, now_ms: int) -> bool:
        """Records a client transaction ID ``(user_id, device_id, txn_id)``; False when it was already
        used (a retry: the caller writes nothing). A concurrent twin waits for this transaction and
        then finds the row."""
        txn.execute(
            "INSERT INTO to_device_txns (user_id, device_id, txn_id, stream_id, created_ts) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
            (*sender, stream_id, now_ms),
        )
        return txn.rowcount > 0

    @staticmethod
    def add_messages_txn(txn: Txn, stream_id: int, messages: Sequence[tuple[str, str, str]]) -> None:
        """Stores one request's messages: ``(user_id, device_id, message_json)`` per target device."""
        txn.execute_many(
            "INSERT INTO to_device_inbox (user_id, device_id, stream_id, message_json) VALUES (?, ?, ?, ?)",
            [(user_id, device_id, stream_id, message) for user_id, device_id, message in messages],
        )

    @staticmethod
    def get_existing_devices_txn(txn: Txn, user_id: str, device_ids: Sequence[str] | None) -> list[str]:
        """The user's existing devices among ``device_ids`` (all of them when None)."""
        txn.execute("SELECT device_id FROM devices WHERE user_id = ? ORDER BY device_id", (user_id,))
        existing = [str(r[0]) for r in txn.fetchall()]
        if device_ids is None:
            return existing
        wanted = set(device_ids)
        return [d for d in existing if d in wanted]

    # ------------------------------------------------------------------ delivery

    async def get_messages(
        self, user_id: str, device_id: str, after: int, up_to: int, limit: int
    ) -> list[tuple[int, JsonDict]]:
        """Messages of a device in ``(after, up_to]``, oldest first, at most ``limit``."""

        def get_txn(txn: Txn) -> list[tuple[int, JsonDict]]:
            txn.execute(
                "SELECT stream_id, message_json FROM to_device_inbox WHERE user_id = ? AND device_id = ?"
                " AND stream_id > ? AND stream_id <= ? ORDER BY stream_id LIMIT ?",
                (user_id, device_id, after, up_to, limit),
            )
            out: list[tuple[int, JsonDict]] = []
            for stream_id, message_json in txn.fetchall():
                message = json.loads(str(message_json))
                if isinstance(message, dict):
                    out.append((int(stream_id), message))
            return out

        if after >= up_to:
            return []
        return await self._pool.run_read("get_to_device_messages", get_txn)

    async def acknowledge(self, user_id: str, device_id: str, up_to: int) -> int:
        """Deletes the device's messages up to ``up_to`` (it has seen them).

        Returns:
            How many messages were deleted.
        """

        def ack_txn(txn: Txn) -> int:
            txn.execute(
                "DELETE FROM to_device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
                (user_id, device_id, up_to),
            )
            return max(txn.rowcount, 0)

        return await self._pool.run_txn("ack_to_device", ack_txn)

    async def has_messages_up_to(self, user_id: str, device_id: str, up_to: int) -> bool:
        """Whether the device has undeleted messages at or below ``up_to`` (an ack would delete some)."""

        def has_txn(txn: Txn) -> bool:
            txn.execute(
                "SELECT 1 FROM to_device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ? LIMIT 1",
                (user_id, device_id, up_to),
            )
            return txn.fetchone() is not None

        return await self._pool.run_read("has_to_device_up_to", has_txn)

    # ------------------------------------------------------------------ housekeeping

    @staticmethod
    def delete_device_txn(txn: Txn, user_id: str, device_id: str) -> None:
        """Deletes a device's inbox and transaction IDs (the device is being deleted)."""
        for table in ("to_device_inbox", "to_device_txns"):
            txn.execute(f"DELETE FROM {table} WHERE user_id = ? AND device_id = ?", (user_id, device_id))  # noqa: S608

    async def prune_txn_ids(self, older_than_ms: int) -> int:
        """Forgets client transaction IDs older than ``older_than_ms`` (a retry that late is new)."""

        def prune_txn(txn: Txn) -> int:
            txn.execute("DELETE FROM to_device_txns WHERE created_ts < ?", (older_than_ms,))
            return max(txn.rowcount, 0)

        return await self._pool.run_txn("prune_to_device_txns", prune_txn)

    async def count_inbox(self, user_id: str, device_id: str) -> int:
        """Undelivered-or-unacknowledged messages of a device (tests, admin)."""

        def count_txn(txn: Txn) -> int:
            txn.execute(
                "SELECT COUNT(*) FROM to_device_inbox WHERE user_id = ? AND device_id = ?", (user_id, device_id)
            )
            row = txn.fetchone()
            return int(row[0]) if row else 0

        return await self._pool.run_read("count_to_device_inbox", count_txn)
