"""Tests for sc_proto.federation.requests: the membership dances' bodies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sc_proto.crypto.keys import signing_key_from_seed
from sc_proto.errors import Codes, MatrixError, RemoteProtocolError
from sc_proto.events.builder import finalise_event
from sc_proto.federation.requests import (
    InviteRequest,
    MakeMembershipResponse,
    SendJoinResponse,
    SendKnockResponse,
    build_membership_template,
    check_invite_event,
    check_membership_event,
    check_room_version_supported,
    fill_membership_template,
    parse_event_response,
    parse_invite_response,
    parse_stripped_state,
    parse_ver_query,
    ver_query,
)
from sc_proto.room_versions import RoomVersions

ROOM = "!room:b.test:8448"
ALICE = "@alice:a.test:8448"
KEY = signing_key_from_seed(b"\x01" * 32, "k1")
RV = RoomVersions.V10

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), st.text(max_size=8))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)),
    max_leaves=10,
)


def template(membership: str = "join", **content: Any) -> dict[str, Any]:
    return build_membership_template(
        room_version=RV, room_id=ROOM, user_id=ALICE, membership=membership, origin="b.test:8448", prev_event_ids=["$p"],
        auth_event_ids=["$a1", "$a2"], depth=7, origin_server_ts=10, content=content,
    )


def signed(membership: str = "join", **changes: Any) -> Any:
    pdu = fill_membership_template(
        template(membership), room_id=ROOM, user_id=ALICE, membership=membership, origin="a.test:8448",
        origin_server_ts=20,
    )
    pdu.update(changes)
    return finalise_event(pdu, RV, "a.test:8448", "ed25519:k1", KEY)


class TestRoomVersions:
    def test_ver_round_trip(self) -> None:
        """``ver`` query parameters say which versions the joiner supports."""
        assert parse_ver_query(ver_query(["10", "11"])) == ["10", "11"]

    def test_no_ver_means_version_1(self) -> None:
        """The spec's default when the joiner lists nothing."""
        assert parse_ver_query({}) == ["1"]
        assert parse_ver_query({"ver": []}) == ["1"]

    def test_incompatible_version(self) -> None:
        """400 M_INCOMPATIBLE_ROOM_VERSION with the room's version."""
        with pytest.raises(MatrixError) as info:
            check_room_version_supported("10", ["1", "2"])
        assert info.value.http_status == 400
        assert info.value.errcode is Codes.INCOMPATIBLE_ROOM_VERSION
        assert info.value.to_json()["room_version"] == "10"
        check_room_version_supported("10", ["9", "10"])


class TestTemplates:
    def test_make_response_round_trip(self) -> None:
        body = MakeMembershipResponse("10", template()).to_json()
        parsed = MakeMembershipResponse.parse(body)
        assert parsed.room_version == "10" and parsed.event == template()

    def test_template_in_the_v1_format(self) -> None:
        """Rooms v1-v2 templates carry [id, hashes] references and an event ID."""
        t = build_membership_template(
            room_version=RoomVersions.V1, room_id=ROOM, user_id=ALICE, membership="join", origin="b.test:8448",
            prev_event_ids=["$p:b.test:8448"], auth_event_ids=[], depth=2, origin_server_ts=1,
        )
        assert t["prev_events"][0][0] == "$p:b.test:8448"
        assert t["event_id"].endswith(":b.test:8448")

    def test_make_response_defaults_to_v1(self) -> None:
        assert MakeMembershipResponse.parse({"event": {}}).room_version == "1"

    @pytest.mark.parametrize("body", [None, [], {"event": []}, {"event": {}, "room_version": 10}])
    def test_malformed_make_response(self, body: Any) -> None:
        with pytest.raises(RemoteProtocolError):
            MakeMembershipResponse.parse(body)

    def test_fill_keeps_the_authoriser_and_sets_ours(self) -> None:
        """The joiner's content replaces the template's, except join_authorised_via_users_server."""
        t = template(join_authorised_via_users_server="@bob:b.test:8448", displayname="evil")
        t["hashes"] = {"sha256": "x"}
        t["signatures"] = {"b.test:8448": {}}
        filled = fill_membership_template(
            t, room_id=ROOM, user_id=ALICE, membership="join", origin="a.test:8448", origin_server_ts=99,
            content={"displayname": "Alice", "membership": "leave"},
        )
        assert filled["content"] == {
            "join_authorised_via_users_server": "@bob:b.test:8448", "displayname": "Alice", "membership": "join",
        }
        assert filled["origin"] == "a.test:8448" and filled["origin_server_ts"] == 99
        assert "hashes" not in filled and "signatures" not in filled
        assert filled["prev_events"] == ["$p"] and filled["depth"] == 7

    @pytest.mark.parametrize(
        "change",
        [
            {"type": "m.room.message"}, {"room_id": "!other:b.test"}, {"sender": "@eve:b.test"},
            {"state_key": "@eve:b.test"}, {"content": {"membership": "leave"}}, {"content": "join"},
            {"prev_events": None}, {"auth_events": "x"}, {"depth": "1"}, {"depth": True},
        ],
    )
    def test_fill_refuses_a_template_that_is_not_ours(self, change: dict[str, Any]) -> None:
        t = {**template(), **change}
        with pytest.raises(RemoteProtocolError):
            fill_membership_template(
                t, room_id=ROOM, user_id=ALICE, membership="join", origin="a.test:8448", origin_server_ts=1
            )

    @given(json_values)
    def test_fill_never_crashes_on_garbage(self, garbage: Any) -> None:
        """Any JSON as a template is either filled or refused with RemoteProtocolError."""
        try:
            fill_membership_template(
                garbage, room_id=ROOM, user_id=ALICE, membership="join", origin="a", origin_server_ts=1
            )
        except RemoteProtocolError:
            pass


class TestMembershipEventChecks:
    def test_good_event(self) -> None:
        event = signed()
        check_membership_event(event, origin="a.test:8448", room_id=ROOM, event_id=event.event_id, membership="join")

    def test_mismatches_are_bad_json(self) -> None:
        event = signed()
        for kwargs in (
            {"room_id": "!x:b.test", "event_id": event.event_id, "membership": "join"},
            {"room_id": ROOM, "event_id": "$other", "membership": "join"},
            {"room_id": ROOM, "event_id": event.event_id, "membership": "leave"},
        ):
            with pytest.raises(MatrixError) as info:
                check_membership_event(event, origin="a.test:8448", **kwargs)  # type: ignore[arg-type]
            assert (info.value.http_status, info.value.errcode) == (400, Codes.BAD_JSON)

    def test_someone_elses_membership_is_bad_json(self) -> None:
        event = signed(state_key="@carol:a.test:8448")
        with pytest.raises(MatrixError) as info:
            check_membership_event(event, origin="a.test:8448", room_id=ROOM, event_id=event.event_id, membership="join")
        assert info.value.http_status == 400

    def test_sender_of_another_server_is_forbidden(self) -> None:
        event = signed()
        with pytest.raises(MatrixError) as info:
            check_membership_event(event, origin="evil.test", room_id=ROOM, event_id=event.event_id, membership="join")
        assert (info.value.http_status, info.value.errcode) == (403, Codes.FORBIDDEN)


class TestSendJoin:
    def test_round_trip(self) -> None:
        answer = SendJoinResponse([{"type": "a"}], [{"type": "b"}], {"type": "c"}, False, None, "b.test")
        parsed = SendJoinResponse.parse(answer.to_json())
        assert parsed == answer

    def test_partial_state_fields(self) -> None:
        parsed = SendJoinResponse.parse(
            {"state": [], "auth_chain": [], "members_omitted": True, "servers_in_room": ["a", "b"]}
        )
        assert parsed.members_omitted and parsed.servers_in_room == ["a", "b"] and parsed.event is None

    @pytest.mark.parametrize(
        "body",
        [
            None, [200, {}], {"state": [], "auth_chain": {}}, {"state": [1], "auth_chain": []},
            {"state": [], "auth_chain": [], "event": "x"}, {"state": [], "auth_chain": [], "members_omitted": "no"},
            {"state": [], "auth_chain": [], "servers_in_room": [1]},
        ],
    )
    def test_malformed(self, body: Any) -> None:
        with pytest.raises(RemoteProtocolError):
            SendJoinResponse.parse(body)


class TestKnockAndInvite:
    STRIPPED = [{"type": "m.room.name", "state_key": "", "content": {"name": "x"}, "sender": ALICE}]

    def test_knock_round_trip(self) -> None:
        assert SendKnockResponse.parse(SendKnockResponse(self.STRIPPED).to_json()).knock_room_state == self.STRIPPED
        assert SendKnockResponse.parse({}).knock_room_state == []

    @pytest.mark.parametrize(
        "state", ["x", [1], [{"type": "a", "state_key": "", "content": {}}], [{"type": 1, "state_key": "", "content": {}, "sender": "s"}]]
    )
    def test_bad_stripped_state(self, state: Any) -> None:
        with pytest.raises(RemoteProtocolError):
            parse_stripped_state(state)

    def test_invite_round_trip(self) -> None:
        request = InviteRequest("10", {"type": "m.room.member"}, self.STRIPPED)
        assert InviteRequest.parse(request.to_json()) == request

    @pytest.mark.parametrize("body", [None, {}, {"room_version": "10"}, {"room_version": 10, "event": {}},
                                      {"room_version": "10", "event": {}, "invite_room_state": {}}])
    def test_bad_invite(self, body: Any) -> None:
        with pytest.raises(RemoteProtocolError):
            InviteRequest.parse(body)

    def test_invite_event_checks(self) -> None:
        pdu = {
            "type": "m.room.member", "room_id": ROOM, "sender": ALICE, "state_key": "@bob:b.test:8448",
            "content": {"membership": "invite"}, "origin_server_ts": 1, "depth": 3, "prev_events": [], "auth_events": [],
        }
        event = finalise_event(pdu, RV, "a.test:8448", "ed25519:k1", KEY)
        check_invite_event(event, origin="a.test:8448", room_id=ROOM, event_id=event.event_id)
        with pytest.raises(MatrixError) as info:
            check_invite_event(event, origin="b.test:8448", room_id=ROOM, event_id=event.event_id)
        assert info.value.http_status == 403
        with pytest.raises(MatrixError) as info:
            check_invite_event(event, origin="a.test:8448", room_id="!x:y", event_id=event.event_id)
        assert info.value.http_status == 400
        not_invite = finalise_event({**pdu, "content": {"membership": "join"}}, RV, "a.test:8448", "ed25519:k1", KEY)
        with pytest.raises(MatrixError):
            check_invite_event(not_invite, origin="a.test:8448", room_id=ROOM, event_id=not_invite.event_id)

    def test_invite_response(self) -> None:
        assert parse_invite_response({"event": {"a": 1}}) == {"a": 1}
        with pytest.raises(RemoteProtocolError):
            parse_invite_response({"event": None})

    def test_event_response_shapes(self) -> None:
        assert parse_event_response([200, {"event": {"a": 1}}]) == {"a": 1}
        assert parse_event_response({"event": {"a": 1}}) == {"a": 1}
        assert parse_event_response({}) is None
