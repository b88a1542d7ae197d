"""The one stream writer: ids allocated in the writing transaction, and wake-ups held until caught up.

Theory of operation (DESIGN.md 2.7):

* A writer takes its stream id inside the transaction that writes the row
  (:meth:`StreamWriter.next_id_txn`), so the position commits atomically with the change.
* Ids are committed out of order when transactions overlap (PostgreSQL). The stream's position is the
  highest id below which every allocated id has finished, committed or rolled back
  (:class:`~homeserver.storage.ids.StreamPositionTracker`); a reader told "the stream is at N" never
  misses a row below N.
* Wake-ups follow the same rule: :meth:`StreamWriter.announce` holds a change back until the position
  covers it, then wakes its users and rooms through the notifier in one call. A waiter woken earlier
  would read the stream, not see the change, and sleep through it. Every finished id (a commit, or a
  rolled-back attempt that leaves no row) re-checks the held wake-ups, so a failed lower write
  releases the changes committed above it at once rather than at the next write.

This class replaces the three copies of that logic (the events persister's ``_announce`` /
``_announce_ready``, the E2EE ``LocalStream`` and the receipts service); every stream written by
this process uses one, declared in :mod:`homeserver.streams.registry`.
"""

from __future__ import annotations

from collections.abc import Iterable

from homeserver.storage.ids import IdAllocator, StreamPositionTracker
from homeserver.storage.pool import Txn
from homeserver.streams.notifier import Notifier


class StreamWriter:
    """One stream written by this process.

    Args:
        name: the stream's notifier name (e.g. ``to_device``; see the registry).
        allocator: hands out ids (a sequence on PostgreSQL, a counter on SQLite).
        current: the stream's position at start-up (everything up to it is committed).
        notifier: woken once changes are readable.
    """

    def __init__(self, name: str, allocator: IdAllocator, current: int, notifier: Notifier) -> None:
        self.name = name
        self._allocator = allocator
        self.tracker = StreamPositionTracker(current)
        """The position tracker (sync sources read positions from it)."""
        self._notifier = notifier
        self._pending: list[tuple[int, frozenset[str], frozenset[str]]] = []
        notifier.positions[name] = max(notifier.positions.get(name, 0), current)

    def current(self) -> int:
        """The position below which every write has finished."""
        return self.tracker.current()

    def next_id_txn(self, txn: Txn) -> int:
        """Allocates a stream id inside the writing transaction.

        The id is marked in flight until the transaction commits or the attempt rolls back; either
        way the held wake-ups are re-checked on the reactor.
        """
        stream_id = self._allocator.next_tracked_id_txn(txn, self.tracker)
        txn.call_after(self._finished, stream_id)
        txn.call_on_exception(self._finished, stream_id)
        return stream_id

    def announce(self, stream_id: int, users: Iterable[str] = (), rooms: Iterable[str] = ()) -> None:
        """After commit: wakes ``users`` and ``rooms`` once every id up to ``stream_id`` has finished."""
        self._pending.append((stream_id, frozenset(users), frozenset(rooms)))
        self.flush()

    def flush(self) -> None:
        """Wakes the waiters of every held change the position now covers (one notifier call)."""
        if not self._pending:
            return
        current = self.tracker.current()
        ready = [p for p in self._pending if p[0] <= current]
        if not ready:
            return
        self._pending = [p for p in self._pending if p[0] > current]
        users: frozenset[str] = frozenset().union(*(p[1] for p in ready))
        rooms: frozenset[str] = frozenset().union(*(p[2] for p in ready))
        self._notifier.on_new(self.name, current, users=users, rooms=rooms)

    def held_count(self) -> int:
        """Changes committed but not yet announced (a lower id is still in flight); for tests."""
        return len(self._pending)

    def _finished(self, stream_id: int) -> None:
        self.tracker.finished(stream_id)
        self.flush()
