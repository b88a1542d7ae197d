"""State resolution v1 (room version 1), sans I/O.

Theory of operation:
    ``rooms/v1.md`` ("State resolution") resolves a set of room states ``{S₁, S₂, …}`` (maps
    ``(type, state_key) -> event_id``) in passes that build up a result ``R``:

    1. ``R`` starts as the union of the states minus every *conflicting* key. A conflict is two
       states holding *different* event IDs for one key; unlike v2, a key present in only some
       of the states is not conflicted (see :func:`separate`).
    2. The ``m.room.power_levels`` conflict, then the ``m.room.join_rules`` conflicts, then the
       ``m.room.member`` conflicts are resolved one key at a time: the conflicting events are
       sorted by ascending ``depth`` then descending ``sha1(event_id)``; the first is taken
       unchecked, each next one replaces it while it passes the authorization rules in ``R``,
       and the first failure ends that key. ``R`` is updated after each pass.
    3. Every other conflicted key takes the event of highest ``depth`` (then lowest
       ``sha1(event_id)``) that passes the authorization rules in ``R``.

    Only ``R`` is consulted when checking an event, never the event's own ``auth_events``, so
    the host has to load just the conflicting events and the unconflicted state events at the
    keys the rules read for them: :func:`prepare` asks for exactly those, in two rounds.

    Where the text is silent we do what deployed servers do, so that every server computes the
    same state (a v1 room is only as consistent as its servers agree):

    * keys of one pass do not see each other: each join-rules or membership key is checked
      against ``R`` as it stood when the pass began, and the pass's results are applied together
      (so the result does not depend on the order in which keys are visited);
    * a non-auth key whose events all fail the rules keeps its lowest-ordered event (see
      ``_resolve_other``).

Invariants:
    * ``resolve`` never reads a clock, never does I/O and never mutates its inputs.
    * The result does not depend on the order of ``state_sets`` nor on any dict or set
      iteration order: events are ordered by ``(depth, sha1(event_id))``, which is total.
    * Cost is ``O(c log c)`` auth checks' worth for ``c`` conflicting events; no DAG walks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Final

from sc_proto.auth.rules import auth_types_for_event
from sc_proto.errors import AuthError, RemoteProtocolError
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import RoomVersion
from sc_proto.state.auth_chain import MissingEventsError
from sc_proto.state.v2 import AuthChecker, InconsistentStateInputError

__all__ = [
    "StateResPrepV1",
    "conflict_order",
    "prepare",
    "resolve",
    "separate",
]

_POWER_LEVELS: Final = "m.room.power_levels"
_JOIN_RULES: Final = "m.room.join_rules"
_MEMBER: Final = "m.room.member"
_PL_KEY: Final[StateKey] = (_POWER_LEVELS, "")


def separate(
    state_sets: Sequence[Mapping[StateKey, str]],
) -> tuple[dict[StateKey, str], dict[StateKey, frozenset[str]]]:
    """Splits states into the unconflicted union and the conflicting event IDs (by key).

    A key is conflicted when two states hold different event IDs for it. A key that only some
    states hold, always with the same ID, is unconflicted (v1 differs from v2 here).

    Returns:
        ``(unconflicted, conflicted)``: ``key -> event_id`` and ``key -> event IDs`` (two or more).
    """
    seen: dict[StateKey, set[str]] = {}
    for state in state_sets:
        for key, event_id in state.items():
            seen.setdefault(key, set()).add(event_id)
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, frozenset[str]] = {}
    for key, ids in seen.items():
        if len(ids) == 1:
            unconflicted[key] = next(iter(ids))
        else:
            conflicted[key] = frozenset(ids)
    return unconflicted, conflicted


def _sha1_descending(event_id: str) -> bytes:
    """A sort key that orders event IDs by *descending* ``sha1(event_id)``."""
    # The spec fixes SHA-1 here as a tie-break, not for security. surrogatepass: a garbage ID
    # from a peer must not raise; real IDs are ASCII.
    digest = hashlib.sha1(event_id.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()
    return bytes(255 - b for b in digest)


def conflict_order(events: Iterable[Event]) -> list[Event]:
    """Sorts events by ascending ``depth``, then descending ``sha1(event_id)`` (``rooms/v1.md``).

    The auth passes walk this list forwards; the other conflicts are picked from its end
    (highest depth, lowest hash first).
    """
    return sorted(events, key=lambda ev: (ev.depth, _sha1_descending(ev.event_id)))


# --- preparation (the host-facing loop) ---------------------------------------------------------


class StateResPrepV1:
    """What :func:`resolve` needs for a v1 room, gathered with the host's help.

    Use::

        prep = prepare(state_sets)
        while ids := prep.needed_event_ids():
            prep.add_events(host_load(ids))  # if nothing new loads, stop: resolve will raise
        result = prep.resolve(room_version)

    The first round asks for the conflicting events; the second for the unconflicted state
    events at the keys the authorization rules read for them.

    Attributes:
        state_sets: the states being resolved.
        unconflicted: the unconflicted union of the states.
        conflicted: the conflicting event IDs, by key.
    """

    def __init__(self, state_sets: Sequence[Mapping[StateKey, str]]) -> None:
        self.state_sets: tuple[Mapping[StateKey, str], ...] = tuple(state_sets)
        self.unconflicted, self.conflicted = separate(self.state_sets)
        self._events: dict[str, Event] = {}
        self._pending: set[str] = set()
        self._conflicted_ids = frozenset(eid for ids in self.conflicted.values() for eid in ids)
        self._request(self._conflicted_ids)

    @property
    def conflicted_event_ids(self) -> frozenset[str]:
        """Every conflicting event ID."""
        return self._conflicted_ids

    @property
    def events_by_id(self) -> Mapping[str, Event]:
        """The events added so far."""
        return self._events

    def _request(self, event_ids: Iterable[str]) -> None:
        self._pending.update(eid for eid in event_ids if eid not in self._events)

    def needed_event_ids(self) -> frozenset[str]:
        """The event IDs the host must still load; empty when the prep is complete."""
        return frozenset(self._pending)

    def add_events(self, events: Iterable[Event]) -> None:
        """Hands loaded events to the prep (extra, unrequested events are welcome too)."""
        for ev in events:
            if ev.event_id in self._events:
                continue
            self._events[ev.event_id] = ev
            self._pending.discard(ev.event_id)
            if ev.event_id in self._conflicted_ids:
                self._request(_auth_state_ids(ev, self.unconflicted, ev.room_version))

    @property
    def is_complete(self) -> bool:
        """Whether every needed event has been added."""
        return not self._pending

    def resolve(
        self,
        room_version: RoomVersion,
        auth_checker: AuthChecker | None = None,
        rejected_event_ids: Collection[str] = frozenset(),
    ) -> dict[StateKey, str]:
        """Runs :func:`resolve` over the gathered events (see there)."""
        return resolve(room_version, self.state_sets, self._events, auth_checker, rejected_event_ids)


def prepare(state_sets: Sequence[Mapping[StateKey, str]]) -> StateResPrepV1:
    """Starts a v1 state resolution: splits the states and lists the events the host must load.

    Args:
        state_sets: the states to resolve, as ``(type, state_key) -> event_id`` maps.

    Returns:
        A :class:`StateResPrepV1`; loop on its :meth:`~StateResPrepV1.needed_event_ids`.
    """
    return StateResPrepV1(state_sets)


def _auth_state_ids(
    ev: Event, state: Mapping[StateKey, str], room_version: RoomVersion
) -> list[str]:
    """The IDs in ``state`` at the keys the authorization rules read for ``ev``."""
    return [sid for key in auth_types_for_event(ev, room_version) if (sid := state.get(key)) is not None]


# --- the algorithm -------------------------------------------------------------------------------


class _ResolverV1:
    """One resolution's context: room version, events, checker and rejections."""

    def __init__(
        self,
        room_version: RoomVersion,
        events: Mapping[str, Event],
        auth_checker: AuthChecker,
        rejected: Collection[str],
    ) -> None:
        self.room_version = room_version
        self.events = events
        self.check = auth_checker
        self.rejected = rejected

    def allowed(self, ev: Event, state: Mapping[StateKey, str]) -> bool:
        """Whether ``ev`` passes the authorization rules in the room state ``state``."""
        auth_state: dict[StateKey, Event] = {}
        for key in auth_types_for_event(ev, self.room_version):
            sid = state.get(key)
            if sid is None or sid in self.rejected:
                continue
            auth_event = self.events.get(sid)
            if auth_event is None:
                raise MissingEventsError((sid,))
            auth_state[key] = auth_event
        try:
            self.check(ev, auth_state, self.room_version)
        except (AuthError, RemoteProtocolError):
            return False
        return True

    def resolve_auth_key(self, key: StateKey, ordered: Sequence[Event], base: Mapping[StateKey, str]) -> str:
        """One key of an auth pass: take the first event, then each next one while allowed."""
        state = dict(base)
        state[key] = ordered[0].event_id
        for ev in ordered[1:]:
            if not self.allowed(ev, state):
                break
            state[key] = ev.event_id
        return state[key]

    def resolve_other(self, ordered: Sequence[Event], state: Mapping[StateKey, str]) -> str:
        """A non-auth key: the highest-ordered event that is allowed in ``state``."""
        for ev in reversed(ordered):
            if self.allowed(ev, state):
                return ev.event_id
        # NOTSPEC: rooms/v1.md does not say what happens when no event passes; deployed servers
        # keep the lowest-ordered one (least depth), and agreeing with them is what matters.
        return ordered[0].event_id

    def auth_pass(
        self, keys: Iterable[StateKey], conflicted: Mapping[StateKey, list[Event]], state: dict[StateKey, str]
    ) -> None:
        """Resolves ``keys`` against ``state`` as it stands, then applies the results together."""
        results = {key: self.resolve_auth_key(key, conflicted[key], state) for key in sorted(keys)}
        state.update(results)


def _conflicted_events(
    conflicted: Mapping[StateKey, frozenset[str]],
    unconflicted: Mapping[StateKey, str],
    events: Mapping[str, Event],
    room_version: RoomVersion,
) -> dict[StateKey, list[Event]]:
    """Loads and checks the conflicting events; returns them in :func:`conflict_order` by key.

    Raises:
        MissingEventsError: a conflicting event, or an unconflicted state event the rules need
            for one, is not in ``events``.
        InconsistentStateInputError: an event under the wrong key, or events of several rooms.
    """
    missing = {eid for ids in conflicted.values() for eid in ids if eid not in events}
    if missing:
        raise MissingEventsError(missing)
    room_id: str | None = None
    out: dict[StateKey, list[Event]] = {}
    for key, ids in conflicted.items():
        for eid in ids:
            ev = events[eid]
            if ev.state_key is None or (ev.pdu.get("type"), ev.state_key) != key:
                raise InconsistentStateInputError(f"{eid} is stored under the wrong key {key!r}")
            if room_id is None:
                room_id = ev.room_id
            elif ev.room_id != room_id:
                raise InconsistentStateInputError(f"events of rooms {room_id} and {ev.room_id} mixed")
            missing.update(a for a in _auth_state_ids(ev, unconflicted, room_version) if a not in events)
        out[key] = conflict_order(events[eid] for eid in ids)
    if missing:
        raise MissingEventsError(missing)
    return out


def resolve(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[StateKey, str]],
    events_by_id: Mapping[str, Event],
    auth_checker: AuthChecker | None = None,
    rejected_event_ids: Collection[str] = frozenset(),
) -> dict[StateKey, str]:
    """Resolves room states with state resolution v1 (room version 1). Pure.

    Args:
        room_version: the room's version (its authorization rules are used for the checks).
        state_sets: the states to resolve, as ``(type, state_key) -> event_id`` maps.
        events_by_id: the conflicting events and the unconflicted state events the rules read
            for them (what :class:`StateResPrepV1` gathers). Extra events are ignored.
        auth_checker: the authorization rules; defaults to
            :func:`sc_proto.auth.rules.check_auth`.
        rejected_event_ids: events the host has rejected; they are never consulted as state
            when checking an event (a conflicting one may still be chosen, as the text says).

    Returns:
        The resolved state, ``(type, state_key) -> event_id``.

    Raises:
        MissingEventsError: a needed event is not in ``events_by_id``.
        InconsistentStateInputError: the states and events contradict each other.
    """
    unconflicted, conflicted_ids = separate(state_sets)
    if not conflicted_ids:
        return unconflicted
    conflicted = _conflicted_events(conflicted_ids, unconflicted, events_by_id, room_version)
    if auth_checker is None:
        from sc_proto.auth.rules import check_auth

        auth_checker = check_auth
    r = _ResolverV1(room_version, events_by_id, auth_checker, frozenset(rejected_event_ids))
    state = dict(unconflicted)
    # Each pass is skipped when it has no conflict (the loop over no keys does nothing).
    r.auth_pass([k for k in conflicted if k == _PL_KEY], conflicted, state)
    r.auth_pass([k for k in conflicted if k[0] == _JOIN_RULES], conflicted, state)
    r.auth_pass([k for k in conflicted if k[0] == _MEMBER], conflicted, state)
    others: dict[StateKey, str] = {}
    for key in sorted(k for k in conflicted if k not in state):
        others[key] = r.resolve_other(conflicted[key], state)
    state.update(others)
    return state
