"""The ``user_filters`` aggregate: sync filters uploaded by clients (spec "Filtering").

Filter IDs are per-user integers (the API shows them as decimal strings), allocated as one more than the
user's highest. Uploading a filter identical to an existing one (same canonical JSON) returns the
existing ID, since clients upload the same filter on every start.
"""

from __future__ import annotations

import json
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn
from sc_proto.json import encode_canonical_json

_MAX_ALLOCATION_ATTEMPTS = 5


class FilterStore:
    """Reads and writes the ``user_filters`` table.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    async def add_filter(self, user_id: str, filter_json: dict[str, Any]) -> int:
        """Stores a filter for ``user_id`` and returns its ID (an existing one for an identical filter)."""
        encoded = encode_canonical_json(filter_json).decode("utf-8")

        def add_filter_txn(txn: Txn) -> int:
            txn.execute(
                "SELECT filter_id FROM user_filters WHERE user_id = ? AND filter_json = ? ORDER BY filter_id LIMIT 1",
                (user_id, encoded),
            )
            row = txn.fetchone()
            if row is not None:
                return int(row[0])
            for _ in range(_MAX_ALLOCATION_ATTEMPTS):
                txn.execute("SELECT COALESCE(MAX(filter_id), -1) + 1 FROM user_filters WHERE user_id = ?", (user_id,))
                found = txn.fetchone()
                filter_id = 0 if found is None else int(found[0])
                # A concurrent writer that took the same ID makes PostgreSQL raise a (retried)
                # serialization failure here; a visible conflict just means "try the next ID".
                txn.execute(
                    "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)"
                    " ON CONFLICT (user_id, filter_id) DO NOTHING",
                    (user_id, filter_id, encoded),
                )
                if txn.rowcount > 0:
                    return filter_id
            raise RuntimeError("could not allocate a filter ID")

        return await self._pool.run_txn("add_user_filter", add_filter_txn)

    async def get_filter(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        """Returns the user's filter ``filter_id``, or None."""

        def get_filter_txn(txn: Txn) -> dict[str, Any] | None:
            txn.execute(
                "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?", (user_id, filter_id)
            )
            row = txn.fetchone()
            if row is None:
                return None
            value = json.loads(str(row[0]))
            return value if isinstance(value, dict) else None

        return await self._pool.run_read("get_user_filter", get_filter_txn)
