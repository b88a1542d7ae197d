"""A keyed async lock: one holder per key at a time, waiters served in arrival order.

Used for the per-room input queue (DESIGN.md 2.4): events of one room are built and persisted one at a
time, while different rooms proceed concurrently and never block each other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from twisted.internet import defer


class Linearizer:
    """Serialises work per key.

    Example::

        async with linearizer.queue(room_id):
            ...  # only one coroutine per room_id runs here at a time
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._queues: dict[str, deque[defer.Deferred[None]]] = {}

    def is_queued(self, key: str) -> bool:
        return key in self._queues

    def queue_length(self, key: str) -> int:
        return len(self._queues.get(key, ()))

    @asynccontextmanager
    async def queue(self, key: str) -> AsyncIterator[None]:
        """Waits for ``key``'s turn, holds it for the ``async with`` body, then hands it on."""
        waiters = self._queues.get(key)
        if waiters is None:
            self._queues[key] = deque()  # nobody holds the key: it is ours at once
        else:
            turn: defer.Deferred[None] = defer.Deferred()
            waiters.append(turn)
            try:
                await turn  # fired by the previous holder: the key is then ours
            except BaseException:
                # Cancelled before our turn came (a fired Deferred cannot be cancelled).
                waiters.remove(turn)
                raise
        try:
            yield
        finally:
            self._release(key)

    def _release(self, key: str) -> None:
        waiters = self._queues.get(key)
        if waiters is None:
            return
        if not waiters:
            del self._queues[key]
            return
        nxt = waiters.popleft()
        nxt.callback(None)
