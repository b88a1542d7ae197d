"""A local stream writer: stream ids allocated in the writing transaction, and ordered wake-ups.

Theory of operation: a writer takes its stream id inside the transaction that writes the row
(:meth:`LocalStream.next_id_txn`), so the position is committed atomically with the change. Ids are
committed out of order when transactions overlap (PostgreSQL), so readers are told only positions
below which every allocated id has finished (:class:`~homeserver.storage.ids.StreamPositionTracker`).
Wake-ups follow the same rule: :meth:`LocalStream.announce` holds a change back until the tracker's
position covers it, then wakes its users through the notifier. A waiter woken earlier would read the
stream, not see the change yet, and sleep through it. Rolled-back transactions release held
wake-ups too (their ids finish without a row).
"""

from __future__ import annotations

from collections.abc import Iterable

from homeserver.storage.ids import IdAllocator, StreamPositionTracker
from homeserver.storage.pool import Txn
from homeserver.streams.notifier import Notifier


class LocalStream:
    """One stream written by this process.

    Args:
        name: the stream's notifier name (e.g. ``to_device``).
        allocator: hands out ids.
        current: the stream's position at start-up.
        notifier: woken after commits.
    """

    def __init__(self, name: str, allocator: IdAllocator, current: int, notifier: Notifier) -> None:
        self.name = name
        self._allocator = allocator
        self._tracker = StreamPositionTracker(current)
        self._notifier = notifier
        self._pending: list[tuple[int, frozenset[str]]] = []
        notifier.positions[name] = max(notifier.positions.get(name, 0), current)

    def current(self) -> int:
        """The position below which every write has finished."""
        return self._tracker.current()

    def next_id_txn(self, txn: Txn) -> int:
        """Allocates a stream id inside the writing transaction."""
        stream_id = self._allocator.next_tracked_id_txn(txn, self._tracker)
        txn.call_after(self._tracker.finished, stream_id)
        txn.call_on_exception(self._tracker.finished, stream_id)
        txn.call_on_exception(self._flush)
        return stream_id

    def announce(self, stream_id: int, users: Iterable[str]) -> None:
        """After commit: wakes ``users`` once every id up to ``stream_id`` has finished."""
        self._pending.append((stream_id, frozenset(users)))
        self._flush()

    def _flush(self) -> None:
        current = self._tracker.current()
        ready = [p for p in self._pending if p[0] <= current]
        if not ready:
            return
        self._pending = [p for p in self._pending if p[0] > current]
        users: set[str] = set()
        for _, who in ready:
            users.update(who)
        self._notifier.on_new(self.name, current, users=users)
