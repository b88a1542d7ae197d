"""The presence service: in-memory state, one periodic sweep, batched persistence, room-mate fan-out.

Theory of operation (DESIGN.md 2.7; spec module "Presence"; audit CHAT-4):

* **State** is one :class:`~homeserver.presence.state.UserPresence` per local user seen, in memory.
  Inputs (sync start/end, message sent, ``PUT /presence``) run the pure state machine in
  :mod:`homeserver.presence.state` on the reactor; no input does I/O or arms a timer.
* **Timers** are batched: each user whose state can change with time sits in one bucket of a timing
  wheel keyed by ``ceil(deadline / sweep interval)``. ONE looping call (every few seconds) takes the
  due buckets, re-checks those users (a bucket entry may be early: activity only ever moves deadlines
  later, so inputs do not move users between buckets unless their deadline came closer) and applies
  the timeouts. Cost per sweep is proportional to the users whose deadline passed, not to everyone
  online.
* **Stream.** Every client-visible change takes the next position of the in-memory ``presence``
  stream (seeded at start from the highest stored position), is appended to a bounded change log,
  and wakes the user and the rooms they are joined to through the notifier; a long-polling sync waits
  on its joined rooms, so exactly the users sharing a room (and the user) are woken. Rooms come from
  :class:`~homeserver.presence.memberships.JoinedRoomsCache` (no query per change).
* **Reads.** An incremental sync takes the users in the change log after its ``since`` position (or,
  if the log was trimmed past it, scans the states) and keeps those sharing a room with the syncing
  user; an initial sync takes every user not offline who shares a room. ``last_active_ago`` is
  computed at read time, so it is always current.
* **Persistence.** Changed users are marked dirty and written in one transaction per sweep, never per
  sync; a restart reloads them (those online come back with their offline timer running, so they go
  offline unless they sync again). At most one sweep interval of changes is lost on a crash.

Single process: the stream lives in this process's memory (the monolith). Presence of remote users
(federation ``m.presence`` EDUs) is not handled yet (see :meth:`PresenceService.is_local`).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer

from homeserver.identity import LocalServer
from homeserver.presence.memberships import JoinedRoomsCache
from homeserver.presence.state import (
    OFFLINE,
    PRESENCE_STATES,
    Timeouts,
    UserPresence,
    activity,
    apply_deadlines,
    next_deadline,
    presence_content,
    set_state,
    sync_ended,
    sync_started,
)
from homeserver.storage.stores.presence import PresenceStore, StoredPresence
from homeserver.streams.notifier import Notifier
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

STREAM = "presence"
"""The notifier stream name."""

SWEEP_INTERVAL_S = 5.0
"""How often the sweep runs (timeouts are applied up to this late)."""

MAX_ROOM_LOG = 1_000
"""Change-log entries kept per room; older ``since`` positions fall back to a scan of the states."""

MAX_UNROUTED_LOG = 10_000
"""Entries kept of changes made before the user's rooms were known (first change after start)."""

MAX_STATUS_MSG_CHARS = 512
"""Longest status message accepted (NOTSPEC: the spec sets no bound)."""

JsonDict = dict[str, Any]


def _nothing() -> None:
    return None


class ChangeLog:
    """Recent ``(position, user)`` changes, in position order, bounded.

    Args:
        floor: every change after this position is (or will be) in the log.
        max_entries: when exceeded, the older half is dropped and the floor raised.
    """

    __slots__ = ("_ids", "_max", "_users", "floor")

    def __init__(self, floor: int, max_entries: int) -> None:
        self._ids: list[int] = []
        self._users: list[str] = []
        self._max = max_entries
        self.floor = floor

    def append(self, position: int, user_id: str) -> None:
        self._ids.append(position)
        self._users.append(user_id)
        if len(self._ids) > self._max:
            cut = len(self._ids) // 2
            self.floor = self._ids[cut - 1]
            del self._ids[:cut]
            del self._users[:cut]

    def users_between(self, from_position: int, to_position: int) -> list[str] | None:
        """Users changed in ``(from, to]`` (with repeats), or None when the log no longer reaches back
        to ``from``."""
        if from_position < self.floor:
            return None
        start = bisect.bisect_right(self._ids, from_position)
        end = bisect.bisect_right(self._ids, to_position)
        return self._users[start:end]


class PresenceService:
    """Tracks local users' presence and tells room-mates.

    Args:
        server_name: this server's name (only local users are tracked).
        clock: the clock (time and the sweep).
        store: persistence of the last states.
        memberships: joined rooms per user.
        notifier: woken on changes (stream ``presence``).
        timeouts: idle and offline timeouts.
        sweep_interval_s: how often the sweep runs.
    """

    def __init__(
        self,
        server_name: str,
        clock: Clock,
        store: PresenceStore,
        memberships: JoinedRoomsCache,
        notifier: Notifier,
        timeouts: Timeouts,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self._local = LocalServer(server_name)
        self._clock = clock
        self._store = store
        self.memberships = memberships
        self._notifier = notifier
        self._timeouts = timeouts
        self._interval_ms = max(1, int(sweep_interval_s * 1000))
        self._states: dict[str, UserPresence] = {}
        self._not_offline: set[str] = set()
        self._buckets: dict[int, set[str]] = {}
        self._scheduled: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._position = 0
        self._room_logs: dict[str, ChangeLog] = {}
        """Room -> changes of its members (a sync reads only its own rooms' logs)."""
        self._unrouted = ChangeLog(0, MAX_UNROUTED_LOG)
        """Changes of users whose rooms were not cached yet; every sync reads it (it stays tiny)."""
        self._start_position = 0
        self._catch_up: dict[str, set[str]] = {}
        """User -> rooms they joined whose members' presence their next sync should carry."""
        self._loop: Any = None
        self.changes = 0
        """Broadcast changes so far (benchmarks and tests)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, run_sweeps: bool = True) -> None:
        """Restores the stored states and starts the periodic sweep."""
        now = self._clock.time_msec()
        self._position = await self._store.get_max_stream_id()
        self._start_position = self._position
        self._unrouted.floor = self._position
        for row in await self._store.get_interesting_presence():
            if row.state not in PRESENCE_STATES:
                continue
            p = UserPresence(row.user_id, row.state, row.status_msg, row.last_active_ts, now, stream_id=row.stream_id)
            self._states[row.user_id] = p
            if p.state != OFFLINE:
                self._not_offline.add(row.user_id)
            self._schedule(p)
        if run_sweeps:
            self._loop = self._clock.looping_call(self.sweep, self._interval_ms / 1000.0)

    def stop(self) -> None:
        """Stops the sweep."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    @property
    def position(self) -> int:
        """The presence stream's current position."""
        return self._position

    def is_local(self, user_id: str) -> bool:
        """Whether ``user_id`` belongs to this server."""
        # NOTSPEC: only local users are tracked; remote presence (m.presence EDUs) comes with federation.
        return self._local.is_mine(user_id)

    def _get(self, user_id: str) -> UserPresence:
        p = self._states.get(user_id)
        if p is None:
            p = UserPresence(user_id)
            self._states[user_id] = p
        return p

    # ------------------------------------------------------------------ inputs

    def user_syncing(self, user_id: str, device_id: str | None, set_presence: str | None) -> Callable[[], None]:
        """A ``/sync`` began; returns the callable to invoke when it ends (a sync observer).

        Args:
            user_id: the syncing user.
            device_id: their device (unused: presence is per user).
            set_presence: the request's ``set_presence`` (None means ``online``).
        """
        mode = set_presence or "online"
        if mode == OFFLINE or not self.is_local(user_id):
            return _nothing
        p = self._get(user_id)
        now = self._clock.time_msec()
        if sync_started(p, mode, now):
            self._changed(p)
        self._schedule(p)
        finished = False

        def sync_finished() -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            sync_ended(p, mode, self._clock.time_msec())
            self._schedule(p)

        return sync_finished

    def user_active(self, user_id: str) -> None:
        """The user did something pro-active (sent an event): online now (audit CHAT-4)."""
        if not self.is_local(user_id):
            return
        p = self._get(user_id)
        if activity(p, self._clock.time_msec()):
            self._changed(p)
        self._schedule(p)

    def set_presence(self, user_id: str, state: str, status_msg: str | None) -> None:
        """``PUT /presence``: sets the state and status message.

        Raises:
            ValueError: ``state`` is not a presence state (the servlet checks first).
        """
        if state not in PRESENCE_STATES:
            raise ValueError(f"not a presence state: {state!r}")
        p = self._get(user_id)
        if set_state(p, state, status_msg, self._clock.time_msec()):
            self._changed(p)
        self._schedule(p)

    def on_membership(self, user_id: str, room_id: str, membership: str | None) -> None:
        """A committed membership event (from the persister hook)."""
        self.memberships.on_membership(user_id, room_id, membership)
        if membership != "join" or not self.is_local(user_id):
            return
        p = self._states.get(user_id)
        if p is None or p.state == OFFLINE:
            return
        # The newcomer sees the members' presence on their next sync, and the members see theirs.
        self._catch_up.setdefault(user_id, set()).add(room_id)
        self._changed(p)

    # ------------------------------------------------------------------ changes

    def _changed(self, p: UserPresence) -> None:
        self._position += 1
        self.changes += 1
        p.stream_id = self._position
        if p.state == OFFLINE:
            self._not_offline.discard(p.user_id)
        else:
            self._not_offline.add(p.user_id)
        self._dirty.add(p.user_id)
        rooms = self.memberships.cached(p.user_id)
        if rooms is not None:
            for room_id in rooms:
                log = self._room_logs.get(room_id)
                if log is None:
                    log = self._room_logs[room_id] = ChangeLog(self._start_position, MAX_ROOM_LOG)
                log.append(self._position, p.user_id)
            self._notifier.on_new(STREAM, self._position, users=(p.user_id,), rooms=rooms)
        else:
            self._unrouted.append(self._position, p.user_id)
            defer.ensureDeferred(self._wake_after_load(p.user_id, self._position))

    async def _wake_after_load(self, user_id: str, position: int) -> None:
        try:
            rooms: Iterable[str] = await self.memberships.get(user_id)
        except Exception:
            logger.exception("could not load rooms for presence", extra={"user_id": user_id})
            rooms = ()
        self._notifier.on_new(STREAM, position, users=(user_id,), rooms=rooms)

    def _schedule(self, p: UserPresence) -> None:
        deadline = next_deadline(p, self._timeouts)
        if deadline is None:
            return  # an existing bucket entry is dropped when the sweep finds nothing due
        tick = math.ceil(deadline / self._interval_ms)
        current = self._scheduled.get(p.user_id)
        if current is not None and current <= tick:
            return
        if current is not None:
            bucket = self._buckets.get(current)
            if bucket is not None:
                bucket.discard(p.user_id)
                if not bucket:
                    del self._buckets[current]
        self._scheduled[p.user_id] = tick
        self._buckets.setdefault(tick, set()).add(p.user_id)

    async def sweep(self) -> None:
        """Applies due timeouts, then writes the changed states (one transaction)."""
        now = self._clock.time_msec()
        now_tick = now // self._interval_ms
        for tick in [t for t in self._buckets if t <= now_tick]:
            for user_id in self._buckets.pop(tick):
                self._scheduled.pop(user_id, None)
                p = self._states[user_id]
                if apply_deadlines(p, self._timeouts, now):
                    self._changed(p)
                    if p.state == OFFLINE and p.open_syncs == 0:
                        self._catch_up.pop(user_id, None)
                self._schedule(p)
        await self.flush()

    async def flush(self) -> None:
        """Writes the states changed since the last flush."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        rows = [
            StoredPresence(u, p.state, p.status_msg, p.last_active_ts, p.stream_id)
            for u in sorted(dirty)
            if (p := self._states.get(u)) is not None
        ]
        try:
            await self._store.store_presence(rows)
        except Exception:
            logger.exception("could not store %d presence states; will retry", len(rows))
            self._dirty |= dirty

    # ------------------------------------------------------------------ reads

    def get_presence(self, user_id: str) -> JsonDict:
        """The ``GET /presence/{userId}/status`` body (no permission check)."""
        p = self._states.get(user_id)
        if p is None:
            return {"presence": OFFLINE}
        return presence_content(p, self._clock.time_msec())

    async def shares_room(self, viewer_rooms: frozenset[str] | set[str], user_id: str) -> bool:
        """Whether ``user_id`` is joined to any of ``viewer_rooms``."""
        if not viewer_rooms:
            return False
        rooms = self.memberships.cached(user_id)
        if rooms is None:
            rooms = await self.memberships.get(user_id)
        return not rooms.isdisjoint(viewer_rooms)

    def _event(self, p: UserPresence, now: int) -> JsonDict:
        return {"type": "m.presence", "sender": p.user_id, "content": presence_content(p, now)}

    async def get_initial(self, viewer: str, viewer_rooms: set[str], to_position: int) -> list[JsonDict]:
        """``m.presence`` events for an initial sync: the viewer and every room-mate not offline."""
        self._catch_up.pop(viewer, None)
        now = self._clock.time_msec()
        events = []
        for user_id in sorted(self._not_offline | {viewer}):
            p = self._states.get(user_id)
            if p is None or p.stream_id == 0 or p.stream_id > to_position:
                continue
            if user_id == viewer or await self.shares_room(viewer_rooms, user_id):
                events.append(self._event(p, now))
        return events

    async def get_changes(
        self, viewer: str, viewer_rooms: set[str], from_position: int, to_position: int
    ) -> list[JsonDict]:
        """``m.presence`` events for an incremental sync: changes in ``(from, to]`` of room-mates (and
        the viewer), plus the members of rooms the viewer just joined.

        Reads only the change logs of the viewer's rooms (and the small unrouted log), so the cost is
        proportional to the changes the viewer may see, not to every change on the server.
        """
        now = self._clock.time_msec()
        events: dict[str, JsonDict] = {}
        if from_position < to_position:
            for user_id in dict.fromkeys(self._candidates(viewer, viewer_rooms, from_position, to_position)):
                p = self._states.get(user_id)
                if p is None or not from_position < p.stream_id <= to_position:
                    continue  # changed again after ``to``: the next sync carries it
                rooms = self.memberships.cached(user_id)  # the fast path: no coroutine per candidate
                if rooms is not None:
                    shared = not rooms.isdisjoint(viewer_rooms)
                else:
                    shared = await self.shares_room(viewer_rooms, user_id)
                if shared or user_id == viewer:
                    events[user_id] = self._event(p, now)
        joined = self._catch_up.pop(viewer, None)
        if joined:
            for user_id in sorted(self._not_offline):
                p = self._states[user_id]
                if user_id in events or p.stream_id > to_position:
                    continue
                if await self.shares_room(joined, user_id):
                    events[user_id] = self._event(p, now)
        return list(events.values())

    def _candidates(self, viewer: str, viewer_rooms: set[str], from_position: int, to_position: int) -> list[str]:
        candidates: list[str] = [viewer]
        for source in [self._unrouted, *(self._room_logs.get(r) for r in viewer_rooms)]:
            if source is None:
                if from_position < self._start_position:
                    return self._scan(from_position, to_position)
                continue
            users = source.users_between(from_position, to_position)
            if users is None:
                return self._scan(from_position, to_position)
            candidates.extend(users)
        return candidates

    def _scan(self, from_position: int, to_position: int) -> list[str]:
        """Every user changed in ``(from, to]`` (a ``since`` older than the logs reach)."""
        return [u for u, p in self._states.items() if from_position < p.stream_id <= to_position]

    def online_count(self) -> int:
        """Users not offline (metrics, benchmarks)."""
        return len(self._not_offline)
