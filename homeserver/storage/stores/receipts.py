"""The ``receipts`` aggregate: each user's latest read receipt per room, type and thread.

Theory of operation:

* One row per ``(room_id, receipt_type, user_id, thread_id)`` (``thread_id`` is ``''`` for an
  unthreaded receipt). A row holds the acknowledged event, its stream ordering (``event_stream``),
  the receipt's timestamp and the position in the ``receipts`` stream at which the row last moved.
* **Forward only.** A write replaces the row only when the new event is later in the room
  (``event_stream`` strictly greater). The upsert's ``WHERE`` clause decides inside the database, so
  two concurrent writes cannot move a receipt backwards (on PostgreSQL the loser of a race on the
  same row fails its ``REPEATABLE READ`` snapshot and is retried by the pool).
* **Stream positions.** A write that moves a receipt takes the next id of the ``receipts`` stream's
  :class:`~homeserver.streams.writer.StreamWriter` in the same transaction; the writer keeps it in
  flight until commit or rollback, so the stream's current position never passes a receipt that is
  still being written. A write that does not move the receipt allocates nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn
from homeserver.streams.writer import StreamWriter

READ = "m.read"
READ_PRIVATE = "m.read.private"
UNTHREADED = ""
"""The ``thread_id`` column value of an unthreaded receipt."""

_COLUMNS = "room_id, receipt_type, user_id, thread_id, event_id, event_stream, ts, stream_id"


@dataclass(frozen=True)
class Receipt:
    """One stored receipt.

    Attributes:
        room_id: the room.
        receipt_type: ``m.read`` or ``m.read.private``.
        user_id: whose receipt it is.
        thread_id: ``main``, a thread root's event ID, or None for an unthreaded receipt.
        event_id: the acknowledged event.
        event_stream: that event's stream ordering.
        ts: when the receipt was sent (ms).
        stream_id: the position in the ``receipts`` stream of its last move.
    """

    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str | None
    event_id: str
    event_stream: int
    ts: int
    stream_id: int


def _row_to_receipt(row: Sequence[Any]) -> Receipt:
    room_id, receipt_type, user_id, thread_id, event_id, event_stream, ts, stream_id = row
    return Receipt(
        room_id=str(room_id),
        receipt_type=str(receipt_type),
        user_id=str(user_id),
        thread_id=str(thread_id) or None,
        event_id=str(event_id),
        event_stream=int(event_stream),
        ts=int(ts),
        stream_id=int(stream_id),
    )


class ReceiptStore:
    """Reads and writes the ``receipts`` table.

    Args:
        pool: the database pool.
        stream: the ``receipts`` stream writer (allocates ``receipts.stream_id``).
    """

    def __init__(self, pool: DatabasePool, stream: StreamWriter) -> None:
        self._pool = pool
        self.stream = stream

    @staticmethod
    async def get_max_stream_id(pool: DatabasePool) -> int:
        """The highest stream id stored (0 for none): the stream's position at start-up."""

        def max_txn(txn: Txn) -> int:
            txn.execute("SELECT MAX(stream_id) FROM receipts")
            row = txn.fetchone()
            return 0 if row is None or row[0] is None else int(row[0])

        return await pool.run_read("get_max_receipt_stream_id", max_txn)

    def current_position(self) -> int:
        """The position below which every receipt write has finished."""
        return self.stream.current()

    async def upsert_receipt(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        thread_id: str | None,
        event_id: str,
        event_stream: int,
        ts: int,
    ) -> int | None:
        """Moves the user's receipt forward to ``event_id``.

        Returns:
            The stream id of the write, or None when the stored receipt is already at or after
            ``event_stream`` (nothing changed).
        """
        thread = thread_id or UNTHREADED

        def upsert_receipt_txn(txn: Txn) -> int | None:
            txn.execute(
                "SELECT event_stream FROM receipts"
                " WHERE room_id = ? AND receipt_type = ? AND user_id = ? AND thread_id = ?",
                (room_id, receipt_type, user_id, thread),
            )
            row = txn.fetchone()
            if row is not None and int(row[0]) >= event_stream:
                return None
            stream_id = self.stream.next_id_txn(txn)
            txn.execute(
                f"INSERT INTO receipts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 - constant
                " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
                " event_id = excluded.event_id, event_stream = excluded.event_stream, ts = excluded.ts,"
                " stream_id = excluded.stream_id WHERE receipts.event_stream < excluded.event_stream",
                (room_id, receipt_type, user_id, thread, event_id, event_stream, ts, stream_id),
            )
            return stream_id if txn.rowcount != 0 else None

        result: int | None = await self._pool.run_txn("upsert_receipt", upsert_receipt_txn)
        return result

    async def get_room_receipts(self, room_ids: Iterable[str], viewer: str, up_to: int) -> list[Receipt]:
        """Every current receipt of ``room_ids`` written at or before ``up_to`` that ``viewer`` may see
        (``m.read``, and ``m.read.private`` only when it is the viewer's own)."""
        return await self._select(room_ids, viewer, 0, up_to, "get_room_receipts")

    async def get_receipts_changed(
        self, room_ids: Iterable[str], viewer: str, from_stream: int, to_stream: int
    ) -> list[Receipt]:
        """The receipts of ``room_ids`` that moved in ``(from_stream, to_stream]`` and ``viewer`` may see."""
        if from_stream >= to_stream:
            return []
        return await self._select(room_ids, viewer, from_stream, to_stream, "get_receipts_changed")

    async def _select(
        self, room_ids: Iterable[str], viewer: str, from_stream: int, to_stream: int, desc: str
    ) -> list[Receipt]:
        rooms = sorted(set(room_ids))
        if not rooms:
            return []

        def select_txn(txn: Txn) -> list[Receipt]:
            found: list[Receipt] = []
            for fragment, args in self._pool.engine.in_list_batches("room_id", rooms):
                txn.execute(
                    f"SELECT {_COLUMNS} FROM receipts WHERE {fragment}"  # noqa: S608 - built from identifiers
                    " AND stream_id > ? AND stream_id <= ? AND (receipt_type = ? OR user_id = ?)"
                    " ORDER BY stream_id",
                    [*args, from_stream, to_stream, READ, viewer],
                )
                found.extend(_row_to_receipt(r) for r in txn.fetchall())
            return found

        return await self._pool.run_read(desc, select_txn)

    async def get_user_receipts(self, user_id: str, room_ids: Iterable[str]) -> list[Receipt]:
        """The user's own ``m.read`` and ``m.read.private`` receipts in ``room_ids`` (unread counts)."""
        rooms = sorted(set(room_ids))
        if not rooms:
            return []

        def user_txn(txn: Txn) -> list[Receipt]:
            found: list[Receipt] = []
            for fragment, args in self._pool.engine.in_list_batches("room_id", rooms):
                txn.execute(
                    f"SELECT {_COLUMNS} FROM receipts WHERE user_id = ? AND {fragment}",  # noqa: S608
                    [user_id, *args],
                )
                found.extend(_row_to_receipt(r) for r in txn.fetchall())
            return found

        return await self._pool.run_read("get_user_receipts", user_txn)
