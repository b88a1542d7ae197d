"""Tests of sc_proto.auth.power_levels and the m.room.power_levels authorization rule."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_proto.auth import (
    CREATOR_POWER_LEVEL,
    check_auth,
    get_creators,
    get_named_level,
    get_notification_level,
    get_required_level,
    get_user_power_level,
    is_valid_user_id,
    parse_power_level,
)
from sc_proto.errors import AuthError
from sc_proto.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, RoomVersions
from tests.sc_proto.eventfactory import ALICE, BOB, CAROL, RoomBuilder, make_event, rejected_rule

ALL = list(KNOWN_ROOM_VERSIONS.values())
V = RoomVersions


def ids(v: RoomVersion) -> str:
    return "v" + v.identifier


def pl_rule(rv: RoomVersion, name: str, *sub: int) -> str:
    """Power-levels rule numbers as printed in rooms/vN.md."""
    n = int(rv.identifier)
    top = 10 if n <= 5 or n == 12 else 9
    order = (["int_values", "int_maps"] if n >= 10 else []) + ["users"]
    order += (["creators"] if n >= 12 else []) + ["no_previous", "named", "maps_old", "maps_new"]
    order += ["users_old", "users_new"]
    return ".".join(str(x) for x in (top, order.index(name) + 1, *sub))


def room(rv: RoomVersion, **kw: Any) -> RoomBuilder:
    return RoomBuilder(rv).initial_state(join_rule="public", **kw)


def base_users(rv: RoomVersion) -> dict[str, Any]:
    return {} if rv.privileged_creators else {ALICE: 100}


def pl_event(b: RoomBuilder, sender: str, **content: Any) -> Any:
    current = dict(b.state[("m.room.power_levels", "")].content)
    current.update(content)
    return b.build("m.room.power_levels", sender, current, "")


class TestParse:
    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_integers_always_valid(self, rv: RoomVersion) -> None:
        """Integers are valid in every version."""
        assert parse_power_level(50, rv) == 50
        assert parse_power_level(-3, rv) == -3

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    @pytest.mark.parametrize("value", [True, False, None, [1], {"a": 1}])
    def test_non_numbers_invalid(self, rv: RoomVersion, value: object) -> None:
        """Booleans, null, lists and objects are never power levels."""
        assert parse_power_level(value, rv) is None

    @pytest.mark.parametrize(
        "text, expected",
        [("100", 100), ("000100", 100), ("+100", 100), ("-100", -100), (" 100 ", 100), ("\t-07\n", -7)],
    )
    def test_stringy_values_v9(self, text: str, expected: int) -> None:
        """v1-v9 accept integer strings in the documented format."""
        assert parse_power_level(text, V.V9) == expected
        assert parse_power_level(text, V.V1) == expected

    @pytest.mark.parametrize("text", ["1.5", "1e3", "abc", "", "+-1", "1_000", "\u0661", "0x10", "1 2"])
    def test_bad_strings_invalid_v9(self, text: str) -> None:
        """Strings that are not plain base-10 integers are invalid."""
        assert parse_power_level(text, V.V9) is None

    @pytest.mark.parametrize("rv", [V.V10, V.V11, V.V12], ids=ids)
    def test_strings_invalid_v10(self, rv: RoomVersion) -> None:
        """v10+ accept integers only."""
        assert parse_power_level("100", rv) is None

    def test_floats_v5_vs_v6(self) -> None:
        """v1-v5 truncate floats; v6+ (canonical JSON) reject them."""
        assert parse_power_level(50.57, V.V5) == 50
        assert parse_power_level(-2.9, V.V1) == -2
        assert parse_power_level(5.114698e4, V.V5) == 51146
        assert parse_power_level(50.0, V.V6) is None
        assert parse_power_level(math.inf, V.V5) is None
        assert parse_power_level(math.nan, V.V5) is None


class TestUserIds:
    @pytest.mark.parametrize(
        "uid", [ALICE, "@a:[::1]:8448", "@Historic Name:x.org", "@:x.org", "@a:1.2.3.4:80"]
    )
    def test_valid(self, uid: str) -> None:
        assert is_valid_user_id(uid)

    @pytest.mark.parametrize(
        "uid",
        [
            5,
            None,
            "alice:x.org",
            "@alice",
            "@a\x00b:x.org",
            "@a:bad_host!",
            "@a:" + "x" * 300,
            "@a:x.org:port",
        ],
    )
    def test_invalid(self, uid: object) -> None:
        assert not is_valid_user_id(uid)


class TestCreators:
    def test_creator_field_v10(self) -> None:
        """v1-v10: the creator is content.creator."""
        ev = make_event(V.V10, "m.room.create", ALICE, {"creator": BOB}, "")
        assert get_creators(ev) == {BOB}

    def test_creator_field_v10_missing(self) -> None:
        ev = make_event(V.V10, "m.room.create", ALICE, {"creator": 5}, "")
        assert get_creators(ev) == frozenset()

    def test_sender_v11(self) -> None:
        """v11: the sender is the creator; additional_creators means nothing."""
        ev = make_event(V.V11, "m.room.create", ALICE, {"creator": BOB, "additional_creators": [CAROL]}, "")
        assert get_creators(ev) == {ALICE}

    def test_additional_creators_v12(self) -> None:
        """v12: sender plus additional_creators."""
        ev = make_event(V.V12, "m.room.create", ALICE, {"additional_creators": [BOB, CAROL]}, "")
        assert get_creators(ev) == {ALICE, BOB, CAROL}

    def test_none(self) -> None:
        assert get_creators(None, V.V12) == frozenset()


class TestUserPowerLevel:
    @pytest.mark.parametrize("rv", [V.V1, V.V10, V.V11], ids=ids)
    def test_creator_100_without_power_levels(self, rv: RoomVersion) -> None:
        """Before v12 the creator has 100 while there is no power-levels event."""
        create = RoomBuilder(rv).create()
        assert get_user_power_level(ALICE, None, create) == 100
        assert get_user_power_level(BOB, None, create) == 0

    def test_v12_creators_infinite(self) -> None:
        """v12 creators have infinite power, with or without power levels."""
        b = room(V.V12, create_content={"additional_creators": [BOB]})
        pl = b.state[("m.room.power_levels", "")]
        for level in (
            get_user_power_level(ALICE, None, b.create_event),
            get_user_power_level(BOB, pl, b.create_event),
        ):
            assert level == CREATOR_POWER_LEVEL
            assert level > 2**53
        assert get_user_power_level(CAROL, pl, b.create_event) == 0

    @pytest.mark.parametrize("rv", [V.V6, V.V11], ids=ids)
    def test_users_and_default(self, rv: RoomVersion) -> None:
        """users entries win; others get users_default; invalid entries fall back."""
        pl = make_event(
            rv, "m.room.power_levels", ALICE, {"users": {BOB: 30, CAROL: "x"}, "users_default": 5}, ""
        )
        assert get_user_power_level(BOB, pl, None, rv) == 30
        assert get_user_power_level(CAROL, pl, None, rv) == 5
        assert get_user_power_level("@x:y.org", pl, None) == 5

    def test_no_events_at_all(self) -> None:
        assert get_user_power_level(ALICE, None, None) == 0

    def test_stringy_user_level_v9(self) -> None:
        pl = make_event(V.V9, "m.room.power_levels", ALICE, {"users": {BOB: "42"}}, "")
        assert get_user_power_level(BOB, pl, None) == 42


class TestLevels:
    def test_named_defaults(self) -> None:
        """Spec defaults: ban/kick/redact 50, invite 0, state_default 50, events_default 0."""
        assert [get_named_level(None, n) for n in ("ban", "kick", "redact", "invite")] == [50, 50, 50, 0]
        assert get_named_level(None, "state_default") == 50
        assert get_named_level(None, "unknown_key") == 0
        assert get_named_level(None, "ban", 7) == 7

    def test_named_from_event(self) -> None:
        pl = make_event(V.V11, "m.room.power_levels", ALICE, {"ban": 70, "kick": "60"}, "")
        assert get_named_level(pl, "ban") == 70
        assert get_named_level(pl, "kick") == 50  # strings are not levels in v11

    def test_required_level(self) -> None:
        """events overrides; else state_default for state, events_default for messages."""
        pl = make_event(
            V.V11,
            "m.room.power_levels",
            ALICE,
            {"events": {"m.room.name": 20, "bad": True}, "state_default": 40, "events_default": 10},
            "",
        )
        assert get_required_level("m.room.name", "", pl) == 20
        assert get_required_level("m.room.topic", "", pl) == 40
        assert get_required_level("m.room.message", None, pl) == 10
        assert get_required_level("bad", None, pl) == 10
        assert get_required_level("m.room.topic", "", None) == 50
        assert get_required_level("m.room.message", None, None) == 0

    def test_notification_level(self) -> None:
        pl = make_event(V.V11, "m.room.power_levels", ALICE, {"notifications": {"room": 20, "x": "y"}}, "")
        assert get_notification_level(pl, "room") == 20
        assert get_notification_level(pl, "x") == 50
        assert get_notification_level(None, "room") == 50


class TestPowerLevelsRule:
    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_first_power_levels_allowed(self, rv: RoomVersion) -> None:
        """x.no_previous: without a previous power-levels event any valid content is allowed."""
        b = RoomBuilder(rv)
        b.create()
        b.join(ALICE)
        ev = b.build("m.room.power_levels", ALICE, {"users": {**base_users(rv), BOB: 1000}, "ban": 9000}, "")
        check_auth(ev, b.state)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    @pytest.mark.parametrize("users", [{"not-a-user": 1}, {BOB: "abc"}, {BOB: True}, {BOB: None}, "x", [BOB]])
    def test_bad_users_rejected(self, rv: RoomVersion, users: object) -> None:
        """x.users: users must map valid user IDs to integers."""
        b = room(rv)
        assert rejected_rule(pl_event(b, ALICE, users=users), b.state) == pl_rule(rv, "users")

    @pytest.mark.parametrize("rv", [V.V9, V.V10], ids=ids)
    def test_string_levels_v9_vs_v10(self, rv: RoomVersion) -> None:
        """String power levels are accepted in v9 and rejected in v10."""
        b = room(rv)
        ev = pl_event(b, ALICE, users={ALICE: "100", BOB: "50"}, ban="50")
        if rv.enforce_int_power_levels:
            assert rejected_rule(ev, b.state) == pl_rule(rv, "int_values")
        else:
            check_auth(ev, b.state)

    @pytest.mark.parametrize("rv", [V.V10, V.V12], ids=ids)
    @pytest.mark.parametrize(
        "key", ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"]
    )
    def test_v10_named_must_be_int(self, rv: RoomVersion, key: str) -> None:
        """x.1 (v10+): named levels must be integers."""
        b = room(rv)
        assert rejected_rule(pl_event(b, ALICE, **{key: "5"}), b.state) == pl_rule(rv, "int_values")

    @pytest.mark.parametrize("rv", [V.V10, V.V12], ids=ids)
    @pytest.mark.parametrize(
        "key, value",
        [("events", "x"), ("events", {"a": "5"}), ("notifications", {"room": 1.5}), ("notifications", [])],
    )
    def test_v10_maps_must_hold_ints(self, rv: RoomVersion, key: str, value: object) -> None:
        """x.2 (v10+): events and notifications must be objects of integers."""
        b = room(rv)
        assert rejected_rule(pl_event(b, ALICE, **{key: value}), b.state) == pl_rule(rv, "int_maps")

    def test_v9_invalid_named_value_rejected(self) -> None:
        """v1-v9 (NOTSPEC): a named value that is not a level is rejected rather than guessed."""
        b = room(V.V9)
        assert rejected_rule(pl_event(b, ALICE, ban="lots"), b.state) == "9.1"

    @pytest.mark.parametrize("rv", [V.V6, V.V12], ids=ids)
    def test_non_state_power_levels_checked_too(self, rv: RoomVersion) -> None:
        """The rule applies to the type, whether or not the event has a state_key."""
        b = room(rv)
        ev = b.build("m.room.power_levels", ALICE, {"users": {"nope": 1}})
        assert rejected_rule(ev, b.state) == pl_rule(rv, "users")

    def test_v12_creator_in_users_rejected(self) -> None:
        """10.4 (v12): creators cannot appear in users."""
        b = room(V.V12, create_content={"additional_creators": [BOB]})
        assert rejected_rule(pl_event(b, ALICE, users={ALICE: 100}), b.state) == "10.4"
        assert rejected_rule(pl_event(b, ALICE, users={BOB: 100}), b.state) == "10.4"
        check_auth(pl_event(b, ALICE, users={CAROL: 100}), b.state)

    def test_v12_creator_in_first_power_levels_rejected(self) -> None:
        """10.4 precedes 10.5: even the first power-levels event cannot list creators."""
        b = RoomBuilder(V.V12)
        b.create()
        b.join(ALICE)
        ev = b.build("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "")
        assert rejected_rule(ev, b.state) == "10.4"

    def test_v11_creator_in_users_allowed(self) -> None:
        b = room(V.V11)
        check_auth(pl_event(b, ALICE, users={ALICE: 100}), b.state)

    def _moderator_room(self, rv: RoomVersion, **pl: Any) -> RoomBuilder:
        b = room(rv)
        b.join(BOB)
        b.join(CAROL)
        content = dict(b.state[("m.room.power_levels", "")].content)
        content["users"] = {**base_users(rv), BOB: 50, CAROL: 50}
        content["events"] = {"m.room.power_levels": 50}
        content.update(pl)
        b.add("m.room.power_levels", ALICE, content, "")
        return b

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_named_change_within_level_allowed(self, rv: RoomVersion) -> None:
        """Changing a named level at or below one's own level is allowed."""
        b = self._moderator_room(rv)
        check_auth(pl_event(b, BOB, kick=40), b.state)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_named_new_value_above_sender_rejected(self, rv: RoomVersion) -> None:
        """x.named.2: the new value may not exceed the sender's level."""
        b = self._moderator_room(rv)
        assert rejected_rule(pl_event(b, BOB, kick=60), b.state) == pl_rule(rv, "named", 2)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_named_current_value_above_sender_rejected(self, rv: RoomVersion) -> None:
        """x.named.1: a value above the sender's level cannot be changed or removed."""
        b = self._moderator_room(rv, ban=80)
        assert rejected_rule(pl_event(b, BOB, ban=10), b.state) == pl_rule(rv, "named", 1)
        content = dict(b.state[("m.room.power_levels", "")].content)
        del content["ban"]
        ev = b.build("m.room.power_levels", BOB, content, "")
        assert rejected_rule(ev, b.state) == pl_rule(rv, "named", 1)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_events_entry_rules(self, rv: RoomVersion) -> None:
        """x.maps_old / x.maps_new: events entries above the sender are untouchable."""
        b = self._moderator_room(rv, events={"m.room.power_levels": 50, "m.room.tombstone": 100})
        assert rejected_rule(pl_event(b, BOB, events={"m.room.power_levels": 50}), b.state) == pl_rule(
            rv, "maps_old", 1
        )
        ev = pl_event(b, BOB, events={"m.room.power_levels": 50, "m.room.tombstone": 100, "m.x": 51})
        assert rejected_rule(ev, b.state) == pl_rule(rv, "maps_new", 1)
        check_auth(
            pl_event(b, BOB, events={"m.room.power_levels": 50, "m.room.tombstone": 100, "m.x": 50}), b.state
        )

    @pytest.mark.parametrize("rv", [V.V5, V.V6], ids=ids)
    def test_notifications_v5_vs_v6(self, rv: RoomVersion) -> None:
        """notifications changes are checked from v6 (limit_notifications_power_levels)."""
        b = self._moderator_room(rv, notifications={"room": 100})
        ev = pl_event(b, BOB, notifications={"room": 0})
        if rv.limit_notifications_power_levels:
            assert rejected_rule(ev, b.state) == pl_rule(rv, "maps_old", 1)
        else:
            check_auth(ev, b.state)

    @pytest.mark.parametrize("rv", [V.V6, V.V11], ids=ids)
    def test_notifications_added_above_sender_rejected(self, rv: RoomVersion) -> None:
        b = self._moderator_room(rv)
        assert rejected_rule(pl_event(b, BOB, notifications={"room": 70}), b.state) == pl_rule(
            rv, "maps_new", 1
        )

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_users_equal_level_untouchable(self, rv: RoomVersion) -> None:
        """x.users_old: others at or above the sender's level cannot be changed."""
        b = self._moderator_room(rv)
        users = {**base_users(rv), BOB: 50, CAROL: 0}
        assert rejected_rule(pl_event(b, BOB, users=users), b.state) == pl_rule(rv, "users_old", 1)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_users_own_entry_may_be_lowered(self, rv: RoomVersion) -> None:
        """x.users_old excludes the sender's own entry: one can demote oneself."""
        b = self._moderator_room(rv)
        check_auth(pl_event(b, BOB, users={**base_users(rv), BOB: 10, CAROL: 50}), b.state)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_users_raise_above_sender_rejected(self, rv: RoomVersion) -> None:
        """x.users_new: nobody can be given more than the sender has."""
        b = self._moderator_room(rv)
        users = {**base_users(rv), BOB: 51, CAROL: 50}
        assert rejected_rule(pl_event(b, BOB, users=users), b.state) == pl_rule(rv, "users_new", 1)
        users = {**base_users(rv), BOB: 50, CAROL: 50, "@new:example.org": 50}
        check_auth(pl_event(b, BOB, users=users), b.state)

    def test_v12_creator_may_change_anything(self) -> None:
        """A v12 creator (infinite level) can change entries at any integer level."""
        b = self._moderator_room(V.V12, ban=2**40)
        check_auth(pl_event(b, ALICE, ban=2**41, users={BOB: 2**50}), b.state)

    @pytest.mark.parametrize("rv", [V.V1, V.V11], ids=ids)
    def test_v11_creator_bounded_by_own_level(self, rv: RoomVersion) -> None:
        """Before v12 the creator is bounded by their power level (100)."""
        b = room(rv)
        assert rejected_rule(pl_event(b, ALICE, ban=101), b.state) == pl_rule(rv, "named", 2)


@settings(max_examples=150, deadline=None)
@given(
    rv=st.sampled_from(ALL),
    content=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["users", "ban", "events", "@a:b.c", "membership", "x"]), inner, max_size=4
            )
        ),
        max_leaves=10,
    ),
    etype=st.sampled_from(["m.room.power_levels", "m.room.member", "m.room.create", "m.room.message"]),
)
def test_arbitrary_content_raises_only_auth_error(rv: RoomVersion, content: Any, etype: str) -> None:
    """Whatever the content, check_auth either allows or raises AuthError."""
    b = RoomBuilder(rv, room_id="!r:example.org")
    b.initial_state(join_rule="public")
    ev = b.build(etype, ALICE, {}, "" if etype != "m.room.member" else BOB, extra={"content": content})
    try:
        check_auth(ev, b.state)
    except AuthError:
        pass
