"""Tests for sc_proto.state.v2: state resolution v2 (rooms v2-v11) and v2.1 (room v12).

Scenarios are written from the prose of ``rooms/v2.md`` and ``rooms/v12.md`` and run with the real
authorization rules (:func:`sc_proto.auth.rules.check_auth`) unless a test injects its own checker.
Events are built directly with ``Event(pdu, room_version, event_id)``; IDs are readable names.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sc_proto.auth.rules import check_auth
from sc_proto.errors import AuthError
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import EventFormat, RoomVersion, RoomVersions
from sc_proto.state import (
    InconsistentStateInputError,
    MissingEventsError,
    full_conflicted_set,
    is_power_event,
    prepare,
    resolve,
)
from sc_proto.state.v2 import _Resolver

ALICE = "@alice:a.test"  # creator
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
DAVE = "@dave:d.test"

PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")
TOPIC = ("m.room.topic", "")
CREATE = ("m.room.create", "")

V2_VERSIONS = [RoomVersions.V2, RoomVersions.V6, RoomVersions.V11]
ALL_VERSIONS = [*V2_VERSIONS, RoomVersions.V12]


def member(user: str) -> StateKey:
    return ("m.room.member", user)


class Room:
    """Builds a room's events by hand: each event's auth events are selected from a given state."""

    def __init__(self, room_version: RoomVersion, *, bob_level: int = 50) -> None:
        self.rv = room_version
        self.events: dict[str, Event] = {}
        self.ts = 1000
        self.room_id = "!room:a.test"
        self.state: dict[StateKey, str] = {}
        create_content: dict[str, Any] = {"room_version": room_version.identifier}
        if not room_version.implicit_room_creator:
            create_content["creator"] = ALICE
        create_pdu: dict[str, Any] = {
            "type": "m.room.create",
            "state_key": "",
            "sender": ALICE,
            "content": create_content,
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
            "origin_server_ts": self.ts,
        }
        create_id = "$create"
        if room_version.room_id_from_create_event:
            self.room_id = "!" + create_id[1:]
        else:
            create_pdu["room_id"] = self.room_id
        self._store(Event(create_pdu, room_version, create_id), self.state)
        self.send("m.room.member", ALICE, {"membership": "join"}, ALICE, eid="$alice_join", prev=["$create"])
        self.send("m.room.power_levels", ALICE, self.pl_content({BOB: bob_level}), "", eid="$pl1")
        self.send("m.room.join_rules", ALICE, {"join_rule": "public"}, "", eid="$jr1")
        for user in (BOB, CAROL):
            self.send("m.room.member", user, {"membership": "join"}, user, eid=f"${user[1:].split(':')[0]}_join")

    def pl_content(self, users: Mapping[str, int], **extra: Any) -> dict[str, Any]:
        """Power levels content: Alice at 100 except in v12 (creators are not listed)."""
        all_users = dict(users)
        if not self.rv.privileged_creators:
            all_users.setdefault(ALICE, 100)
        content: dict[str, Any] = {
            "users": all_users,
            "users_default": 0,
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "invite": 0,
            "redact": 50,
            "events": {"m.room.power_levels": 100},
        }
        content.update(extra)
        return content

    def auth_ids(self, etype: str, sender: str, content: Mapping[str, Any], state_key: str | None,
                 on: Mapping[StateKey, str]) -> list[str]:
        keys: list[StateKey] = [PL, member(sender)]
        if self.rv.create_event_in_auth_events:
            keys.insert(0, CREATE)
        if etype == "m.room.member" and state_key is not None:
            keys.append(member(state_key))
            if content.get("membership") in ("join", "invite", "knock"):
                keys.append(JR)
        return list(dict.fromkeys(on[k] for k in keys if k in on))

    def _store(self, ev: Event, on: dict[StateKey, str]) -> Event:
        assert ev.event_id not in self.events, ev.event_id
        self.events[ev.event_id] = ev
        if ev.state_key is not None:
            on[ev.state_tuple] = ev.event_id
        return ev

    def send(self, etype: str, sender: str, content: Mapping[str, Any], state_key: str | None = None, *,
             on: dict[StateKey, str] | None = None, eid: str | None = None, ts: int | None = None,
             auth: list[str] | None = None, prev: list[str] | None = None) -> str:
        """Adds an event whose auth events come from ``on`` (default: the room's main state)."""
        state = self.state if on is None else on
        self.ts += 1
        pdu: dict[str, Any] = {
            "type": etype,
            "sender": sender,
            "content": dict(content),
            "room_id": self.room_id,
            "prev_events": prev if prev is not None else ["$prev"],
            "auth_events": auth if auth is not None else self.auth_ids(etype, sender, content, state_key, state),
            "depth": 2,
            "origin_server_ts": self.ts if ts is None else ts,
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.rv.event_format is EventFormat.V1:
            for field in ("prev_events", "auth_events"):
                pdu[field] = [[ref, {"sha256": "x"}] for ref in pdu[field]]
        event_id = eid or f"$ev{len(self.events)}"
        self._store(Event(pdu, self.rv, event_id), state)
        return event_id

    def fork(self) -> dict[StateKey, str]:
        return dict(self.state)

    def resolve(self, *state_sets: Mapping[StateKey, str], **kwargs: Any) -> dict[StateKey, str]:
        return resolve(self.rv, list(state_sets), self.events, **kwargs)


@pytest.fixture(params=ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
def room(request: pytest.FixtureRequest) -> Room:
    rv: RoomVersion = request.param
    return Room(rv)


# --- scenarios (real check_auth) ------------------------------------------------------------------



def test_ban_vs_simultaneous_demotion(room: Room) -> None:
    """A moderator's ban racing their own demotion: the higher-powered demotion sorts first, so the
    ban is re-checked under it and dropped."""
    a, b = room.fork(), room.fork()
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 0}), "", on=a, eid="$demote", ts=5000)
    room.send("m.room.member", BOB, {"membership": "ban"}, CAROL, on=b, eid="$ban", ts=10)
    result = room.resolve(a, b)
    assert result[PL] == "$demote"
    assert result[member(CAROL)] == "$carol_join"


def test_ban_by_admin_survives_when_not_demoted(room: Room) -> None:
    """Control for the previous test: with an unrelated power-level change the ban stands."""
    a, b = room.fork(), room.fork()
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 50, DAVE: 10}), "", on=a, eid="$pl2")
    room.send("m.room.member", BOB, {"membership": "ban"}, CAROL, on=b, eid="$ban")
    result = room.resolve(a, b)
    assert result[PL] == "$pl2"
    assert result[member(CAROL)] == "$ban"


def test_join_rule_change_racing_a_join(room: Room) -> None:
    """The room goes invite-only on one branch while Dave joins (as public) on the other: the join
    rules are a power event, applied first, so the join fails and Dave is not in the room."""
    a, b = room.fork(), room.fork()
    room.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, "", on=a, eid="$jr_invite", ts=9000)
    room.send("m.room.member", DAVE, {"membership": "join"}, DAVE, on=b, eid="$dave_join", ts=1)
    result = room.resolve(a, b)
    assert result[JR] == "$jr_invite"
    assert member(DAVE) not in result


def test_conflicting_topics_resolved_by_mainline(room: Room) -> None:
    """A topic authorised by the newer power levels beats one based on an older mainline entry,
    even though the older-based one has the later timestamp."""
    a, b = room.fork(), room.fork()
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 50, DAVE: 5}), "", on=a, eid="$pl2")
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$topic_a", ts=100)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$topic_b", ts=99999)
    result = room.resolve(a, b)
    assert result[PL] == "$pl2"
    assert result[TOPIC] == "$topic_a"


def test_topics_on_same_mainline_resolved_by_timestamp(room: Room) -> None:
    """Same mainline position: the later timestamp is applied last and wins."""
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$zzz_topic", ts=100)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$aaa_topic", ts=200)
    assert room.resolve(a, b)[TOPIC] == "$aaa_topic"


def test_topics_with_equal_timestamps_resolved_by_event_id(room: Room) -> None:
    """Same mainline position and timestamp: the larger event ID is applied last and wins."""
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$topic_2", ts=100)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$topic_1", ts=100)
    assert room.resolve(a, b)[TOPIC] == "$topic_2"
    assert room.resolve(b, a)[TOPIC] == "$topic_2"


def test_power_ties_broken_by_timestamp_then_event_id(room: Room) -> None:
    """Two join-rule changes by the same sender: the earlier one is applied first, so the later
    one wins; with equal timestamps the larger event ID wins."""
    a, b = room.fork(), room.fork()
    room.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, "", on=a, eid="$jr_x", ts=300)
    room.send("m.room.join_rules", ALICE, {"join_rule": "knock"}, "", on=b, eid="$jr_y", ts=200)
    assert room.resolve(a, b)[JR] == "$jr_x"
    c, d = room.fork(), room.fork()
    room.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, "", on=c, eid="$jr_m", ts=500)
    room.send("m.room.join_rules", ALICE, {"join_rule": "knock"}, "", on=d, eid="$jr_n", ts=500)
    assert room.resolve(c, d)[JR] == "$jr_n"


def test_higher_sender_power_sorts_first() -> None:
    """Power ordering puts the higher-powered sender first regardless of timestamps, so the lower
    powered (later-applied) change wins when both are allowed."""
    room = Room(RoomVersions.V11, bob_level=50)
    a, b = room.fork(), room.fork()
    room.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, "", on=a, eid="$jr_alice", ts=900)
    room.send("m.room.join_rules", BOB, {"join_rule": "knock"}, "", on=b, eid="$jr_bob", ts=100)
    assert room.resolve(a, b)[JR] == "$jr_bob"


def test_v12_creator_has_infinite_power_in_ordering() -> None:
    """In v12 the creator outranks a user at 100 when ordering power events."""
    room = Room(RoomVersions.V12, bob_level=100)
    a, b = room.fork(), room.fork()
    room.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, "", on=a, eid="$jr_alice", ts=900)
    room.send("m.room.join_rules", BOB, {"join_rule": "knock"}, "", on=b, eid="$jr_bob", ts=100)
    assert room.resolve(a, b)[JR] == "$jr_bob"
    r = _Resolver(room.rv, room.events, check_auth, frozenset())
    r.find_room_create(["$jr_alice"])
    assert r.sender_power(room.events["$jr_alice"]) == float("inf")
    assert r.sender_power(room.events["$jr_bob"]) == 100


def test_unauthorised_event_dropped(room: Room) -> None:
    """Carol (power 0) cannot set the topic (state_default 50): her conflicted topic fails the
    iterative auth checks and the other branch's topic is kept."""
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "ok"}, "", on=a, eid="$topic_bob", ts=10)
    room.send("m.room.topic", CAROL, {"topic": "nope"}, "", on=b, eid="$topic_carol", ts=20)
    assert room.resolve(a, b)[TOPIC] == "$topic_bob"


def test_rejected_auth_event_not_used(room: Room) -> None:
    """An auth event the host rejected is not used: Bob's topic relied on a promotion ($pl_up)
    that is marked rejected and absent from the states, so the topic cannot pass."""
    a, b = room.fork(), room.fork()
    low = room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 0}), "", eid="$pl_low")
    a[PL] = b[PL] = low
    up = room.fork()
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 50}), "", on=up, eid="$pl_up")
    room.send("m.room.topic", BOB, {"topic": "x"}, "", on=up, eid="$topic_bob")
    b[TOPIC] = "$topic_bob"
    assert room.resolve(a, b)[TOPIC] == "$topic_bob"
    assert TOPIC not in room.resolve(a, b, rejected_event_ids={"$pl_up"})


def test_unconflicted_state_kept(room: Room) -> None:
    """Unconflicted entries are in the result, and override whatever the conflicted resolution
    re-applied under the same key: $pl2 is in the auth difference (only A's topic cites it) and
    passes the iterative checks, but both states hold $pl3, which wins."""
    a, b = room.fork(), room.fork()
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 60}), "", on=a, eid="$pl2")
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$topic_a")
    room.send("m.room.name", BOB, {"name": "B"}, "", on=b, eid="$name_b")
    alice_auth = [i for i in ("$create", "$alice_join", "$pl1") if room.rv.create_event_in_auth_events or i != "$create"]
    pl3 = room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 70}), "", on=b, eid="$pl3", auth=alice_auth)
    a[PL] = pl3
    assert "$pl2" in full_conflicted_set(room.rv, [a, b], room.events)
    result = room.resolve(a, b)
    assert result[PL] == "$pl3"
    assert result[TOPIC] == "$topic_a"
    assert result[("m.room.name", "")] == "$name_b"
    assert result[member(ALICE)] == "$alice_join"
    assert result[CREATE] == "$create"


def test_no_conflict_returns_unconflicted_without_events() -> None:
    """Identical states resolve to themselves without needing any event."""
    s = {CREATE: "$c", PL: "$p"}
    assert resolve(RoomVersions.V11, [s, dict(s)], {}) == s
    assert resolve(RoomVersions.V11, [s], {}) == s
    assert resolve(RoomVersions.V11, [], {}) == {}


# --- v2.1 (room v12) --------------------------------------------------------------------------------


def _empty_start_scenario(rv: RoomVersion) -> tuple[Room, dict[StateKey, str], dict[StateKey, str]]:
    """Bob's ban of Carol was authorised by the old power levels; both states already hold the
    demotion of Bob (unconflicted). v2 checks the ban against the demotion (unconflicted start) and
    drops it; v2.1 starts from an empty state, so the ban is checked against its own auth events."""
    room = Room(rv)
    a, b = room.fork(), room.fork()
    room.send("m.room.member", BOB, {"membership": "ban"}, CAROL, on=b, eid="$ban")
    demote = room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 0}), "", eid="$demote")
    a[PL] = b[PL] = demote
    return room, a, b


def test_v2_starts_from_unconflicted_state() -> None:
    room, a, b = _empty_start_scenario(RoomVersions.V11)
    assert room.resolve(a, b)[member(CAROL)] == "$carol_join"


def test_v2_1_starts_from_empty_state() -> None:
    room, a, b = _empty_start_scenario(RoomVersions.V12)
    result = room.resolve(a, b)
    assert result[member(CAROL)] == "$ban"
    assert result[PL] == "$demote"


def _subgraph_scenario(rv: RoomVersion) -> tuple[Room, dict[StateKey, str], dict[StateKey, str]]:
    """A state reset: state A has $pl3 (by Bob, needing the promotion in $pl2), state B still has
    $pl1 though its topic cites $pl2. $pl2 is in both auth chains, so only the v2.1 conflicted
    subgraph ($pl3 -> $pl2 -> $pl1) brings it back into the resolution."""
    room = Room(rv)
    a = room.fork()
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 100}), "", on=a, eid="$pl2")
    room.send("m.room.topic", BOB, {"topic": "t"}, "", on=a, eid="$topic")
    b = dict(a)
    b[PL] = "$pl1"
    room.send("m.room.power_levels", BOB, room.pl_content({BOB: 100, CAROL: 50}), "", on=a, eid="$pl3")
    return room, a, b


def test_conflicted_subgraph_only_in_v2_1() -> None:
    room11, a, b = _subgraph_scenario(RoomVersions.V11)
    assert "$pl2" not in full_conflicted_set(room11.rv, [a, b], room11.events)
    assert room11.resolve(a, b)[PL] == "$pl1"
    room12, a, b = _subgraph_scenario(RoomVersions.V12)
    assert "$pl2" in full_conflicted_set(room12.rv, [a, b], room12.events)
    assert room12.resolve(a, b)[PL] == "$pl3"


def test_v12_checker_receives_create_event() -> None:
    """The create event is not an auth event in v12; the resolver adds it from the room ID."""
    room = Room(RoomVersions.V12)
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b)
    seen: list[Mapping[StateKey, Event]] = []

    def checker(ev: Event, auth_state: Mapping[StateKey, Event], rv: RoomVersion) -> None:
        seen.append(auth_state)

    room.resolve(a, b, auth_checker=checker)
    assert seen and all(s[CREATE].event_id == "$create" for s in seen)
    assert "$create" not in room.events["$pl1"].auth_event_ids


def test_v12_missing_create_event_is_reported() -> None:
    room = Room(RoomVersions.V12)
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b)
    for s in (a, b):
        del s[CREATE]
    events = {k: v for k, v in room.events.items() if k != "$create"}
    with pytest.raises(MissingEventsError) as e:
        resolve(room.rv, [a, b], events, auth_checker=lambda *_: None)
    assert "$create" in e.value.event_ids


# --- injected checkers --------------------------------------------------------------------------------


def test_injected_checker_is_used(room: Room) -> None:
    """A checker that rejects everything leaves only the unconflicted state (plus, in v2, the
    unconflicted base)."""
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b)

    def reject(ev: Event, auth_state: Mapping[StateKey, Event], rv: RoomVersion) -> None:
        raise AuthError("no")

    result = room.resolve(a, b, auth_checker=reject)
    assert TOPIC not in result
    assert result[PL] == "$pl1"


def test_default_checker_is_check_auth(room: Room) -> None:
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", CAROL, {"topic": "nope"}, "", on=b)
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a)
    assert room.resolve(a, b) == room.resolve(a, b, auth_checker=check_auth)


# --- power events, ordering internals ---------------------------------------------------------------------


def test_is_power_event() -> None:
    room = Room(RoomVersions.V11)
    kick = room.send("m.room.member", BOB, {"membership": "leave"}, CAROL, on=room.fork())
    own_leave = room.send("m.room.member", CAROL, {"membership": "leave"}, CAROL, on=room.fork())
    topic = room.send("m.room.topic", BOB, {"topic": "t"}, "", on=room.fork())
    message = room.send("m.room.message", BOB, {"body": "hi"}, None, on=room.fork())
    ev = room.events
    assert is_power_event(ev["$pl1"]) and is_power_event(ev["$jr1"]) and is_power_event(ev[kick])
    assert not any(is_power_event(ev[e]) for e in (own_leave, topic, message, "$create", "$bob_join"))


def test_power_sort_respects_paths_through_unselected_events() -> None:
    """Ordering is by the auth DAG even when the path between two selected events passes through
    an unselected one: $late cites $mid which cites $early, so $early comes first despite sorting
    after $late on every tie-break."""
    room = Room(RoomVersions.V11)
    s = room.fork()
    room.send("m.room.join_rules", BOB, {"join_rule": "invite"}, "", on=s, eid="$early", ts=9000)
    room.send("m.room.member", ALICE, {"membership": "join", "displayname": "A"}, ALICE, on=s, eid="$mid")
    room.send("m.room.join_rules", ALICE, {"join_rule": "public"}, "", on=s, eid="$late", ts=1)
    r = _Resolver(room.rv, room.events, check_auth, frozenset())
    assert "$early" not in room.events["$late"].auth_event_ids
    assert "$mid" in room.events["$late"].auth_event_ids
    assert r.power_sort({"$early", "$late"}) == ["$early", "$late"]


def test_auth_chain_of_power_events_is_sorted_with_them(room: Room) -> None:
    """Dave's rejoin ($dave_rejoin, not a power event) is in the auth chain of his join-rule change,
    so it is ordered and checked with the power events: after Alice's kick, before the join-rule
    change, which therefore sees Dave joined and stands. Leaving the rejoin to the mainline phase
    would drop the join-rule change."""
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 50, DAVE: 50}), "", eid="$pl2")
    room.send("m.room.member", DAVE, {"membership": "join"}, DAVE, eid="$dave_join")
    a, b = room.fork(), room.fork()
    room.send("m.room.member", ALICE, {"membership": "leave"}, DAVE, on=a, eid="$kick")
    room.send("m.room.member", DAVE, {"membership": "join", "displayname": "D"}, DAVE, on=b, eid="$dave_rejoin")
    room.send("m.room.join_rules", DAVE, {"join_rule": "invite"}, "", on=b, eid="$jr_dave")
    result = room.resolve(a, b)
    assert result[member(DAVE)] == "$dave_rejoin"
    assert result[JR] == "$jr_dave"


def test_power_sort_survives_auth_cycles() -> None:
    """Room v2 event IDs are free-form, so a peer can forge an auth cycle; the events in it are
    still ordered (by the tie-break alone) and the resolution terminates."""
    room = Room(RoomVersions.V2)
    base = ["$create", "$pl1", "$alice_join"]
    room.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, "", eid="$cyc_a", ts=5, auth=[*base, "$cyc_b"])
    room.send("m.room.join_rules", ALICE, {"join_rule": "knock"}, "", eid="$cyc_b", ts=3, auth=[*base, "$cyc_a"])
    r = _Resolver(room.rv, room.events, check_auth, frozenset())
    assert r.power_sort({"$cyc_a", "$cyc_b", "$jr1"}) == ["$jr1", "$cyc_b", "$cyc_a"]
    a, b = room.fork(), room.fork()
    a[JR], b[JR] = "$cyc_a", "$cyc_b"
    assert room.resolve(a, b)[JR] in {"$cyc_a", "$cyc_b", "$jr1"}


def test_mainline_sort_orders_by_position_then_ts_then_id() -> None:
    room = Room(RoomVersions.V11)
    s = room.fork()
    room.send("m.room.topic", BOB, {"topic": "1"}, "", on=s, eid="$t_old", ts=500)
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 60}), "", on=s, eid="$pl2")
    room.send("m.room.topic", BOB, {"topic": "2"}, "", on=s, eid="$t_new_b", ts=10)
    room.send("m.room.topic", BOB, {"topic": "3"}, "", on=s, eid="$t_new_a", ts=10)
    orphan = room.send("m.room.topic", BOB, {"topic": "4"}, "", on={}, eid="$t_orphan", ts=1000)
    r = _Resolver(room.rv, room.events, check_auth, frozenset())
    ids = ["$t_new_b", "$t_old", orphan, "$t_new_a"]
    assert r.mainline_sort(ids, "$pl2") == ["$t_orphan", "$t_old", "$t_new_a", "$t_new_b"]


# --- prepare: the host loop --------------------------------------------------------------------------


def test_prepare_loop_collects_auth_closure(room: Room) -> None:
    """The host loop first loads the state events, then the auth events beyond the state."""
    room.send("m.room.power_levels", ALICE, room.pl_content({BOB: 60}), "", eid="$pl2")
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a)
    room.send("m.room.member", BOB, {"membership": "ban"}, CAROL, on=b)
    prep = prepare([a, b])
    assert prep.conflicted_event_ids == {a[TOPIC], b[member(CAROL)], "$carol_join"} - {None}
    rounds = 0
    while ids := prep.needed_event_ids():
        rounds += 1
        prep.add_events(room.events[i] for i in ids)
    assert rounds == 2 and prep.is_complete
    assert {"$create", "$pl1"} <= set(prep.events_by_id)
    assert prep.resolve(room.rv) == room.resolve(a, b)


def test_prepare_without_conflict_needs_nothing() -> None:
    s = {CREATE: "$c", PL: "$p"}
    prep = prepare([s, dict(s)])
    assert prep.needed_event_ids() == frozenset() and prep.is_complete
    assert prep.unconflicted == s and prep.conflicted == {}
    assert prep.resolve(RoomVersions.V11) == s


def test_prepare_accepts_extra_events_and_stops_early(room: Room) -> None:
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b)
    prep = prepare([a, b])
    prep.add_events(room.events.values())
    prep.add_events(room.events.values())  # idempotent
    assert prep.needed_event_ids() == frozenset()


def test_prepare_keeps_asking_for_unloadable_events() -> None:
    room = Room(RoomVersions.V11)
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b)
    prep = prepare([a, b])
    prep.add_events(e for i, e in room.events.items() if i != "$pl1")
    assert prep.needed_event_ids() == {"$pl1"}
    with pytest.raises(MissingEventsError) as e:
        prep.resolve(room.rv)
    assert e.value.event_ids == {"$pl1"}


# --- bad input ---------------------------------------------------------------------------------------------


def test_missing_conflicted_events_raise_typed_error() -> None:
    with pytest.raises(MissingEventsError) as e:
        resolve(RoomVersions.V11, [{TOPIC: "$x"}, {TOPIC: "$y"}], {})
    assert e.value.event_ids == {"$x", "$y"}
    assert "$x" in str(e.value)


def test_missing_auth_chain_event_raises_typed_error(room: Room) -> None:
    a, b = room.fork(), room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b)
    events = dict(room.events)
    del events["$jr1"]
    with pytest.raises(MissingEventsError) as e:
        resolve(room.rv, [a, b], events)
    assert e.value.event_ids == {"$jr1"}


def test_event_under_wrong_key_is_rejected(room: Room) -> None:
    a, b = room.fork(), room.fork()
    b[TOPIC] = "$pl1"
    with pytest.raises(InconsistentStateInputError):
        room.resolve(a, b)


def test_events_of_other_rooms_are_rejected() -> None:
    room, other = Room(RoomVersions.V11), Room(RoomVersions.V11)
    other.room_id = "!other:a.test"
    a = room.fork()
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a)
    b = room.fork()
    other.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$foreign")
    events = {**other.events, **room.events}
    with pytest.raises(InconsistentStateInputError):
        resolve(room.rv, [a, b], events)


def test_room_v1_dispatches_to_v1_and_reports_missing_events() -> None:
    """Room v1 resolves with state resolution v1; unknown events are reported, not guessed."""
    from sc_proto.state import MissingEventsError

    with pytest.raises(MissingEventsError) as info:
        resolve(RoomVersions.V1, [{TOPIC: "$x"}, {TOPIC: "$y"}], {})
    assert {"$x", "$y"} <= set(info.value.event_ids)


def test_malformed_conflicted_event_is_dropped_not_crashing(room: Room) -> None:
    """An event with garbage content fails auth (the checker's job) and is skipped."""
    a, b = room.fork(), room.fork()
    pdu = dict(room.events["$pl1"].pdu)
    pdu.update(content="garbage", origin_server_ts="soon", sender=BOB)
    room.events["$bad_pl"] = Event(pdu, room.rv, "$bad_pl")
    b[PL] = "$bad_pl"
    assert room.resolve(a, b)[PL] == "$pl1"


def test_events_missing_type_and_sender_do_not_crash(room: Room) -> None:
    """Events built without ``type``/``sender`` (never valid PDUs) give a typed error when
    conflicted and are harmless in an auth chain, never a ``KeyError``."""
    a, b = room.fork(), room.fork()
    bare = {"room_id": room.room_id, "state_key": "", "content": {}, "auth_events": [], "prev_events": []}
    room.events["$bare"] = Event(bare, room.rv, "$bare")
    auth = [*room.events["$pl1"].auth_event_ids, "$bare"]
    room.send("m.room.topic", BOB, {"topic": "A"}, "", on=a, eid="$topic_a", auth=auth)
    room.send("m.room.topic", BOB, {"topic": "B"}, "", on=b, eid="$topic_b")
    assert room.resolve(a, b)[PL] == "$pl1"
    b[TOPIC] = "$bare"
    with pytest.raises(InconsistentStateInputError):
        room.resolve(a, b)


# --- properties -----------------------------------------------------------------------------------------------


def _random_room(seed: int, rv: RoomVersion) -> tuple[Room, list[dict[StateKey, str]]]:
    """A room forked into 2-4 branches, each doing a few random (allowed or not) state changes."""
    rng = random.Random(seed)
    room = Room(rv)
    room.send("m.room.member", DAVE, {"membership": "join"}, DAVE, eid="$dave_join")
    branches = [room.fork() for _ in range(rng.randint(2, 4))]
    users = [ALICE, BOB, CAROL, DAVE]
    for n, br in enumerate(branches):
        for k in range(rng.randint(1, 5)):
            sender, target = rng.choice(users), rng.choice(users)
            op = rng.randrange(5)
            eid = f"${n}_{k}"
            ts = rng.randint(0, 3)
            if op == 0:
                room.send("m.room.topic", sender, {"topic": eid}, "", on=br, eid=eid, ts=ts)
            elif op == 1:
                levels = {BOB: rng.choice([0, 50, 100]), CAROL: rng.choice([0, 50])}
                room.send("m.room.power_levels", sender, room.pl_content(levels), "", on=br, eid=eid, ts=ts)
            elif op == 2:
                room.send("m.room.member", sender, {"membership": "ban"}, target, on=br, eid=eid, ts=ts)
            elif op == 3:
                rule = rng.choice(["public", "invite"])
                room.send("m.room.join_rules", sender, {"join_rule": rule}, "", on=br, eid=eid, ts=ts)
            else:
                membership = rng.choice(["join", "leave"])
                room.send("m.room.member", target, {"membership": membership}, target, on=br, eid=eid, ts=ts)
    return room, branches


def _shuffled(d: Mapping[Any, Any], rng: random.Random) -> dict[Any, Any]:
    items = list(d.items())
    rng.shuffle(items)
    return dict(items)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), shuffle=st.integers(0, 10**6), v12=st.booleans())
def test_result_independent_of_input_order(seed: int, shuffle: int, v12: bool) -> None:
    """Reordering the state sets, their entries and the event map never changes the result."""
    room, branches = _random_room(seed, RoomVersions.V12 if v12 else RoomVersions.V11)
    expected = room.resolve(*branches)
    rng = random.Random(shuffle)
    perm = [_shuffled(b, rng) for b in branches]
    rng.shuffle(perm)
    got = resolve(room.rv, perm, _shuffled(room.events, rng))
    assert got == expected
    # Every value comes from some input state or its auth closure, and unconflicted entries stay.
    for key, value in got.items():
        assert room.events[value].state_tuple == key
    common = set(branches[0].items()).intersection(*(b.items() for b in branches[1:]))
    for key, value in common:
        assert got[key] == value


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_resolving_a_state_with_itself_is_identity(seed: int) -> None:
    room, branches = _random_room(seed, RoomVersions.V11)
    assert room.resolve(branches[0], dict(branches[0])) == branches[0]
