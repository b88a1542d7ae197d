"""The federation sender's tables (delta ``0008/20_federation_outbox.sql``; the only module naming them).

* ``federation_sender_position``: how far each shard has fanned the events stream out.
* ``federation_destinations``: per destination, the last acknowledged stream ordering and the
  persisted backoff.
* ``federation_destination_rooms``: per destination and room, the newest of our events it should
  have (what catch-up sends).
* ``federation_edu_outbox``: EDUs that must survive a restart, until acknowledged.

Invariant kept by :meth:`SenderStore.record_fanout`: the shard's position only moves forward, and
in the same transaction as the ``federation_destination_rooms`` rows for every event up to it, so
a crash after fan-out loses nothing (the rows say what each destination is missing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from federation.sender.backoff import RetryState
from homeserver.storage.pool import DatabasePool, Txn

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class DestinationRecord:
    """One ``federation_destinations`` row.

    Attributes:
        destination: the server name.
        last_successful: the highest stream ordering of ours it has acknowledged (everything
            for it up to there has been sent).
        retry: its backoff.
    """

    destination: str
    last_successful: int
    retry: RetryState


@dataclass(frozen=True)
class StoredEdu:
    """One persisted EDU."""

    outbox_id: int
    edu_type: str
    content: JsonDict


class SenderStore:
    """Reads and writes the sender's tables.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ fan-out position

    async def get_position(self, shard: int) -> int | None:
        """The shard's fan-out position, or None before its first fan-out."""

        def position_txn(txn: Txn) -> int | None:
            txn.execute("SELECT stream_ordering FROM federation_sender_position WHERE shard = ?", (shard,))
            row = txn.fetchone()
            return None if row is None else int(row[0])

        return await self._pool.run_read("federation_sender_position", position_txn)

    async def record_fanout(self, shard: int, position: int, rows: Sequence[tuple[str, str, int]]) -> None:
        """Records ``(destination, room_id, stream_ordering)`` rows and moves the shard to ``position``."""

        def fanout_txn(txn: Txn) -> None:
            destinations = sorted({r[0] for r in rows})
            txn.execute_many(
                "INSERT INTO federation_destinations (destination) VALUES (?) ON CONFLICT (destination) DO NOTHING",
                [(d,) for d in destinations],
            )
            txn.execute_many(
                "INSERT INTO federation_destination_rooms (destination, room_id, stream_ordering) VALUES (?, ?, ?)"
                " ON CONFLICT (destination, room_id) DO UPDATE SET stream_ordering = excluded.stream_ordering"
                " WHERE federation_destination_rooms.stream_ordering < excluded.stream_ordering",
                list(rows),
            )
            txn.execute(
                "INSERT INTO federation_sender_position (shard, stream_ordering) VALUES (?, ?)"
                " ON CONFLICT (shard) DO UPDATE SET stream_ordering = excluded.stream_ordering"
                " WHERE federation_sender_position.stream_ordering < excluded.stream_ordering",
                (shard, position),
            )

        await self._pool.run_txn("federation_record_fanout", fanout_txn)

    # ------------------------------------------------------------------ destinations

    async def get_destination(self, destination: str) -> DestinationRecord:
        """The destination's row (a fresh one when it has none)."""

        def destination_txn(txn: Txn) -> DestinationRecord:
            txn.execute(
                "SELECT last_successful_stream_ordering, retry_last_ts, retry_interval_ms"
                " FROM federation_destinations WHERE destination = ?",
                (destination,),
            )
            row = txn.fetchone()
            if row is None:
                return DestinationRecord(destination, 0, RetryState())
            return DestinationRecord(destination, int(row[0]), RetryState(int(row[1]), int(row[2])))

        return await self._pool.run_read("federation_get_destination", destination_txn)

    async def get_destinations_with_work(self) -> list[str]:
        """Destinations that were left owing something: events newer than they acknowledged, or EDUs."""

        def work_txn(txn: Txn) -> list[str]:
            txn.execute(
                "SELECT DISTINCT r.destination FROM federation_destination_rooms AS r"
                " JOIN federation_destinations AS d ON d.destination = r.destination"
                " WHERE r.stream_ordering > d.last_successful_stream_ordering"
            )
            found = {str(r[0]) for r in txn.fetchall()}
            txn.execute("SELECT DISTINCT destination FROM federation_edu_outbox")
            found.update(str(r[0]) for r in txn.fetchall())
            return sorted(found)

        return await self._pool.run_read("federation_destinations_with_work", work_txn)

    async def set_retry(self, destination: str, retry: RetryState) -> None:
        """Persists the destination's backoff."""

        def retry_txn(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO federation_destinations (destination, retry_last_ts, retry_interval_ms, failure_count)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET retry_last_ts = excluded.retry_last_ts,"
                " retry_interval_ms = excluded.retry_interval_ms,"
                " failure_count = CASE WHEN excluded.retry_interval_ms = 0 THEN 0"
                " ELSE federation_destinations.failure_count + 1 END",
                (destination, retry.retry_last_ts, retry.retry_interval_ms, 0 if not retry.backing_off else 1),
            )

        await self._pool.run_txn("federation_set_retry", retry_txn)

    async def mark_delivered(
        self, destination: str, last_successful: int | None, edu_ids: Sequence[int], reset_retry: bool
    ) -> None:
        """After an acknowledged transaction: advance the destination, drop its sent EDUs, end backoff."""

        def delivered_txn(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO federation_destinations (destination) VALUES (?) ON CONFLICT (destination) DO NOTHING",
                (destination,),
            )
            if last_successful is not None:
                txn.execute(
                    "UPDATE federation_destinations SET last_successful_stream_ordering = ?"
                    " WHERE destination = ? AND last_successful_stream_ordering < ?",
                    (last_successful, destination, last_successful),
                )
            if reset_retry:
                txn.execute(
                    "UPDATE federation_destinations SET retry_last_ts = 0, retry_interval_ms = 0, failure_count = 0"
                    " WHERE destination = ?",
                    (destination,),
                )
            for fragment, args in self._pool.engine.in_list_batches("outbox_id", list(edu_ids)):
                txn.execute(
                    f"DELETE FROM federation_edu_outbox WHERE destination = ? AND {fragment}",  # noqa: S608
                    [destination, *args],
                )

        await self._pool.run_txn("federation_mark_delivered", delivered_txn)

    async def get_catchup_rooms(self, destination: str, after: int, limit: int) -> list[tuple[int, str]]:
        """``(stream_ordering, room_id)`` of the rooms whose newest event for ``destination`` is after ``after``.

        Ascending by stream ordering, at most ``limit``: one event per room, however long the backlog.
        """

        def catchup_txn(txn: Txn) -> list[tuple[int, str]]:
            txn.execute(
                "SELECT stream_ordering, room_id FROM federation_destination_rooms"
                " WHERE destination = ? AND stream_ordering > ? ORDER BY stream_ordering LIMIT ?",
                (destination, after, limit),
            )
            return [(int(r[0]), str(r[1])) for r in txn.fetchall()]

        return await self._pool.run_read("federation_catchup_rooms", catchup_txn)

    # ------------------------------------------------------------------ EDU outbox

    async def add_edus(self, edus: Iterable[tuple[str, str, JsonDict]], now_ms: int) -> None:
        """Persists ``(destination, edu_type, content)`` EDUs in one transaction."""
        rows = [(d, t, json.dumps(c, ensure_ascii=False, separators=(",", ":"))) for d, t, c in edus]

        def add_txn(txn: Txn) -> None:
            for destination, edu_type, content in rows:
                txn.execute(
                    "INSERT INTO federation_edu_outbox (outbox_id, destination, edu_type, content, created_ts)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (self._next_outbox_id_txn(txn), destination, edu_type, content, now_ms),
                )

        if rows:
            await self._pool.run_txn("federation_add_edus", add_txn)

    def _next_outbox_id_txn(self, txn: Txn) -> int:
        # PostgreSQL: a sequence (any process may queue EDUs). SQLite: one writer connection, so the
        # maximum read inside this write transaction cannot be taken by anyone else before commit.
        if self._pool.engine.name == "postgres":
            txn.execute("SELECT nextval('federation_edu_outbox_seq')")
        else:
            txn.execute("SELECT COALESCE(MAX(outbox_id), 0) + 1 FROM federation_edu_outbox")
        row = txn.fetchone()
        assert row is not None
        return int(row[0])

    async def get_edus(self, destination: str, limit: int) -> list[StoredEdu]:
        """The oldest ``limit`` persisted EDUs of ``destination``."""

        def edus_txn(txn: Txn) -> list[StoredEdu]:
            txn.execute(
                "SELECT outbox_id, edu_type, content FROM federation_edu_outbox WHERE destination = ?"
                " ORDER BY outbox_id LIMIT ?",
                (destination, limit),
            )
            return [StoredEdu(int(r[0]), str(r[1]), json.loads(r[2])) for r in txn.fetchall()]

        return await self._pool.run_read("federation_get_edus", edus_txn)
