"""Tests of auth events selection and the rule "Considering the event's auth_events"."""

from __future__ import annotations

import pytest

from sc_proto.auth import auth_types_for_event, build_auth_state, check_auth, check_auth_events_match
from sc_proto.errors import AuthError
from sc_proto.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, RoomVersions
from tests.sc_proto.eventfactory import ALICE, BOB, CAROL, RoomBuilder

ALL = list(KNOWN_ROOM_VERSIONS.values())
PRE_V12 = [v for v in ALL if v.create_event_in_auth_events]
V = RoomVersions


def ids(v: RoomVersion) -> str:
    return "v" + v.identifier


def auth_rule(rv: RoomVersion) -> str:
    return "3" if rv.room_id_from_create_event else "2"


def reason(exc: pytest.ExceptionInfo[AuthError]) -> str:
    return exc.value.reason.partition(":")[0]


def room(rv: RoomVersion) -> RoomBuilder:
    return RoomBuilder(rv).initial_state(join_rule="public")


class TestSelection:
    def test_create_has_none(self) -> None:
        assert auth_types_for_event({"type": "m.room.create", "sender": ALICE}, V.V11) == []

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_message(self, rv: RoomVersion) -> None:
        """Create (not in v12), power levels, sender's membership."""
        keys = auth_types_for_event({"type": "m.room.message", "sender": ALICE, "content": {}}, rv)
        expected = [("m.room.power_levels", ""), ("m.room.member", ALICE)]
        if rv.create_event_in_auth_events:
            expected.insert(0, ("m.room.create", ""))
        assert keys == expected

    @pytest.mark.parametrize("membership", ["join", "invite", "knock"])
    def test_member_join_rules(self, membership: str) -> None:
        """Join, invite and knock select the join rules and the target's membership."""
        fields = {
            "type": "m.room.member",
            "sender": ALICE,
            "state_key": BOB,
            "content": {"membership": membership},
        }
        keys = auth_types_for_event(fields, V.V11)
        assert ("m.room.join_rules", "") in keys
        assert ("m.room.member", BOB) in keys

    @pytest.mark.parametrize("membership", ["leave", "ban"])
    def test_member_no_join_rules(self, membership: str) -> None:
        fields = {
            "type": "m.room.member",
            "sender": ALICE,
            "state_key": BOB,
            "content": {"membership": membership},
        }
        assert ("m.room.join_rules", "") not in auth_types_for_event(fields, V.V11)

    def test_self_join_deduplicated(self) -> None:
        fields = {"type": "m.room.member", "sender": BOB, "state_key": BOB, "content": {"membership": "join"}}
        keys = auth_types_for_event(fields, V.V11)
        assert keys.count(("m.room.member", BOB)) == 1

    def test_third_party_invite_token(self) -> None:
        content = {"membership": "invite", "third_party_invite": {"signed": {"token": "t"}}}
        fields = {"type": "m.room.member", "sender": ALICE, "state_key": BOB, "content": content}
        assert ("m.room.third_party_invite", "t") in auth_types_for_event(fields, V.V11)

    @pytest.mark.parametrize(
        "content", ["x", {"membership": "invite", "third_party_invite": {"signed": {"token": 5}}}]
    )
    def test_bad_content_tolerated(self, content: object) -> None:
        fields = {"type": "m.room.member", "sender": ALICE, "state_key": BOB, "content": content}
        keys = auth_types_for_event(fields, V.V11)
        assert not any(k[0] == "m.room.third_party_invite" for k in keys)


class TestAuthEventsMatch:
    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_selected_auth_events_pass(self, rv: RoomVersion) -> None:
        """Events built by the factory have exactly the selected auth events."""
        b = room(rv)
        ev = b.build("m.room.member", BOB, {"membership": "join"}, BOB)
        check_auth_events_match(ev, b.events)
        check_auth(ev, build_auth_state([b.events[i] for i in ev.auth_event_ids], b.create_event))

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_create_event_passes(self, rv: RoomVersion) -> None:
        b = RoomBuilder(rv)
        check_auth_events_match(b.create(), {})

    def test_create_with_auth_events_rejected(self) -> None:
        b = room(V.V11)
        ev = b.build("m.room.create", ALICE, {}, "", prev=[], auth=[b.create_event])  # type: ignore[list-item]
        with pytest.raises(AuthError) as exc:
            check_auth_events_match(ev, b.events)
        assert reason(exc) == "2.2"

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_duplicate_rejected(self, rv: RoomVersion) -> None:
        """x.1: two power-levels events."""
        b = room(rv)
        old_pl = b.state[("m.room.power_levels", "")]
        b.set_power_levels(ALICE, ban=60)
        ev = b.build("m.room.message", ALICE, {})
        ev = b.build("m.room.message", ALICE, {}, auth=[*ev.auth_event_ids, old_pl.event_id])
        with pytest.raises(AuthError) as exc:
            check_auth_events_match(ev, b.events)
        assert reason(exc) == f"{auth_rule(rv)}.1"

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_unexpected_rejected(self, rv: RoomVersion) -> None:
        """x.2: join rules are not selected for a message."""
        b = room(rv)
        ev = b.build("m.room.message", ALICE, {})
        ev = b.build(
            "m.room.message",
            ALICE,
            {},
            auth=[*ev.auth_event_ids, b.state[("m.room.join_rules", "")].event_id],
        )
        with pytest.raises(AuthError) as exc:
            check_auth_events_match(ev, b.events)
        assert reason(exc) == f"{auth_rule(rv)}.2"

    def test_v12_create_listed_rejected(self) -> None:
        """3.2 (v12): the create event must not be selected."""
        b = room(V.V12)
        ev = b.build("m.room.message", ALICE, {})
        ev = b.build("m.room.message", ALICE, {}, auth=[b.create_event.event_id, *ev.auth_event_ids])  # type: ignore[union-attr]
        with pytest.raises(AuthError) as exc:
            check_auth_events_match(ev, b.events)
        assert reason(exc) == "3.2"

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_rejected_auth_event_rejected(self, rv: RoomVersion) -> None:
        """x.3: an auth event the host rejected."""
        b = room(rv)
        ev = b.build("m.room.message", ALICE, {})
        with pytest.raises(AuthError) as exc:
            check_auth_events_match(ev, b.events, rejected_event_ids={ev.auth_event_ids[-1]})
        assert reason(exc) == f"{auth_rule(rv)}.3"

    @pytest.mark.parametrize("rv", PRE_V12, ids=ids)
    def test_missing_create_rejected(self, rv: RoomVersion) -> None:
        """2.4: the create event must be among the auth events (v1-v11)."""
        b = room(rv)
        ev = b.build("m.room.message", ALICE, {})
        ev = b.build("m.room.message", ALICE, {}, auth=ev.auth_event_ids[1:])
        with pytest.raises(AuthError) as exc:
            check_auth_events_match(ev, b.events)
        assert reason(exc) == "2.4"

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_other_room_rejected(self, rv: RoomVersion) -> None:
        """x.5: auth events must be in the event's room."""
        b = room(rv)
        other = room(rv)
        ev = b.build("m.room.message", ALICE, {})
        pl = other.state[("m.room.power_levels", "")]
        auth = [i for i in ev.auth_event_ids if i != b.state[("m.room.power_levels", "")].event_id] + [
            pl.event_id
        ]
        ev = b.build("m.room.message", ALICE, {}, auth=auth)
        with pytest.raises(AuthError) as exc:
            check_auth_events_match(ev, {**b.events, **other.events})
        assert reason(exc) == f"{auth_rule(rv)}.5"

    def test_missing_auth_event_rejected(self) -> None:
        b = room(V.V11)
        ev = b.build("m.room.message", ALICE, {}, auth=["$unknown"])
        with pytest.raises(AuthError) as exc:
            check_auth_events_match(ev, b.events)
        assert reason(exc) == "2"

    def test_non_state_auth_event_rejected(self) -> None:
        b = room(V.V11)
        msg = b.add("m.room.message", ALICE, {})
        ev = b.build("m.room.message", CAROL, {}, auth=[msg.event_id])
        with pytest.raises(AuthError) as exc:
            check_auth_events_match(ev, b.events)
        assert reason(exc) == "2.2"


def test_build_auth_state_skips_non_state() -> None:
    b = room(V.V12)
    msg = b.add("m.room.message", ALICE, {})
    state = build_auth_state([msg, b.state[("m.room.power_levels", "")]], b.create_event)
    assert set(state) == {("m.room.create", ""), ("m.room.power_levels", "")}
