"""Tests for sc_proto.state.v1: state resolution v1 (room version 1).

Scenarios are written from the prose of ``rooms/v1.md`` ("State resolution") and run with the real
authorization rules (:func:`sc_proto.auth.rules.check_auth`) unless a test injects its own checker.
Events are built directly with ``Event(pdu, RoomVersions.V1, event_id)``; IDs are readable names
and depths are explicit, because v1 orders conflicting events by depth then ``sha1(event_id)``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sc_proto.errors import AuthError, LocalProtocolError
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import RoomVersion, RoomVersions
from sc_proto.state import (
    InconsistentStateInputError,
    MissingEventsError,
    StateResPrepV1,
    prepare,
    prepare_v1,
    resolve,
)
from sc_proto.state import v1 as state_v1

RV = RoomVersions.V1
ALICE = "@alice:a.test"  # creator, level 100
BOB = "@bob:b.test"  # moderator, level 50
CAROL = "@carol:c.test"
DAVE = "@dave:d.test"

PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")
TOPIC = ("m.room.topic", "")
NAME = ("m.room.name", "")


def member(user: str) -> StateKey:
    return ("m.room.member", user)


def sha1(event_id: str) -> str:
    return hashlib.sha1(event_id.encode(), usedforsecurity=False).hexdigest()


class Room:
    """A v1 room built by hand: auth events are selected from a given state; depths explicit."""

    def __init__(self, bob_level: int = 50) -> None:
        self.events: dict[str, Event] = {}
        self.room_id = "!room:a.test"
        self.state: dict[StateKey, str] = {}
        self.depth = 0
        self.send("m.room.create", ALICE, {"creator": ALICE}, "", eid="$create")
        self.send("m.room.member", ALICE, {"membership": "join"}, ALICE, eid="$alice_join")
        self.send("m.room.power_levels", ALICE, self.pl_content({BOB: bob_level}), "", eid="$pl1")
        self.send("m.room.join_rules", ALICE, {"join_rule": "public"}, "", eid="$jr1")
        for user in (BOB, CAROL):
            self.send("m.room.member", user, {"membership": "join"}, user, eid=f"${user[1:].split(':')[0]}_join")

    @staticmethod
    def pl_content(users: Mapping[str, int]) -> dict[str, Any]:
        return {
            "users": {ALICE: 100, **users},
            "users_default": 0,
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "invite": 0,
            "redact": 50,
            "events": {"m.room.power_levels": 100},
        }

    def send(self, etype: str, sender: str, content: Any, state_key: str | None = None, *,
             on: dict[StateKey, str] | None = None, eid: str | None = None, depth: int | None = None,
             room_id: str | None = None) -> str:
        """Adds an event whose auth events come from ``on`` (default: the room's main state)."""
        state = self.state if on is None else on
        self.depth += 1
        event_id = eid or f"$ev{len(self.events)}:a.test"
        keys: list[StateKey] = [("m.room.create", ""), PL, member(sender)]
        if etype == "m.room.member" and state_key is not None:
            keys.append(member(state_key))
            if isinstance(content, dict) and content.get("membership") in ("join", "invite"):
                keys.append(JR)
        auth = list(dict.fromkeys(state[k] for k in keys if k in state))
        pdu: dict[str, Any] = {
            "event_id": event_id,
            "type": etype,
            "sender": sender,
            "content": content,
            "room_id": room_id or self.room_id,
            "prev_events": [["$prev", {"sha256": "x"}]],
            "auth_events": [[a, {"sha256": "x"}] for a in auth],
            "depth": self.depth if depth is None else depth,
            "origin_server_ts": 1000 + self.depth,
            "hashes": {"sha256": "x"},
            "signatures": {},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        assert event_id not in self.events, event_id
        ev = Event(pdu, RV, event_id)
        self.events[event_id] = ev
        if state_key is not None:
            state[(etype, state_key)] = event_id
        return event_id

    def fork(self) -> dict[StateKey, str]:
        return dict(self.state)

    def resolve(self, *state_sets: Mapping[StateKey, str], **kwargs: Any) -> dict[StateKey, str]:
        return resolve(RV, list(state_sets), self.events, **kwargs)


@pytest.fixture
def room() -> Room:
    return Room()


# --- separation ----------------------------------------------------------------------------------


def test_key_missing_from_one_state_is_not_a_conflict(room: Room) -> None:
    """v1 defines a conflict as different event IDs for one key: a key only some states hold is
    part of the unconflicted union (unlike v2)."""
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$topic")
    unconflicted, conflicted = state_v1.separate([a, b])
    assert unconflicted[TOPIC] == "$topic"
    assert conflicted == {}
    assert room.resolve(a, b)[TOPIC] == "$topic"


def test_no_conflict_returns_union_without_loading_events() -> None:
    """Without conflicts nothing is checked, so no events are needed."""
    a = {TOPIC: "$t", PL: "$p"}
    b = {TOPIC: "$t", NAME: "$n"}
    assert resolve(RV, [a, b], {}) == {TOPIC: "$t", PL: "$p", NAME: "$n"}
    assert resolve(RV, [a], {}) == a
    assert resolve(RV, [], {}) == {}
    assert prepare_v1([a, b]).needed_event_ids() == frozenset()


def test_separate_collects_every_conflicting_id() -> None:
    _, conflicted = state_v1.separate([{TOPIC: "$a"}, {TOPIC: "$b"}, {TOPIC: "$a"}, {TOPIC: "$c"}])
    assert conflicted == {TOPIC: frozenset({"$a", "$b", "$c"})}


# --- ordering -----------------------------------------------------------------------------------


def test_conflict_order_is_ascending_depth_then_descending_sha1(room: Room) -> None:
    """The list is sorted by ascending depth, then descending sha1(event_id)."""
    ids = [room.send("m.room.topic", BOB, {"topic": str(i)}, "", depth=7, eid=f"$t{i}:a.test") for i in range(6)]
    low = room.send("m.room.topic", BOB, {"topic": "low"}, "", depth=3, eid="$low:a.test")
    ordered = [ev.event_id for ev in state_v1.conflict_order(room.events[i] for i in [*ids, low])]
    assert ordered[0] == low
    assert ordered[1:] == sorted(ids, key=sha1, reverse=True)


# --- power levels pass -----------------------------------------------------------------------------


def test_power_levels_later_allowed_event_wins(room: Room) -> None:
    """The lowest-depth PL is added first; the next one replaces it when allowed in R."""
    a, b = room.fork(), room.fork()
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 60}), "", on=a, eid="$pl_a", depth=20)
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 70}), "", on=b, eid="$pl_b", depth=10)
    assert room.resolve(a, b)[PL] == "$pl_a"
    assert room.resolve(b, a)[PL] == "$pl_a"


def test_power_levels_pass_stops_at_first_disallowed_event(room: Room) -> None:
    """p2 (Bob may not change power levels) fails, so the pass stops: p3 is never considered
    even though it would be allowed."""
    a, b, c = room.fork(), room.fork(), room.fork()
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 40}), "", on=a, eid="$p1", depth=10)
    room.send("m.room.power_levels", BOB, room.pl_content({BOB: 50, DAVE: 1}), "", on=b, eid="$p2", depth=11)
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 30}), "", on=c, eid="$p3", depth=12)
    assert room.resolve(a, b, c)[PL] == "$p1"


def test_first_power_levels_event_is_taken_unchecked(room: Room) -> None:
    """The first event of the list goes into R without an auth check."""
    a, b = room.fork(), room.fork()
    room.send("m.room.power_levels", BOB, room.pl_content({BOB: 100}), "", on=a, eid="$bob_pl", depth=2)
    room.send("m.room.power_levels", BOB, room.pl_content({BOB: 99}), "", on=b, eid="$bob_pl2", depth=3)
    # $bob_pl gives Bob 100, so $bob_pl2 is allowed on top of it.
    assert room.resolve(a, b)[PL] == "$bob_pl2"


def test_equal_depth_ties_broken_by_descending_sha1(room: Room) -> None:
    """At equal depth the larger sha1 comes first, so the smaller sha1 is applied last and wins."""
    a, b = room.fork(), room.fork()
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 60}), "", on=a, eid="$x1:a.test", depth=9)
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 70}), "", on=b, eid="$x2:a.test", depth=9)
    expected = min(["$x1:a.test", "$x2:a.test"], key=sha1)
    assert room.resolve(a, b)[PL] == expected
    assert room.resolve(b, a)[PL] == expected


# --- join rules and members use the resolved power levels ---------------------------------------


def _demote_vs(room: Room, demote: bool) -> tuple[dict[StateKey, str], dict[StateKey, str]]:
    a, b = room.fork(), room.fork()
    levels = {BOB: 0} if demote else {BOB: 50, DAVE: 5}
    room.send("m.room.power_levels", ALICE, room.pl_content(levels), "", on=a, eid="$pl2", depth=10)
    return a, b


@pytest.mark.parametrize("demote", [True, False])
def test_join_rules_checked_against_resolved_power_levels(room: Room, demote: bool) -> None:
    """Bob's join-rules change is allowed only if the resolved power levels keep him at 50."""
    a, b = _demote_vs(room, demote)
    room.send("m.room.join_rules", BOB, {"join_rule": "invite"}, "", on=b, eid="$jr_bob", depth=11)
    result = room.resolve(a, b)
    assert result[PL] == "$pl2"
    assert result[JR] == ("$jr1" if demote else "$jr_bob")


@pytest.mark.parametrize("demote", [True, False])
def test_ban_checked_against_resolved_power_levels(room: Room, demote: bool) -> None:
    """Bob's ban of Carol stands only if the resolved power levels keep him at the ban level."""
    a, b = _demote_vs(room, demote)
    room.send("m.room.member", BOB, {"membership": "ban"}, CAROL, on=b, eid="$ban", depth=11)
    assert room.resolve(a, b)[member(CAROL)] == ("$carol_join" if demote else "$ban")


def test_join_checked_against_resolved_join_rules(room: Room) -> None:
    """Dave's join as the room went invite-only: the join rules pass runs first, so it fails and
    Dave's key keeps its first event (here his earlier leave)."""
    base = room.fork()
    room.send("m.room.member", DAVE, {"membership": "join"}, DAVE, on=base, eid="$dave_join1", depth=5)
    room.send("m.room.member", DAVE, {"membership": "leave"}, DAVE, on=base, eid="$dave_leave", depth=6)
    a, b = dict(base), dict(base)
    room.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, "", on=a, eid="$jr_inv", depth=7)
    room.send("m.room.member", DAVE, {"membership": "join"}, DAVE, on=b, eid="$dave_join2", depth=8)
    result = room.resolve(a, b)
    assert result[JR] == "$jr_inv"
    assert result[member(DAVE)] == "$dave_leave"


def test_member_keys_do_not_see_each_other(room: Room) -> None:
    """Each membership key is checked against R as the pass began (where conflicted keys are
    absent), so Bob's kick of Carol fails although Bob's own conflicted key resolves to a join;
    the outcome is the same whichever key is visited first."""
    a, b = room.fork(), room.fork()
    room.send("m.room.member", BOB, {"membership": "join", "displayname": "B"}, BOB, on=a, eid="$bob_nick", depth=10)
    room.send("m.room.member", BOB, {"membership": "leave"}, CAROL, on=b, eid="$kick", depth=11)
    result = room.resolve(a, b)
    assert result[member(BOB)] == "$bob_nick"
    assert result[member(CAROL)] == "$carol_join"


# --- other conflicts ----------------------------------------------------------------------------


@pytest.mark.parametrize("demote", [True, False])
def test_other_conflict_takes_highest_depth_that_passes(room: Room, demote: bool) -> None:
    """Bob's deeper topic wins unless the resolved power levels forbid it; then Alice's does."""
    a, b = _demote_vs(room, demote)
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=b, eid="$topic_bob", depth=12)
    room.send("m.room.topic", ALICE, {"topic": "B"}, "", on=a, eid="$topic_alice", depth=11)
    assert room.resolve(a, b)[TOPIC] == ("$topic_alice" if demote else "$topic_bob")


def test_other_conflict_uses_resolved_memberships(room: Room) -> None:
    """Bob's topic fails once his resolved membership is a ban."""
    a, b = room.fork(), room.fork()
    room.send("m.room.member", ALICE, {"membership": "ban"}, BOB, on=a, eid="$ban_bob", depth=10)
    room.send("m.room.topic", ALICE, {"topic": "B"}, "", on=a, eid="$topic_alice", depth=11)
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=b, eid="$topic_bob", depth=12)
    result = room.resolve(a, b)
    assert result[member(BOB)] == "$ban_bob"
    assert result[TOPIC] == "$topic_alice"


def test_other_conflict_equal_depth_prefers_lowest_sha1(room: Room) -> None:
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$ta:a.test", depth=9)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$tb:a.test", depth=9)
    expected = min(["$ta:a.test", "$tb:a.test"], key=sha1)
    assert room.resolve(a, b)[TOPIC] == expected
    assert room.resolve(b, a)[TOPIC] == expected


def test_other_conflict_where_nothing_passes_keeps_lowest_ordered(room: Room) -> None:
    """No event passes: the least-deep one is kept (as deployed servers do; the text is silent)."""
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", DAVE, {"topic": "A"}, "", on=a, eid="$t_shallow", depth=5)
    room.send("m.room.topic", DAVE, {"topic": "B"}, "", on=b, eid="$t_deep", depth=9)
    assert room.resolve(a, b)[TOPIC] == "$t_shallow"


# --- checker, rejections, dispatch ----------------------------------------------------------------


def test_checker_sees_only_r_at_auth_keys(room: Room) -> None:
    """The checker receives R's events at the auth keys, not the event's own auth events."""
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$t1", depth=5)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$t2", depth=6)
    seen: list[dict[StateKey, str]] = []

    def checker(ev: Event, auth_state: Mapping[StateKey, Event], rv: RoomVersion) -> None:
        seen.append({k: e.event_id for k, e in auth_state.items()})
        raise AuthError("no")

    room.resolve(a, b, auth_checker=checker)
    assert seen[0] == {("m.room.create", ""): "$create", PL: "$pl1", member(BOB): "$bob_join"}


def test_rejected_state_event_is_not_consulted(room: Room) -> None:
    """A rejected unconflicted event is left out of the auth state given to the checker."""
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$t1", depth=5)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$t2", depth=6)
    assert room.resolve(a, b)[TOPIC] == "$t2"
    # Bob's join rejected: Bob is not a member, so both topics fail and the fallback applies.
    assert room.resolve(a, b, rejected_event_ids={"$bob_join"})[TOPIC] == "$t1"


def test_package_resolve_dispatches_v1(room: Room) -> None:
    """sc_proto.state.resolve no longer refuses room v1; it runs the v1 algorithm."""
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$t1", depth=5)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$t2", depth=6)
    assert resolve(RV, [a, b], room.events) == state_v1.resolve(RV, [a, b], room.events)
    assert resolve(RV, [a, b], room.events)[TOPIC] == "$t2"


# --- the preparation loop ------------------------------------------------------------------------


def _load_loop(prep: Any, events: Mapping[str, Event]) -> list[frozenset[str]]:
    rounds = []
    while ids := prep.needed_event_ids():
        rounds.append(ids)
        prep.add_events(events[i] for i in ids if i in events)
    return rounds


def test_prepare_v1_asks_for_conflicts_then_their_auth_state(room: Room) -> None:
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$t1", depth=5)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$t2", depth=6)
    prep = prepare_v1([a, b])
    assert isinstance(prep, StateResPrepV1)
    assert prep.conflicted_event_ids == {"$t1", "$t2"}
    rounds = _load_loop(prep, room.events)
    assert rounds == [frozenset({"$t1", "$t2"}), frozenset({"$create", "$pl1", "$bob_join"})]
    assert prep.is_complete
    assert prep.resolve(RV) == room.resolve(a, b)
    assert "$carol_join" not in prep.events_by_id


def test_v2_prepare_gathers_enough_for_v1(room: Room) -> None:
    """The generic prep asks for more than v1 needs, but its events resolve a v1 room the same."""
    a, b = room.fork(), room.fork()
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 0}), "", on=a, eid="$pl2", depth=10)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$t2", depth=11)
    prep = prepare([a, b])
    _load_loop(prep, room.events)
    assert prep.resolve(RV) == room.resolve(a, b)


# --- bad inputs ---------------------------------------------------------------------------------


def test_missing_conflicting_event_is_reported() -> None:
    with pytest.raises(MissingEventsError) as info:
        resolve(RV, [{TOPIC: "$x"}, {TOPIC: "$y"}], {})
    assert info.value.event_ids == {"$x", "$y"}
    assert isinstance(info.value, LocalProtocolError)


def test_missing_auth_state_event_is_reported(room: Room) -> None:
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$t1", depth=5)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$t2", depth=6)
    events = {k: v for k, v in room.events.items() if k != "$pl1"}
    with pytest.raises(MissingEventsError) as info:
        resolve(RV, [a, b], events)
    assert info.value.event_ids == {"$pl1"}


def test_event_under_wrong_key_is_refused(room: Room) -> None:
    a, b = room.fork(), room.fork()
    b[TOPIC] = "$pl1"
    a[TOPIC] = room.send("m.room.topic", BOB, {"topic": "A"}, "", on=room.fork(), depth=5)
    with pytest.raises(InconsistentStateInputError):
        room.resolve(a, b)


def test_events_of_two_rooms_are_refused(room: Room) -> None:
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$t1", depth=5)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$t2", depth=6, room_id="!other:a.test")
    with pytest.raises(InconsistentStateInputError):
        room.resolve(a, b)


@pytest.mark.parametrize("content", ["garbage", {"users": "x", "users_default": []}, None])
def test_malformed_power_levels_do_not_crash(room: Room, content: Any) -> None:
    """A PL event with garbage content fails auth (the checker's job); the pass stops there."""
    a, b = room.fork(), room.fork()
    room.send("m.room.power_levels", ALICE, content, "", on=b, eid="$bad_pl", depth=50)
    assert room.resolve(a, b)[PL] == "$pl1"


@pytest.mark.parametrize("depth", ["soon", None, 1.5, True, -3])
def test_garbage_depth_sorts_as_zero_not_crash(room: Room, depth: Any) -> None:
    """A non-integer depth counts as 0 (the model's reading), so the event sorts first."""
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$t1", depth=5)
    tid = room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$t2", depth=0)
    room.events[tid].pdu["depth"] = depth  # type: ignore[index]  # test mutates the PDU
    expected = "$t2" if isinstance(depth, int) and not isinstance(depth, bool) and depth > 5 else "$t1"
    assert room.resolve(a, b)[TOPIC] == expected


def test_non_ascii_event_ids_do_not_crash(room: Room) -> None:
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$é\ud800:a.test", depth=5)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$ü:a.test", depth=5)
    assert room.resolve(a, b)[TOPIC] in {"$é\ud800:a.test", "$ü:a.test"}


# --- properties ---------------------------------------------------------------------------------

_USERS = [ALICE, BOB, CAROL, DAVE]


def _random_forks(seed: int) -> tuple[Room, list[dict[StateKey, str]]]:
    """A room with 2-4 forks, each adding a few random state events at random depths."""
    rng = random.Random(seed)
    room = Room(bob_level=rng.choice([0, 50, 100]))
    forks = []
    for _ in range(rng.randint(2, 4)):
        fork = room.fork()
        for _ in range(rng.randint(1, 4)):
            sender, target = rng.choice(_USERS), rng.choice(_USERS)
            depth = rng.randint(5, 9)
            kind = rng.randrange(5)
            if kind == 0:
                levels = {u: rng.choice([0, 50, 100]) for u in rng.sample(_USERS[1:], 2)}
                room.send("m.room.power_levels", sender, room.pl_content(levels), "", on=fork, depth=depth)
            elif kind == 1:
                rule = rng.choice(["public", "invite"])
                room.send("m.room.join_rules", sender, {"join_rule": rule}, "", on=fork, depth=depth)
            elif kind == 2:
                membership = rng.choice(["join", "leave", "ban", "invite"])
                room.send("m.room.member", sender, {"membership": membership}, target, on=fork, depth=depth)
            else:
                room.send("m.room.topic", sender, {"topic": str(depth)}, "", on=fork, depth=depth)
        forks.append(fork)
    return room, forks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), shuffle=st.integers(0, 10**6))
def test_result_is_independent_of_input_order(seed: int, shuffle: int) -> None:
    """Permuting the state sets, their items and the events map never changes the result; every
    key of the union is kept and takes one of its candidate IDs."""
    room, forks = _random_forks(seed)
    expected = room.resolve(*forks)
    rng = random.Random(shuffle)
    perm = [dict(rng.sample(list(f.items()), len(f))) for f in rng.sample(forks, len(forks))]
    events = dict(rng.sample(list(room.events.items()), len(room.events)))
    assert resolve(RV, perm, events) == expected
    assert set(expected) == {k for f in forks for k in f}
    for key, value in expected.items():
        assert value in {f[key] for f in forks if key in f}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_resolving_a_state_with_itself_is_identity(seed: int) -> None:
    room, forks = _random_forks(seed)
    assert room.resolve(forks[0], dict(forks[0])) == forks[0]
    resolved = room.resolve(*forks)
    assert room.resolve(resolved, resolved) == resolved
