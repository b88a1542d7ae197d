"""Id allocation and stream positions.

Theory of operation:

* :class:`IdAllocator` hands out increasing ``BIGINT`` ids for one column inside a write transaction:
  from a PostgreSQL sequence (safe with many writers), or from an in-process counter seeded from the
  table's maximum on SQLite (which is single-process, with one writer thread).
* Ids are allocated in one order and committed in another when several transactions run at once
  (PostgreSQL). A reader must never be told "the stream is at N" while some id below N is still
  uncommitted, or it would skip that row for ever. :class:`StreamPositionTracker` therefore reports
  as the current position the highest id below which everything allocated has finished (committed or
  rolled back) — Synapse's stream-id model, for one writer process.
"""

from __future__ import annotations

import threading

from homeserver.storage.engines.base import DatabaseEngine, check_identifier
from homeserver.storage.pool import Txn


class IdAllocator:
    """Allocates ids for ``table.column`` (``sequence`` on PostgreSQL).

    Args:
        engine: the database engine.
        table: the table whose maximum seeds the SQLite counter.
        column: the id column.
        sequence: the PostgreSQL sequence name.
    """

    def __init__(self, engine: DatabaseEngine, table: str, column: str, sequence: str) -> None:
        for name in (table, column, sequence):
            check_identifier(name)
        self._engine = engine
        self._table = table
        self._column = column
        self._sequence = sequence
        self._lock = threading.Lock()
        self._last: int | None = None
        self._tracked_lock = threading.Lock()

    def next_id_txn(self, txn: Txn) -> int:
        """Returns a new id, unique for ever (the caller's transaction may still roll back)."""
        if self._engine.name == "postgres":
            txn.execute(f"SELECT nextval('{self._sequence}')")
            row = txn.fetchone()
            assert row is not None
            return int(row[0])
        with self._lock:
            if self._last is None:
                txn.execute(f"SELECT MAX({self._column}) FROM {self._table}")  # noqa: S608 - checked identifiers
                row = txn.fetchone()
                self._last = int(row[0]) if row and row[0] is not None else 0
            self._last += 1
            return self._last

    def next_tracked_id_txn(self, txn: Txn, tracker: StreamPositionTracker) -> int:
        """Returns a new id already marked in flight in ``tracker``.

        Drawing the id and marking it happen under one lock, so ids are marked in the order they
        are drawn: a higher id cannot be drawn, committed and finished while a lower one is drawn
        but not yet known to the tracker (which would then report a position past it).
        """
        with self._tracked_lock:
            stream_id = self.next_id_txn(txn)
            tracker.started(stream_id)
        return stream_id

    def current_max_txn(self, txn: Txn) -> int:
        """The largest id in the table (0 when empty)."""
        txn.execute(f"SELECT MAX({self._column}) FROM {self._table}")  # noqa: S608 - checked identifiers
        row = txn.fetchone()
        return int(row[0]) if row and row[0] is not None else 0


class StreamPositionTracker:
    """Tracks which allocated stream ids have finished, for out-of-order commits.

    Thread-safe: ids are marked in flight from database threads and finished from the reactor.

    Args:
        current: the stream's position at start-up (everything up to it is committed).
    """

    def __init__(self, current: int) -> None:
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        self._max_finished = current

    def started(self, stream_id: int) -> None:
        """Marks ``stream_id`` as allocated and not yet finished."""
        with self._lock:
            self._in_flight.add(stream_id)

    def finished(self, stream_id: int) -> None:
        """Marks ``stream_id`` as committed or rolled back."""
        with self._lock:
            self._in_flight.discard(stream_id)
            self._max_finished = max(self._max_finished, stream_id)

    def current(self) -> int:
        """The highest position below which every allocated id has finished."""
        with self._lock:
            if self._in_flight:
                return min(min(self._in_flight) - 1, self._max_finished)
            return self._max_finished
