"""The notifier: wakes waiting ``/sync`` requests and WebSocket pushers when something concerns them.

Theory of operation: a waiter is registered under its user ID and the room IDs it cares about. When a
change is committed, :meth:`Notifier.on_new` names the users and rooms it concerns; each waiter
registered under any of them is woken exactly once and unregistered from every key at that moment.
A waiter costs nothing (no timers beyond its own timeout, no polling) until then. Every registration
has one owner: the :class:`Waiter` removes itself from all keys when it fires, times out or is
cancelled, so a waiter can never be registered twice nor leak (audit RACE-1/2).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer

from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)


class Waiter:
    """One pending wait. ``deferred`` fires with True when woken, False on timeout."""

    __slots__ = ("_keys", "_notifier", "_timer", "deferred")

    def __init__(self, notifier: Notifier, keys: list[str]) -> None:
        self._notifier = notifier
        self._keys = keys
        self._timer: Any = None
        self.deferred: defer.Deferred[bool] = defer.Deferred(lambda _d: self._detach())

    def _detach(self) -> None:
        for key in self._keys:
            waiters = self._notifier._waiters.get(key)
            if waiters is not None:
                waiters.discard(self)
                if not waiters:
                    del self._notifier._waiters[key]
        self._keys = []
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def fire(self, woken: bool) -> None:
        if self.deferred.called:
            return
        self._detach()
        self.deferred.callback(woken)


class Notifier:
    """Registers waiters and wakes them.

    Args:
        clock: the clock (timeouts).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._waiters: dict[str, set[Waiter]] = {}
        self.positions: dict[str, int] = {}

    def waiter_count(self) -> int:
        """Distinct waiting waiters (for metrics and tests)."""
        return len({w for ws in self._waiters.values() for w in ws})

    def wait(self, user_id: str, room_ids: Iterable[str], timeout_ms: int) -> defer.Deferred[bool]:
        """Returns a Deferred that fires True when something for the user or rooms happens, False after
        ``timeout_ms``. Cancelling it unregisters the waiter."""
        keys = [f"u:{user_id}", *(f"r:{r}" for r in room_ids)]
        waiter = Waiter(self, keys)
        for key in keys:
            self._waiters.setdefault(key, set()).add(waiter)
        waiter._timer = self._clock.call_later(max(timeout_ms, 0) / 1000.0, waiter.fire, False)
        return waiter.deferred

    def on_new(self, stream: str, position: int, users: Iterable[str] = (), rooms: Iterable[str] = ()) -> None:
        """A change at ``position`` of ``stream`` was committed; wake whoever it concerns."""
        if position > self.positions.get(stream, 0):
            self.positions[stream] = position
        to_wake: set[Waiter] = set()
        for user in users:
            to_wake.update(self._waiters.get(f"u:{user}", ()))
        for room in rooms:
            to_wake.update(self._waiters.get(f"r:{room}", ()))
        for waiter in to_wake:
            waiter.fire(True)
