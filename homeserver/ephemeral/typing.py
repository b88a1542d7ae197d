"""Typing notifications: who is typing in which room, kept in memory and expired on the clock.

Theory of operation:

* **Single writer, in memory.** Typing state is ephemeral (the spec: "the server does not remember
  users who are not currently typing"), so it lives in this process only: room ID -> user ID ->
  expiry. A restart forgets it, which clients handle by design (they re-send typing every few
  seconds while the user types).
* **The ``typing`` stream.** Every change of a room's typing *set* (a user starts, stops, expires or
  leaves the room) increments an in-memory position and records it as the room's latest change.
  Refreshing an existing typing user changes only its expiry, not the set, so it costs no position
  and wakes nobody. An incremental sync from position ``p`` sends the current set of every room whose
  latest change is after ``p``.
* **Bounded change log.** The per-room "latest change" log keeps the ``max_changes`` most recently
  changed rooms; older entries are dropped and :meth:`TypingService.rooms_changed_since` answers None
  ("cannot tell") for positions before the oldest dropped one, so the sync source sends every joined
  room's set instead of missing a change.
* **Expiry.** Each typing user has one timer (``clock.call_later``); a refresh reschedules it, a stop
  cancels it. Timeouts are clamped to ``[1 s, max_timeout_ms]``.
* **Wake-ups.** After each change the notifier is told ``typing`` moved, for the room, so the room's
  long-polling syncs wake.

Invariants: a user is in a room's set iff they have a pending timer for it; ``position`` only grows.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.streams.notifier import Notifier
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 30_000
"""Typing timeout when the client gives none."""
MAX_TIMEOUT_MS = 120_000
"""Longest typing timeout honoured (NOTSPEC: the spec sets no maximum; larger values are clamped)."""
MIN_TIMEOUT_MS = 1_000
"""Shortest typing timeout (smaller values are raised to it)."""
MAX_TRACKED_CHANGES = 10_000
"""Rooms kept in the "latest change" log."""

STREAM = "typing"


class TypingService:
    """Tracks typing users and announces changes.

    Args:
        clock: the clock (expiry timers).
        notifier: woken with stream ``typing`` and the room on every change.
        require_joined: ``await require_joined(room_id, user_id)`` raises unless the user is joined.
        max_timeout_ms: the timeout cap.
        max_changes: size of the per-room change log.
    """

    def __init__(
        self,
        clock: Clock,
        notifier: Notifier,
        require_joined: Callable[[str, str], Awaitable[object]],
        *,
        max_timeout_ms: int = MAX_TIMEOUT_MS,
        max_changes: int = MAX_TRACKED_CHANGES,
    ) -> None:
        self._clock = clock
        self._notifier = notifier
        self._require_joined = require_joined
        self._max_timeout_ms = max_timeout_ms
        self._max_changes = max_changes
        self._typing: dict[str, dict[str, Any]] = {}  # room -> user -> DelayedCall (the expiry timer)
        self._changes: OrderedDict[str, int] = OrderedDict()  # room -> position of its latest change
        self._forgotten_below = 0  # changes at or below this position may have been dropped
        self.position = 0

    # ------------------------------------------------------------------ reads

    def get_typing_users(self, room_id: str) -> list[str]:
        """The users typing in ``room_id`` now, sorted."""
        return sorted(self._typing.get(room_id, {}))

    def is_typing(self, room_id: str, user_id: str) -> bool:
        return user_id in self._typing.get(room_id, {})

    def rooms_changed_since(self, position: int) -> set[str] | None:
        """Rooms whose typing set changed after ``position``; None when the log no longer reaches back
        that far (the caller must then treat every room as changed)."""
        if position < self._forgotten_below:
            return None
        changed: set[str] = set()
        for room_id, pos in reversed(self._changes.items()):
            if pos <= position:
                break
            changed.add(room_id)
        return changed

    # ------------------------------------------------------------------ writes

    async def set_typing(self, user_id: str, room_id: str, typing: bool, timeout_ms: int | None = None) -> None:
        """Marks ``user_id`` as typing in ``room_id`` for ``timeout_ms`` (clamped), or as not typing.

        Raises:
            MatrixError: 403 when the user is not joined to the room.
        """
        await self._require_joined(room_id, user_id)
        if not typing:
            self.stop_typing(user_id, room_id)
            return
        timeout = DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms
        timeout = max(MIN_TIMEOUT_MS, min(timeout, self._max_timeout_ms))
        users = self._typing.setdefault(room_id, {})
        timer = users.get(user_id)
        if timer is not None:
            timer.cancel()
        users[user_id] = self._clock.call_later(timeout / 1000.0, self._expire, room_id, user_id)
        if timer is None:
            self._changed(room_id)

    def stop_typing(self, user_id: str, room_id: str) -> None:
        """Removes ``user_id`` from the room's typing set (no membership check: also used on leave)."""
        users = self._typing.get(room_id)
        timer = users.pop(user_id, None) if users is not None else None
        if timer is None:
            return
        if timer.active():
            timer.cancel()
        if not users:
            del self._typing[room_id]
        self._changed(room_id)

    def _expire(self, room_id: str, user_id: str) -> None:
        users = self._typing.get(room_id)
        if users is None or user_id not in users:
            return
        del users[user_id]
        if not users:
            del self._typing[room_id]
        self._changed(room_id)

    def _changed(self, room_id: str) -> None:
        self.position += 1
        self._changes[room_id] = self.position
        self._changes.move_to_end(room_id)
        while len(self._changes) > self._max_changes:
            _, dropped = self._changes.popitem(last=False)
            self._forgotten_below = max(self._forgotten_below, dropped)
        self._notifier.on_new(STREAM, self.position, rooms=[room_id])
