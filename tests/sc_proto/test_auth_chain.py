"""Tests for sc_proto.state.auth_chain: auth chains, auth difference, conflicted subgraph."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_proto.errors import LocalProtocolError
from sc_proto.events.model import Event
from sc_proto.room_versions import RoomVersions
from sc_proto.state import (
    MissingEventsError,
    auth_chain_difference,
    conflicted_subgraph,
    get_auth_chain,
    get_auth_closure,
)

RV = RoomVersions.V11


def ev(event_id: str, *auth: str, etype: str = "m.room.member") -> Event:
    pdu: dict[str, Any] = {
        "type": etype,
        "state_key": event_id,
        "sender": "@u:x",
        "room_id": "!r:x",
        "content": {},
        "auth_events": list(auth),
        "prev_events": [],
    }
    return Event(pdu, RV, event_id)


def graph(*events: Event) -> dict[str, Event]:
    return {e.event_id: e for e in events}


# create <- pl <- a <- b ; create <- c ; a, c <- d
G = graph(
    ev("$create"),
    ev("$pl", "$create"),
    ev("$a", "$create", "$pl"),
    ev("$b", "$a", "$pl"),
    ev("$c", "$create"),
    ev("$d", "$a", "$c"),
)


class TestGetAuthChain:
    def test_chain_excludes_the_event_itself(self) -> None:
        assert get_auth_chain(["$b"], G) == {"$a", "$pl", "$create"}

    def test_union_of_several_events(self) -> None:
        assert get_auth_chain(["$b", "$c"], G) == {"$a", "$pl", "$create"}
        assert get_auth_chain(["$d", "$a"], G) == {"$a", "$c", "$pl", "$create"}

    def test_root_has_empty_chain(self) -> None:
        assert get_auth_chain(["$create"], G) == set()
        assert get_auth_chain([], G) == set()

    def test_closure_includes_the_events(self) -> None:
        assert get_auth_closure(["$b"], G) == {"$b", "$a", "$pl", "$create"}

    def test_long_chain_has_no_recursion_limit(self) -> None:
        """A 20,000-deep chain is walked iteratively."""
        n = 20_000
        events = {"$0": ev("$0")}
        for i in range(1, n):
            events[f"${i}"] = ev(f"${i}", f"${i - 1}")
        assert len(get_auth_chain([f"${n - 1}"], events)) == n - 1

    def test_cycle_terminates(self) -> None:
        """Room v1/v2 event IDs are free-form, so a malicious auth cycle must not hang the walk."""
        events = graph(ev("$x", "$y"), ev("$y", "$x"))
        assert get_auth_chain(["$x"], events) == {"$x", "$y"}

    def test_missing_events_are_all_named(self) -> None:
        events = graph(ev("$a", "$gone1", "$gone2"), ev("$b", "$a", "$gone3"))
        with pytest.raises(MissingEventsError) as e:
            get_auth_chain(["$b", "$nope"], events)
        assert e.value.event_ids == {"$gone1", "$gone2", "$gone3", "$nope"}
        assert isinstance(e.value, LocalProtocolError)
        assert "$gone1" in str(e.value)

    def test_missing_error_message_is_bounded(self) -> None:
        err = MissingEventsError(f"$e{i}" for i in range(1000))
        assert len(str(err)) < 300 and "990 more" in str(err)


class TestAuthChainDifference:
    def test_identical_states_have_no_difference(self) -> None:
        assert auth_chain_difference([{("t", ""): "$b"}, {("t", ""): "$b"}], G) == set()

    def test_single_state_has_no_difference(self) -> None:
        assert auth_chain_difference([{("t", ""): "$b"}], G) == set()
        assert auth_chain_difference([], G) == set()

    def test_difference_of_two_branches(self) -> None:
        """Closures {b, a, pl, create} and {c, create}: everything but the create event."""
        s1 = {("m.room.member", "$b"): "$b"}
        s2 = {("m.room.member", "$c"): "$c"}
        assert auth_chain_difference([s1, s2], G) == {"$b", "$a", "$pl", "$c"}

    def test_shared_events_and_their_chains_are_excluded(self) -> None:
        s1 = {("k", "1"): "$b", ("k", "2"): "$c"}
        s2 = {("k", "1"): "$d", ("k", "2"): "$c"}
        # closures: {b, a, pl, create, c} and {d, a, c, pl, create}
        assert auth_chain_difference([s1, s2], G) == {"$b", "$d"}

    def test_accepts_collections_of_ids(self) -> None:
        assert auth_chain_difference([{"$b"}, ["$c"]], G) == {"$b", "$a", "$pl", "$c"}

    def test_three_states(self) -> None:
        """An event in two of three closures is still in the difference."""
        assert auth_chain_difference([{"$b"}, {"$a"}, {"$c"}], G) == {"$b", "$a", "$pl", "$c"}

    def test_missing_events_raise(self) -> None:
        with pytest.raises(MissingEventsError) as e:
            auth_chain_difference([{"$b"}, {"$zz"}], G)
        assert e.value.event_ids == {"$zz"}

    @settings(max_examples=30, deadline=None)
    @given(st.data())
    def test_matches_definition(self, data: st.DataObject) -> None:
        """Property: equals union minus intersection of the (inclusive) closures."""
        n = data.draw(st.integers(1, 25))
        events: dict[str, Event] = {}
        for i in range(n):
            parents = data.draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
            events[f"${i}"] = ev(f"${i}", *(f"${p}" for p in sorted(parents)))
        ids = st.sets(st.sampled_from(sorted(events)), max_size=6)
        sets = data.draw(st.lists(ids, min_size=2, max_size=4))
        closures = [get_auth_closure(s, events) for s in sets]
        expected = closures[0].union(*closures[1:]) - closures[0].intersection(*closures[1:])
        assert auth_chain_difference(sets, events) == expected


class TestConflictedSubgraph:
    def test_paths_between_conflicted_events(self) -> None:
        """$b -> $a -> $create and $b -> $pl: only the path from $b down to $create is included
        when $b and $create are conflicted (everything on it), and $c is off the path."""
        assert conflicted_subgraph({"$b", "$create"}, G) == {"$b", "$a", "$pl", "$create"}

    def test_unconnected_conflicted_events_are_only_themselves(self) -> None:
        assert conflicted_subgraph({"$b", "$c"}, G) == {"$b", "$c"}

    def test_events_below_the_lowest_conflicted_event_are_excluded(self) -> None:
        assert conflicted_subgraph({"$d", "$a"}, G) == {"$d", "$a"}
        assert conflicted_subgraph({"$d", "$pl"}, G) == {"$d", "$a", "$pl"}

    def test_missing_events_raise(self) -> None:
        with pytest.raises(MissingEventsError):
            conflicted_subgraph({"$zz"}, G)
