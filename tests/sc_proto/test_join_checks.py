"""Tests of :mod:`sc_proto.federation.join_checks` (the joining server's checks of a send_join answer)."""

from __future__ import annotations

import unittest

from sc_proto.errors import RemoteProtocolError
from sc_proto.federation import check_state_against_auth_chain, joined_servers
from sc_proto.room_versions import get_room_version
from tests.sc_proto.eventfactory import ALICE, BOB, DAVE, EVE, RoomBuilder, make_event


def _room(version: str = "10") -> RoomBuilder:
    room = RoomBuilder(get_room_version(version)).initial_state(join_rule="public")
    room.join(BOB)
    room.join(DAVE)
    return room


def _split(room: RoomBuilder) -> tuple[list, list]:
    """(current state, auth chain = every other event) of the room."""
    state = list(room.state.values())
    state_ids = {e.event_id for e in state}
    return state, [e for e in room.timeline if e.event_id not in state_ids]


class CheckStateTests(unittest.TestCase):
    def test_valid_answer_passes_whole(self) -> None:
        for version in ("1", "6", "10", "11", "12"):
            with self.subTest(version=version):
                room = _room(version)
                state, chain = _split(room)
                checked = check_state_against_auth_chain(room.room_version, room.room_id, state, chain)
                self.assertEqual([e.event_id for e in checked.state], [e.event_id for e in state])
                self.assertEqual(checked.dropped, {})

    def test_event_refused_by_the_rules_is_dropped(self) -> None:
        """EVE sets the room name without power: dropped, the rest kept."""
        room = _room()
        forged = room.add("m.room.name", EVE, {"name": "pwned"}, "")
        state, chain = _split(room)
        checked = check_state_against_auth_chain(room.room_version, room.room_id, state, chain)
        self.assertNotIn(forged.event_id, {e.event_id for e in checked.state})
        self.assertIn(forged.event_id, checked.dropped)
        self.assertEqual(len(checked.state), len(state) - 1)

    def test_event_whose_auth_event_is_missing_or_failed_is_dropped(self) -> None:
        room = _room()
        rv = room.room_version
        state, chain = _split(room)
        ghost = make_event(rv, "m.room.topic", ALICE, {"topic": "x"}, "", room_id=room.room_id,
                           auth_events=["$nowhere"], depth=50)
        bad = room.add("m.room.name", EVE, {"name": "x"}, "")  # fails: EVE is not joined
        child = make_event(rv, "m.room.topic", ALICE, {"topic": "y"}, "", room_id=room.room_id,
                           auth_events=[bad.event_id, *[e.event_id for e in state[:3]]], depth=60)
        checked = check_state_against_auth_chain(rv, room.room_id, [*state, ghost, bad, child], chain)
        self.assertEqual(set(checked.dropped), {ghost.event_id, bad.event_id, child.event_id})

    def test_event_of_another_room_is_dropped(self) -> None:
        room, other = _room(), _room()
        state, chain = _split(room)
        stranger = other.state[("m.room.member", BOB)]
        checked = check_state_against_auth_chain(room.room_version, room.room_id, [*state, stranger], chain)
        self.assertNotIn(stranger.event_id, {e.event_id for e in checked.state})
        self.assertEqual(checked.dropped[stranger.event_id], "event of another room")

    def test_lying_depths_do_not_let_events_through(self) -> None:
        """Depths reversed: the result is the same (order comes from the auth graph)."""
        room = _room()
        state, chain = _split(room)
        rv = room.room_version
        flipped = [type(e)({**e.pdu, "depth": 1000 - e.depth}, rv, e.event_id) for e in [*state, *chain]]
        checked = check_state_against_auth_chain(rv, room.room_id, flipped[: len(state)], flipped[len(state):])
        self.assertEqual(len(checked.state), len(state))

    def test_auth_cycle_is_dropped(self) -> None:
        room = _room()
        rv = room.room_version
        state, chain = _split(room)
        a_id, b_id = "$cycleA", "$cycleB"
        a = make_event(rv, "m.room.topic", ALICE, {}, "", event_id=a_id, room_id=room.room_id, auth_events=[b_id])
        b = make_event(rv, "m.room.name", ALICE, {}, "", event_id=b_id, room_id=room.room_id, auth_events=[a_id])
        checked = check_state_against_auth_chain(rv, room.room_id, [*state, a, b], chain)
        self.assertEqual({a_id, b_id} & set(checked.dropped), {a_id, b_id})

    def test_without_valid_create_event_is_refused(self) -> None:
        room = _room()
        state, chain = _split(room)
        no_create = [e for e in state if e.type != "m.room.create"]
        with self.assertRaises(RemoteProtocolError) as cm:
            check_state_against_auth_chain(room.room_version, room.room_id, no_create, chain)
        self.assertEqual(cm.exception.http_status, 502)
        with self.assertRaises(RemoteProtocolError):
            check_state_against_auth_chain(room.room_version, "!elsewhere:example.org", state, chain)
        # A create event with auth events fails the rules: refused too.
        rv = room.room_version
        create = room.state[("m.room.create", "")]
        broken = type(create)({**create.pdu, "auth_events": [state[1].event_id]}, rv, create.event_id)
        with self.assertRaises(RemoteProtocolError):
            check_state_against_auth_chain(rv, room.room_id, [broken, *state[1:]], chain)


class JoinedServersTests(unittest.TestCase):
    def test_servers_of_joined_members_only(self) -> None:
        room = _room()
        room.invite(ALICE, EVE)
        state = list(room.state.values())
        self.assertEqual(joined_servers(state), ["example.org", "other.org"])

    def test_malformed_state_keys_are_skipped(self) -> None:
        rv = get_room_version("10")
        weird = make_event(rv, "m.room.member", ALICE, {"membership": "join"}, "not-a-user")
        self.assertEqual(joined_servers([weird]), [])
