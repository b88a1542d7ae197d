"""The ``account_data`` aggregate: per-user client config, global or per room (spec "Client Config").

Theory of operation: every write takes the next account-data stream id from the one-row
``account_data_stream_id`` counter *in the same transaction* (``UPDATE ... SET stream_id = stream_id +
1``) and stores it on the row it writes. On PostgreSQL the counter row's lock is held until commit, so a
second writer waits, then fails with a serialization error under ``REPEATABLE READ`` and is retried by
the pool with a fresh snapshot; on SQLite all writes run on one writer connection. Either way:

* stream ids strictly increase in commit order, and
* once a reader sees stream id ``n`` as the current position, every write with an id ``<= n`` is
  visible too, so ``/sync`` can read "changed since ``n``" without missing a concurrent write.

A row keeps only its latest content and stream id; global account data has ``room_id = ''``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn
from sc_proto.json import encode_canonical_json

logger = logging.getLogger(__name__)

GLOBAL_ROOM = ""
"""The ``room_id`` column value of global (not room-scoped) account data."""


@dataclass(frozen=True)
class AccountDataChange:
    """One account data entry as written at ``stream_id``.

    Attributes:
        room_id: the room, or None for global account data.
        data_type: the event type (e.g. ``m.direct``).
        content: the content object.
        stream_id: the stream id of the write.
    """

    room_id: str | None
    data_type: str
    content: dict[str, Any]
    stream_id: int


def _encode(content: dict[str, Any]) -> str:
    return encode_canonical_json(content).decode("utf-8")


def _decode(text: object) -> dict[str, Any]:
    value = json.loads(str(text))
    return value if isinstance(value, dict) else {}


def next_stream_id_txn(txn: Txn) -> int:
    """Allocates the next account data stream id inside the caller's write transaction.

    The counter row is created on first use if it is missing (the schema delta seeds it, but a
    truncated table must not make ids go backwards: a new row starts above every stored id).
    """
    txn.execute(
        "INSERT INTO account_data_stream_id (singleton, stream_id)"
        " VALUES ('X', (SELECT COALESCE(MAX(stream_id), 0) FROM account_data) + 1)"
        " ON CONFLICT (singleton) DO UPDATE SET stream_id = account_data_stream_id.stream_id + 1"
    )
    txn.execute("SELECT stream_id FROM account_data_stream_id")
    row = txn.fetchone()
    if row is None:  # cannot happen after the upsert above
        raise RuntimeError("account_data_stream_id has no row")
    return int(row[0])


class AccountDataStore:
    """Reads and writes the ``account_data`` table.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool
        self.on_written: list[Callable[[str, int], None]] = []
        """Called with ``(user_id, stream_id)`` after each committed write (the composition root
        wakes ``/sync`` through it)."""

    async def set_account_data(
        self, user_id: str, room_id: str | None, data_type: str, content: dict[str, Any]
    ) -> int:
        """Stores ``content`` as the user's ``data_type`` account data (global when ``room_id`` is None).

        Returns:
            The stream id of the write.
        """
        encoded = _encode(content)

        def set_account_data_txn(txn: Txn) -> int:
            stream_id = next_stream_id_txn(txn)
            txn.execute(
                "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, room_id, data_type)"
                " DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
                (user_id, room_id or GLOBAL_ROOM, data_type, encoded, stream_id),
            )
            return stream_id

        stream_id: int = await self._pool.run_txn("set_account_data", set_account_data_txn)
        for hook in self.on_written:
            try:
                hook(user_id, stream_id)
            except Exception:
                logger.exception("account data on_written hook failed")
        return stream_id

    async def get_account_data(self, user_id: str, room_id: str | None, data_type: str) -> dict[str, Any] | None:
        """Returns the content stored for ``data_type``, or None."""

        def get_account_data_txn(txn: Txn) -> dict[str, Any] | None:
            txn.execute(
                "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND data_type = ?",
                (user_id, room_id or GLOBAL_ROOM, data_type),
            )
            row = txn.fetchone()
            return None if row is None else _decode(row[0])

        return await self._pool.run_read("get_account_data", get_account_data_txn)

    async def get_current_stream_id(self) -> int:
        """The highest account data stream id allocated (and committed) so far."""

        def current_txn(txn: Txn) -> int:
            txn.execute("SELECT stream_id FROM account_data_stream_id")
            row = txn.fetchone()
            if row is None:
                txn.execute("SELECT COALESCE(MAX(stream_id), 0) FROM account_data")
                row = txn.fetchone()
            return 0 if row is None else int(row[0])

        return await self._pool.run_read("get_account_data_stream_id", current_txn)

    async def get_changed_since(
        self, user_id: str, since_stream_id: int, *, up_to: int | None = None, limit: int = 1000
    ) -> list[AccountDataChange]:
        """Returns the user's account data written after ``since_stream_id``, oldest first.

        Args:
            user_id: the user.
            since_stream_id: exclusive lower bound (0 for everything).
            up_to: inclusive upper bound (the sync token's position), or None for no bound.
            limit: at most this many entries.
        """

        def changed_txn(txn: Txn) -> list[AccountDataChange]:
            sql = "SELECT room_id, data_type, content, stream_id FROM account_data WHERE user_id = ? AND stream_id > ?"
            args: list[object] = [user_id, since_stream_id]
            if up_to is not None:
                sql += " AND stream_id <= ?"
                args.append(up_to)
            txn.execute(sql + " ORDER BY stream_id LIMIT ?", [*args, limit])
            return [
                AccountDataChange(
                    room_id=str(r[0]) or None, data_type=str(r[1]), content=_decode(r[2]), stream_id=int(r[3])
                )
                for r in txn.fetchall()
            ]

        return await self._pool.run_read("get_account_data_changed_since", changed_txn)

    async def delete_all_for_user(self, user_id: str) -> None:
        """Erases all of a user's account data (deactivation with ``erase: true``)."""
        await self._pool.run_txn(
            "delete_account_data", lambda txn: txn.execute("DELETE FROM account_data WHERE user_id = ?", (user_id,))
        )
