"""The sync engine: tokens, long polling and shared computations over the registered sources.

Theory of operation (DESIGN.md 2.7):

* **Tokens.** ``next_batch`` is a :class:`~homeserver.streams.tokens.StreamToken` holding every
  registered source's position (``e`` events, ``ad`` account data, ...). A ``since`` token is decoded
  against "now": names it lacks take the current position, names no source knows are ignored, and a
  position ahead of the source's current one (a token from the future, e.g. after a restore) is
  clamped to it.
* **One computation.** For each source in registration order, ``fill_initial`` (no ``since``) or
  ``fill_incremental`` over ``(since, now]`` writes into one :class:`SyncResult`.
* **Long polling.** An incremental sync with ``timeout > 0`` that finds nothing registers one waiter
  on the :class:`~homeserver.streams.notifier.Notifier` under the user and their joined rooms. If any
  source moved between reading "now" and registering, the sync is computed once more with the waiter
  already in place, so a change that landed while computing is never slept through and a busy server
  cannot make it spin. The waiter costs nothing until the notifier fires or the timer expires; then
  the sync is computed again from the same ``since``. A wake-up that brings nothing for this user
  (e.g. a filtered-out event) waits again for the rest of the timeout. Cancelling the request
  (client gone) cancels the waiter.
* **Sharing.** Identical requests in flight at once (same user, device, ``since``, filter,
  ``full_state``, timeout) share one computation: the first starts it, later ones attach to it. Each
  caller gets its own Deferred; the computation is cancelled only when every caller has gone, and the
  entry is dropped as soon as it finishes, so nothing is cached after the response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from homeserver.streams.notifier import Notifier
from homeserver.streams.tokens import StreamToken
from homeserver.sync.filters import SyncFilter
from homeserver.sync.sources.registry import JsonDict, SyncContext, SyncResult, SyncSourceRegistry

logger = logging.getLogger(__name__)

MAX_TIMEOUT_MS = 5 * 60 * 1000
"""Longest long poll; larger ``timeout`` values are clamped (NOTSPEC: the spec sets no maximum)."""


@dataclass(frozen=True)
class SyncRequest:
    """One ``/sync`` call, parsed.

    Attributes:
        user_id: the syncing user.
        device_id: their device.
        since: the raw ``since`` token, or None for an initial sync.
        filter: the parsed filter.
        filter_key: a stable string identifying the filter (the raw query value), for sharing.
        full_state: the ``full_state`` flag.
        timeout_ms: how long to wait for news (clamped to :data:`MAX_TIMEOUT_MS`).
    """

    user_id: str
    device_id: str | None
    since: str | None
    filter: SyncFilter
    filter_key: str = ""
    full_state: bool = False
    timeout_ms: int = 0

    def cache_key(self) -> tuple[Any, ...]:
        return (self.user_id, self.device_id, self.since, self.filter_key, self.full_state, self.timeout_ms)


SyncObserver = Callable[[str, str | None, str | None], Callable[[], None]]
"""``observer(user_id, device_id, set_presence)`` is told that a client started a ``/sync`` request (or
another sync session); it returns a callable that the caller invokes exactly once when that request
ends, however it ends. Presence uses it (``set_presence`` None means the default, ``online``).
Observers run on the reactor and must not raise."""


class _Shared:
    """An in-flight computation and the callers waiting for it."""

    def __init__(self) -> None:
        self.computation: defer.Deferred[JsonDict] | None = None
        self.observers: list[defer.Deferred[JsonDict]] = []


class SyncEngine:
    """Computes ``/sync`` responses.

    Args:
        registry: the sync sources.
        notifier: wakes long polls.
        time_msec: the clock (long-poll deadlines).
        max_timeout_ms: the cap on ``timeout``.
    """

    def __init__(
        self,
        registry: SyncSourceRegistry,
        notifier: Notifier,
        time_msec: Callable[[], int],
        max_timeout_ms: int = MAX_TIMEOUT_MS,
    ) -> None:
        self._registry = registry
        self._notifier = notifier
        self._now = time_msec
        self._max_timeout_ms = max_timeout_ms
        self._in_flight: dict[tuple[Any, ...], _Shared] = {}
        self.computations = 0
        """How many computations started (tests check that identical requests share one)."""
        self.sync_observers: list[SyncObserver] = []
        """Told when a sync request starts and ends (see :data:`SyncObserver`); callers of :meth:`sync`
        that serve clients notify them: the ``/sync`` servlet per request, a WebSocket push session
        for the whole connection."""

    # ------------------------------------------------------------------ tokens

    async def current_token(self) -> StreamToken:
        """Every source's current position."""
        return StreamToken({s.name: await s.current_position() for s in self._registry})

    async def decode_since(self, since: str, now: StreamToken) -> StreamToken:
        """Parses a ``since`` token: missing names are "now", unknown ones ignored, future ones clamped.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a malformed token.
        """
        token = StreamToken.decode(since, now, known=self._registry.names())
        return StreamToken({name: min(token.get(name), now.get(name)) for name in now.positions})

    # ------------------------------------------------------------------ entry point

    def sync(self, request: SyncRequest) -> defer.Deferred[JsonDict]:
        """Returns the response body for ``request`` (shared with identical requests in flight).

        Cancelling the returned Deferred detaches this caller; the computation stops when no caller
        is left.
        """
        key = request.cache_key()
        shared = self._in_flight.get(key)
        start = shared is None
        if shared is None:
            shared = _Shared()
            self._in_flight[key] = shared
        current = shared

        def detach(observer: defer.Deferred[JsonDict]) -> None:
            if observer in current.observers:
                current.observers.remove(observer)
            if not current.observers and current.computation is not None and not current.computation.called:
                current.computation.cancel()

        observer: defer.Deferred[JsonDict] = defer.Deferred(detach)
        shared.observers.append(observer)
        if start:
            self.computations += 1
            computation = defer.Deferred.fromCoroutine(self._compute(request))
            shared.computation = computation
            computation.addBoth(self._finished, key, shared)
        return observer

    def _finished(self, outcome: JsonDict | Failure, key: tuple[Any, ...], shared: _Shared) -> None:
        if self._in_flight.get(key) is shared:
            del self._in_flight[key]
        observers, shared.observers = shared.observers, []
        for observer in observers:
            if observer.called:
                continue
            if isinstance(outcome, Failure):
                observer.errback(outcome)
            else:
                observer.callback(outcome)
        if isinstance(outcome, Failure) and not observers and not isinstance(outcome.value, defer.CancelledError):
            logger.error("sync failed with nobody waiting: %r", outcome.value)
        return None

    # ------------------------------------------------------------------ computation

    async def _compute(self, request: SyncRequest) -> JsonDict:
        now = await self.current_token()
        since = await self.decode_since(request.since, now) if request.since is not None else None
        ctx = SyncContext(request.user_id, request.device_id, request.filter, request.full_state, request.since)
        timeout = max(0, min(request.timeout_ms, self._max_timeout_ms))
        if since is None or request.full_state:
            timeout = 0  # initial and full-state syncs answer at once (spec: full_state ignores timeout)
        deadline = self._now() + timeout
        waiter: defer.Deferred[bool] | None = None
        try:
            while True:
                result = await self._fill(ctx, since, now)
                remaining = deadline - self._now()
                if not result.is_empty() or remaining <= 0:
                    return result.to_json(now.encode())
                if waiter is None:
                    waiter = self._notifier.wait(request.user_id, sorted(result.wait_room_ids), remaining)
                    latest = await self.current_token()
                    if dict(latest.positions) != dict(now.positions):
                        # Something landed while computing, before the waiter existed: look once
                        # more. The waiter stays registered, so this cannot spin under load.
                        now = latest
                        continue
                await waiter
                waiter = None
                now = await self.current_token()
        finally:
            if waiter is not None and not waiter.called:
                waiter.addErrback(_ignore_cancellation)
                waiter.cancel()

    async def _fill(self, ctx: SyncContext, since: StreamToken | None, now: StreamToken) -> SyncResult:
        ctx = replace(ctx, next_batch=now.encode())
        result = SyncResult()
        for source in self._registry:
            to = now.get(source.name)
            if since is None:
                await source.fill_initial(ctx, result, to)
            else:
                await source.fill_incremental(ctx, result, since.get(source.name, to), to)
        return result


def _ignore_cancellation(failure: Failure) -> Failure | None:
    return None if isinstance(failure.value, defer.CancelledError) else failure
