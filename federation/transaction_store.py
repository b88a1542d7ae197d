"""The answers given to inbound transactions, per ``(origin, txn_id)`` (table
``federation_inbound_transactions``, delta 0008/30; this module is its one owner).

A sending server retries a transaction until it gets a 200; storing the answer with the key lets the
retry get the same answer without its PDUs and EDUs being handled twice (EDUs are not idempotent).
"""

from __future__ import annotations

import json
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn
from sc_proto.json import encode_json

JsonDict = dict[str, Any]


class InboundTransactionStore:
    """Stored answers of inbound transactions.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    async def get_response(self, origin: str, txn_id: str) -> JsonDict | None:
        """The answer we gave to ``(origin, txn_id)``, or None."""

        def get_txn(txn: Txn) -> JsonDict | None:
            txn.execute(
                "SELECT response_json FROM federation_inbound_transactions WHERE origin = ? AND txn_id = ?",
                (origin, txn_id),
            )
            row = txn.fetchone()
            return None if row is None else dict(json.loads(row[0]))

        return await self._pool.run_read("get_inbound_txn_response", get_txn)

    async def set_response(self, origin: str, txn_id: str, response: JsonDict, now_ms: int) -> None:
        """Records the answer (the first one recorded wins)."""
        raw = encode_json(response).decode("utf-8")

        def set_txn(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO federation_inbound_transactions (origin, txn_id, response_json, received_ts)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (origin, txn_id) DO NOTHING",
                (origin, txn_id, raw, now_ms),
            )

        await self._pool.run_txn("set_inbound_txn_response", set_txn)

    async def prune(self, before_ms: int) -> int:
        """Deletes answers recorded before ``before_ms``; returns how many."""

        def prune_txn(txn: Txn) -> int:
            txn.execute("DELETE FROM federation_inbound_transactions WHERE received_ts < ?", (before_ms,))
            return int(txn.rowcount)

        return await self._pool.run_txn("prune_inbound_txns", prune_txn)
