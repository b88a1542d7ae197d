"""State resolution v2 (rooms v2-v11) and v2.1 (room v12), sans I/O.

Theory of operation:
    Resolving a set of room states ``{S₁, S₂, …}`` (maps ``(type, state_key) -> event_id``) is a
    two-phase affair, h11-style:

    1. :func:`prepare` splits the states into the unconflicted state map and the conflicted state
       set, and returns a :class:`StateResPrep` that tells the host which events it must load
       (:meth:`StateResPrep.needed_event_ids`); the host loads them, hands them back
       (:meth:`StateResPrep.add_events`, extra events welcome) and asks again until nothing is
       needed: the prep then holds the auth closure of every state event.
    2. :func:`resolve` is a pure function of ``(room_version, state_sets, events_by_id)`` (plus
       rejected IDs and the auth checker) following ``rooms/v2.md`` and ``rooms/v12.md``:

       a. the *full conflicted set*: conflicted state + auth difference (+ the *conflicted state
          subgraph* in v2.1);
       b. the power events of that set plus the events of their auth chains inside the set, in
          *reverse topological power ordering* (Kahn's algorithm, ties broken by sender power
          level descending, then ``origin_server_ts``, then event ID);
       c. *iterative auth checks* of that list, from the unconflicted state (v2) or from an
          empty state (v2.1);
       d. the remaining events in *mainline ordering* based on the power levels of step (c),
          then iterative auth checks of them on top of step (c)'s state;
       e. the unconflicted state map laid over the result.

    In room v12 the create event is not in ``auth_events``; the room ID names it (``!`` + its
    reference hash), so the resolver loads ``$`` + that hash and adds it to every auth state.

Invariants:
    * ``resolve`` never reads a clock, never does I/O and never mutates its inputs.
    * The result does not depend on the order of ``state_sets`` nor on any dict or set iteration
      order: every ordering step ends in a total order on event IDs.
    * Cost is linear in the auth closure of the state (plus ``n log n`` for the sorts); every
      DAG walk is iterative.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Final

from sc_proto.auth.rules import auth_types_for_event
from sc_proto.errors import AuthError, LocalProtocolError, RemoteProtocolError
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import RoomVersion, StateResAlgorithm
from sc_proto.state.auth_chain import (
    MissingEventsError,
    auth_chain_difference,
    conflicted_subgraph,
    get_auth_chain,
    get_auth_closure,
)

__all__ = [
    "AuthChecker",
    "InconsistentStateInputError",
    "StateResPrep",
    "full_conflicted_set",
    "is_power_event",
    "prepare",
    "resolve",
    "separate",
]

AuthChecker = Callable[[Event, Mapping[StateKey, Event], RoomVersion], None]
"""``(event, auth_state, room_version) -> None``; raises :class:`AuthError` to reject."""

_CREATE: Final = "m.room.create"
_POWER_LEVELS: Final = "m.room.power_levels"
_JOIN_RULES: Final = "m.room.join_rules"
_MEMBER: Final = "m.room.member"
_THIRD_PARTY_INVITE: Final = "m.room.third_party_invite"
_CREATE_KEY: Final[StateKey] = (_CREATE, "")
_PL_KEY: Final[StateKey] = (_POWER_LEVELS, "")
_JR_KEY: Final[StateKey] = (_JOIN_RULES, "")

_INFINITE_POWER: Final = float("inf")
_NO_MAINLINE: Final = 1 << 62
"""Mainline position ∞: larger than any real position."""


class InconsistentStateInputError(LocalProtocolError):
    """The inputs contradict themselves: an event stored under the wrong state key, a message
    event in a state map, or events of different rooms."""


def _default_auth_checker() -> AuthChecker:
    from sc_proto.auth.rules import check_auth

    return check_auth


# --- definitions -------------------------------------------------------------------------------


def _type(event: Event) -> Any:
    """The event type, or ``None`` if absent (the model's accessor raises ``KeyError``)."""
    return event.pdu.get("type")


def _sender(event: Event) -> Any:
    """The sender, or ``None`` if absent."""
    return event.pdu.get("sender")


def separate(
    state_sets: Sequence[Mapping[StateKey, str]],
) -> tuple[dict[StateKey, str], dict[StateKey, frozenset[str]]]:
    """Splits states into the unconflicted state map and the conflicted state set (by key).

    A key is unconflicted when it is present in every state with the same event ID; otherwise
    every event ID found for it is conflicted (a key missing from one state is conflicted).

    Returns:
        ``(unconflicted, conflicted)``: ``key -> event_id`` and ``key -> event IDs``.
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, frozenset[str]] = {}
    if not state_sets:
        return unconflicted, conflicted
    first, rest = state_sets[0], state_sets[1:]
    conflicted_keys: list[StateKey] = []
    for key, value in first.items():
        for other in rest:
            if other.get(key) != value:
                conflicted_keys.append(key)
                break
        else:
            unconflicted[key] = value
    for other in rest:
        conflicted_keys.extend(key for key in other if key not in first)
    for key in conflicted_keys:
        conflicted[key] = frozenset(v for s in state_sets if (v := s.get(key)) is not None)
    return unconflicted, conflicted


def is_power_event(event: Event) -> bool:
    """Whether ``event`` is a *power event*: power levels, join rules, or a leave/ban of
    someone else."""
    sk = event.state_key
    if sk is None:
        return False
    etype = _type(event)
    if etype in (_POWER_LEVELS, _JOIN_RULES):
        return sk == ""
    if etype == _MEMBER:
        return event.membership in ("leave", "ban") and _sender(event) != sk
    return False


def _parse_level(value: Any) -> int | None:
    """Reads a power level value (integer, or string/float in old room versions)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _creators(create: Event, room_version: RoomVersion) -> set[str]:
    if room_version.privileged_creators:
        out = {_sender(create)}
        extra = create.content.get("additional_creators")
        if isinstance(extra, list):
            out.update(u for u in extra if isinstance(u, str))
        return out
    if room_version.implicit_room_creator:
        return {_sender(create)}
    creator = create.content.get("creator")
    return {creator} if isinstance(creator, str) else set()


def _create_id_for_room(room_id: str) -> str:
    return "$" + room_id[1:]


# --- preparation (the host-facing loop) ---------------------------------------------------------


class StateResPrep:
    """What :func:`resolve` needs, gathered with the host's help.

    Use::

        prep = prepare(state_sets)
        while ids := prep.needed_event_ids():
            prep.add_events(host_load(ids))  # if nothing new loads, stop: resolve will raise
        result = prep.resolve(room_version)

    Attributes:
        state_sets: the states being resolved.
        unconflicted: the unconflicted state map.
        conflicted: the conflicted state set, by key.
    """

    def __init__(self, state_sets: Sequence[Mapping[StateKey, str]]) -> None:
        self.state_sets: tuple[Mapping[StateKey, str], ...] = tuple(state_sets)
        self.unconflicted, self.conflicted = separate(self.state_sets)
        self._events: dict[str, Event] = {}
        self._pending: set[str] = set()
        if self.conflicted:
            for s in self.state_sets:
                self._request(s.values())

    @property
    def conflicted_event_ids(self) -> frozenset[str]:
        """Every event ID of the conflicted state set."""
        return frozenset(eid for ids in self.conflicted.values() for eid in ids)

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
        added: list[Event] = []
        for ev in events:
            if ev.event_id in self._events:
                continue
            self._events[ev.event_id] = ev
            self._pending.discard(ev.event_id)
            added.append(ev)
        if self.conflicted:
            # Second pass so that events handed over in one batch satisfy each other.
            for ev in added:
                self._request(ev.auth_event_ids)
                if ev.room_version.room_id_from_create_event and _type(ev) != _CREATE:
                    self._request((_create_id_for_room(ev.room_id),))

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


def prepare(state_sets: Sequence[Mapping[StateKey, str]]) -> StateResPrep:
    """Starts a state resolution: splits the states and lists the events the host must load.

    Args:
        state_sets: the states to resolve, as ``(type, state_key) -> event_id`` maps.

    Returns:
        A :class:`StateResPrep`; loop on its :meth:`~StateResPrep.needed_event_ids`.
    """
    return StateResPrep(state_sets)


# --- the algorithm -------------------------------------------------------------------------------


class _Resolver:
    """One resolution's context: room version, events, rejections, checker, v12 create event."""

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
        self.create: Event | None = None

    def event(self, event_id: str) -> Event:
        ev = self.events.get(event_id)
        if ev is None:
            raise MissingEventsError((event_id,))
        return ev

    def find_room_create(self, conflicted_ids: Iterable[str]) -> None:
        """Checks that the events belong to one room and, in v12, finds its create event."""
        room_id: str | None = None
        for eid in conflicted_ids:
            ev = self.event(eid)
            if room_id is None:
                room_id = ev.room_id
            elif ev.room_id != room_id:
                raise InconsistentStateInputError(f"events of rooms {room_id} and {ev.room_id} mixed")
        if room_id is not None and self.room_version.room_id_from_create_event:
            create = self.event(_create_id_for_room(room_id))
            if _type(create) != _CREATE or create.state_key != "":
                raise InconsistentStateInputError(f"{create.event_id} is not the room's create event")
            self.create = create

    def pl_auth_event(self, ev: Event) -> Event | None:
        """The power levels event in ``ev``'s auth events, if any."""
        for aid in ev.auth_event_ids:
            a = self.events.get(aid)
            if a is not None and _type(a) == _POWER_LEVELS and a.state_key == "":
                return a
        return None

    def sender_power(self, ev: Event) -> float:
        """The sender's power level according to ``ev``'s own auth events."""
        pl: Event | None = None
        create = self.create
        for aid in ev.auth_event_ids:
            a = self.events.get(aid)
            if a is None or a.state_key != "":
                continue
            if _type(a) == _POWER_LEVELS:
                pl = a
            elif _type(a) == _CREATE:
                create = a
        if _type(ev) == _CREATE and ev.state_key == "":
            create = ev
        if create is not None and self.room_version.privileged_creators:
            if _sender(ev) in _creators(create, self.room_version):
                return _INFINITE_POWER
        if pl is None:
            if create is not None and _sender(ev) in _creators(create, self.room_version):
                return 100
            return 0
        users = pl.content.get("users")
        level = _parse_level(users.get(_sender(ev))) if isinstance(users, Mapping) else None
        if level is None:
            level = _parse_level(pl.content.get("users_default", 0))
        return level if level is not None else 0

    # --- reverse topological power ordering ---------------------------------------------------

    def power_sort(self, selected: set[str]) -> list[str]:
        """Orders ``selected`` by the reverse topological power ordering.

        Kahn's algorithm runs over the whole auth closure of ``selected`` so that an auth path
        between two selected events through unselected ones still orders them; unselected
        events are released as soon as they become ready and are not output.
        """
        nodes = get_auth_closure(selected, self.events)
        waiting: dict[str, int] = {}
        children: dict[str, list[str]] = {}
        for eid in nodes:
            parents = set(self.events[eid].auth_event_ids)
            waiting[eid] = len(parents)
            for p in parents:
                children.setdefault(p, []).append(eid)

        def key(eid: str) -> tuple[float, int, str]:
            ev = self.events[eid]
            return (-self.sender_power(ev), ev.origin_server_ts, eid)

        free: list[str] = []  # ready unselected events: released at once, not output
        heap: list[tuple[float, int, str]] = []  # ready selected events, smallest first
        for eid in nodes:
            if waiting[eid] == 0 and eid in selected:
                heapq.heappush(heap, key(eid))
            elif waiting[eid] == 0:
                free.append(eid)
        out: list[str] = []
        while free or heap:
            if free:
                eid = free.pop()
            else:
                eid = heapq.heappop(heap)[2]
                out.append(eid)
            for child in children.get(eid, ()):
                waiting[child] -= 1
                if waiting[child] == 0 and child in selected:
                    heapq.heappush(heap, key(child))
                elif waiting[child] == 0:
                    free.append(child)
        if len(out) < len(selected):
            # NOTSPEC: only a cycle in the auth DAG (possible with v1/v2 free-form event IDs)
            # leaves events unreleased; order them by the tie-break alone so servers still agree.
            done = set(out)
            out.extend(sorted((e for e in selected if e not in done), key=key))
        return out

    # --- mainline ordering --------------------------------------------------------------------

    def mainline_sort(self, event_ids: Iterable[str], pl_id: str | None) -> list[str]:
        """Orders events by mainline position based on ``pl_id``, then timestamp, then ID."""
        position: dict[str, int] = {}
        cur = self.events.get(pl_id) if pl_id is not None else None
        i = 0
        while cur is not None and cur.event_id not in position:
            position[cur.event_id] = i
            i += 1
            cur = self.pl_auth_event(cur)
        # Walked PL events off the mainline remember the position they lead to.
        memo: dict[str, int] = {}

        def closest(start: Event | None) -> int:
            path: list[str] = []
            on_path: set[str] = set()
            pos = _NO_MAINLINE
            node = start
            while node is not None:
                nid = node.event_id
                if nid in position:
                    pos = position[nid]
                    break
                if nid in memo:
                    pos = memo[nid]
                    break
                if nid in on_path:
                    break
                path.append(nid)
                on_path.add(nid)
                node = self.pl_auth_event(node)
            for nid in path:
                memo[nid] = pos
            return pos

        keyed: list[tuple[int, int, str]] = []
        for eid in event_ids:
            ev = self.events[eid]
            keyed.append((-closest(self.pl_auth_event(ev)), ev.origin_server_ts, eid))
        keyed.sort()
        return [k[2] for k in keyed]

    # --- iterative auth checks ----------------------------------------------------------------

    def auth_state_for(self, ev: Event, state: Mapping[StateKey, str]) -> dict[StateKey, Event]:
        """``ev``'s auth events (minus rejected ones), overridden by the current ``state``."""
        rejected = self.rejected
        auth_state: dict[StateKey, Event] = {}
        for aid in ev.auth_event_ids:
            if aid in rejected:
                continue
            a = self.events.get(aid)
            if a is not None and a.state_key is not None:
                auth_state[(_type(a), a.state_key)] = a
        if self.create is not None:
            auth_state[_CREATE_KEY] = self.create
        for key in auth_types_for_event(ev, self.room_version):
            sid = state.get(key)
            if sid is not None and sid not in rejected:
                auth_state[key] = self.event(sid)
        return auth_state

    def iterative_auth_checks(self, event_ids: Iterable[str], state: dict[StateKey, str]) -> None:
        """Applies, in order, each event that passes auth against ``state`` (updated in place)."""
        for eid in event_ids:
            ev = self.events[eid]
            sk = ev.state_key
            if sk is None:
                raise InconsistentStateInputError(f"{eid} in the auth chain is not a state event")
            try:
                self.check(ev, self.auth_state_for(ev, state), self.room_version)
            except (AuthError, RemoteProtocolError):
                continue
            state[(_type(ev), sk)] = eid


def _check_keys(conflicted: Mapping[StateKey, frozenset[str]], events: Mapping[str, Event]) -> None:
    missing = {eid for ids in conflicted.values() for eid in ids if eid not in events}
    if missing:
        raise MissingEventsError(missing)
    for key, ids in conflicted.items():
        for eid in ids:
            ev = events[eid]
            if ev.state_key is None or (_type(ev), ev.state_key) != key:
                raise InconsistentStateInputError(f"{eid} is stored under the wrong key {key!r}")


def full_conflicted_set(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[StateKey, str]],
    events_by_id: Mapping[str, Event],
) -> set[str]:
    """Returns the *full conflicted set*: conflicted state + auth difference, plus the
    conflicted state subgraph for v2.1.

    Raises:
        MissingEventsError: an event of the states' auth closure is not in ``events_by_id``.
    """
    _unconflicted, conflicted = separate(state_sets)
    return _full_conflicted_set(room_version, state_sets, conflicted, events_by_id)


def _full_conflicted_set(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[StateKey, str]],
    conflicted: Mapping[StateKey, frozenset[str]],
    events_by_id: Mapping[str, Event],
) -> set[str]:
    conflicted_ids = {eid for ids in conflicted.values() for eid in ids}
    if not conflicted_ids:
        return set()
    full = auth_chain_difference(state_sets, events_by_id)
    full.update(conflicted_ids)
    if room_version.state_res is StateResAlgorithm.V2_1:
        full.update(conflicted_subgraph(conflicted_ids, events_by_id))
    return full


def resolve(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[StateKey, str]],
    events_by_id: Mapping[str, Event],
    auth_checker: AuthChecker | None = None,
    rejected_event_ids: Collection[str] = frozenset(),
) -> dict[StateKey, str]:
    """Resolves room states with state resolution v2 (v2.1 for room v12). Pure.

    Rooms whose version uses state resolution v1 (room version 1) are handed to
    :func:`sc_proto.state.v1.resolve`; for them ``events_by_id`` needs less (see there), and
    what :class:`StateResPrep` gathers is a superset of it.

    Args:
        room_version: the room's version; picks v1, v2 or v2.1.
        state_sets: the states to resolve, as ``(type, state_key) -> event_id`` maps.
        events_by_id: every event of the auth closure of the states (what
            :class:`StateResPrep` gathers). Unneeded extra events are ignored.
        auth_checker: the authorisation rules; defaults to
            :func:`sc_proto.auth.rules.check_auth`.
        rejected_event_ids: events the host has rejected. They are never used as auth events;
            if conflicted they are re-checked like any other event (the spec's rule).

    Returns:
        The resolved state, ``(type, state_key) -> event_id``.

    Raises:
        MissingEventsError: a needed event is not in ``events_by_id``.
        InconsistentStateInputError: the states and events contradict each other.
    """
    if room_version.state_res is StateResAlgorithm.V1:
        # Imported here: sc_proto.state.v1 builds on this module's types.
        from sc_proto.state.v1 import resolve as resolve_v1

        return resolve_v1(room_version, state_sets, events_by_id, auth_checker, rejected_event_ids)
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted
    _check_keys(conflicted, events_by_id)
    checker = auth_checker if auth_checker is not None else _default_auth_checker()
    r = _Resolver(room_version, events_by_id, checker, frozenset(rejected_event_ids))
    conflicted_ids = {eid for ids in conflicted.values() for eid in ids}
    r.find_room_create(conflicted_ids)
    full = _full_conflicted_set(room_version, state_sets, conflicted, events_by_id)

    power = {eid for eid in full if is_power_event(events_by_id[eid])}
    selected = get_auth_chain(power, events_by_id) & full
    selected |= power
    ordered_power = r.power_sort(selected)

    v2_1 = room_version.state_res is StateResAlgorithm.V2_1
    state: dict[StateKey, str] = {} if v2_1 else dict(unconflicted)
    r.iterative_auth_checks(ordered_power, state)

    leftover = r.mainline_sort((e for e in full if e not in selected), state.get(_PL_KEY))
    r.iterative_auth_checks(leftover, state)

    state.update(unconflicted)
    return state
