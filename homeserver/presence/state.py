"""The per-user presence state machine, pure: every function takes the time as a parameter.

Theory of operation (spec module "Presence", audit CHAT-4):

* **Inputs.** A user's presence moves only on these inputs: a sync starts or ends (with the
  request's ``set_presence``), the user is *active* (sends a message: a "pro-active event"), the
  user sets their presence (``PUT /presence``), and time passes (:func:`apply_deadlines`).
* **online** while the user is active or syncing. A sync with ``set_presence=online`` brings an
  ``offline`` user online (coming online is pro-active, so it also sets ``last_active``); it does not
  override ``unavailable`` (idle, or chosen by the user), which only activity or ``PUT online`` ends.
* **unavailable** after ``idle_timeout`` without activity, or when a sync says
  ``set_presence=unavailable``, or when the user sets it.
* **offline** once no counted sync is open and ``offline_timeout`` has passed since the later of
  the last sync's end and the last activity; or when the user sets it. A sync with
  ``set_presence=offline`` is not counted at all (it neither marks the user online nor keeps them
  from going offline).
* **Activity always means online** (CHAT-4): sending a message sets ``last_active`` and ``online``
  in the same step, whatever the state was, so a user is never shown offline while sending.
* ``currently_active`` is true while online and active within :data:`ACTIVE_WINDOW_MS`. While it is
  true, further activity changes nothing visible (no broadcast); when the window passes without
  activity the flag turns false and that is broadcast, as the spec requires.

Invariants: ``open_syncs >= 0``; ``currently_active`` implies ``state == online``; every function
returns True exactly when a client-visible field (``state``, ``status_msg``, ``currently_active``)
changed, which is when the caller allocates a stream position and tells room-mates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ONLINE = "online"
UNAVAILABLE = "unavailable"
OFFLINE = "offline"
PRESENCE_STATES = frozenset({ONLINE, UNAVAILABLE, OFFLINE})

ACTIVE_WINDOW_MS = 60_000
"""How long after the last activity ``currently_active`` stays true (the spec leaves it to servers)."""


@dataclass(frozen=True)
class Timeouts:
    """The configured timeouts, in milliseconds."""

    idle_ms: int
    offline_ms: int


@dataclass(slots=True)
class UserPresence:
    """One user's presence as the server tracks it.

    Attributes:
        user_id: the user.
        state: ``online``, ``unavailable`` or ``offline``.
        status_msg: the status message, or None.
        last_active_ts: the last activity (ms; 0 for never).
        last_sync_ts: when a counted sync last started or ended (ms; 0 for never).
        open_syncs: counted syncs in flight.
        currently_active: the flag as last broadcast.
        stream_id: the presence stream position of the last broadcast change (0: never broadcast).
    """

    user_id: str
    state: str = OFFLINE
    status_msg: str | None = None
    last_active_ts: int = 0
    last_sync_ts: int = 0
    open_syncs: int = 0
    currently_active: bool = False
    stream_id: int = 0

    def visible(self) -> tuple[str, str | None, bool]:
        """The fields whose change must be broadcast."""
        return (self.state, self.status_msg, self.currently_active)


def _mark_active(p: UserPresence, now: int) -> None:
    p.last_active_ts = now
    p.state = ONLINE
    p.currently_active = True


def sync_started(p: UserPresence, set_presence: str, now: int) -> bool:
    """A sync with ``set_presence`` began. ``offline`` syncs are not counted (see module doc)."""
    if set_presence == OFFLINE:
        return False
    before = p.visible()
    p.open_syncs += 1
    p.last_sync_ts = now
    if set_presence == ONLINE and p.state == OFFLINE:
        _mark_active(p, now)
    elif set_presence == UNAVAILABLE and p.state != UNAVAILABLE:
        p.state = UNAVAILABLE
        p.currently_active = False
    return p.visible() != before


def sync_ended(p: UserPresence, set_presence: str, now: int) -> None:
    """A counted sync (one :func:`sync_started` counted) finished; the offline timer starts when none
    is left."""
    if set_presence == OFFLINE:
        return
    p.open_syncs = max(0, p.open_syncs - 1)
    p.last_sync_ts = now


def activity(p: UserPresence, now: int) -> bool:
    """The user did something pro-active (sent a message): online, active now."""
    before = p.visible()
    _mark_active(p, now)
    return p.visible() != before


def set_state(p: UserPresence, state: str, status_msg: str | None, now: int) -> bool:
    """The user set their presence (``PUT /presence``); that is activity too (spec: "the activity time
    is updated"). ``state`` must be one of :data:`PRESENCE_STATES`."""
    before = p.visible()
    p.status_msg = status_msg
    if state == ONLINE:
        _mark_active(p, now)
    else:
        p.last_active_ts = now
        p.state = state
        p.currently_active = False
    return p.visible() != before


def next_deadline(p: UserPresence, timeouts: Timeouts) -> int | None:
    """When (ms) :func:`apply_deadlines` could next change ``p``; None when only an input can."""
    candidates: list[int] = []
    if p.state == ONLINE:
        candidates.append(p.last_active_ts + timeouts.idle_ms)
        if p.currently_active:
            candidates.append(p.last_active_ts + ACTIVE_WINDOW_MS)
    if p.state != OFFLINE and p.open_syncs == 0:
        candidates.append(max(p.last_sync_ts, p.last_active_ts) + timeouts.offline_ms)
    return min(candidates) if candidates else None


def apply_deadlines(p: UserPresence, timeouts: Timeouts, now: int) -> bool:
    """Applies every timeout that has passed at ``now``."""
    before = p.visible()
    if p.state == ONLINE:
        idle_for = now - p.last_active_ts
        if idle_for >= timeouts.idle_ms:
            p.state = UNAVAILABLE
            p.currently_active = False
        elif p.currently_active and idle_for >= ACTIVE_WINDOW_MS:
            p.currently_active = False
    if p.state != OFFLINE and p.open_syncs == 0:
        if now - max(p.last_sync_ts, p.last_active_ts) >= timeouts.offline_ms:
            p.state = OFFLINE
            p.currently_active = False
    return p.visible() != before


def presence_content(p: UserPresence, now: int) -> dict[str, Any]:
    """The ``m.presence`` content / ``GET /presence`` body, with ``last_active_ago`` as of ``now``."""
    content: dict[str, Any] = {"presence": p.state, "currently_active": p.currently_active}
    if p.last_active_ts > 0:
        content["last_active_ago"] = max(0, now - p.last_active_ts)
    if p.status_msg is not None:
        content["status_msg"] = p.status_msg
    return content
