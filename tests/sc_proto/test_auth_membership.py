"""Tests of the m.room.member authorization rules (sc_proto.auth.membership)."""

from __future__ import annotations

import base64
from typing import Any

import nacl.signing
import pytest

from sc_proto.auth import auth_types_for_event, check_auth, join_authorising_server, verify_third_party_signed
from sc_proto.events.model import Event
from sc_proto.json import encode_canonical_json
from sc_proto.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, RoomVersions
from tests.sc_proto.eventfactory import ALICE, BOB, CAROL, DAVE, RoomBuilder, make_event, rejected_rule

ALL = list(KNOWN_ROOM_VERSIONS.values())
V = RoomVersions


def ids(v: RoomVersion) -> str:
    return "v" + v.identifier


def num(rv: RoomVersion) -> int:
    return int(rv.identifier)


def m(rv: RoomVersion, kind: str, *sub: int) -> str:
    """Membership rule numbers as printed in rooms/vN.md."""
    top = 5 if num(rv) <= 5 or num(rv) == 12 else 4
    order = ["missing"] + (["via"] if num(rv) >= 8 else []) + ["join", "invite", "leave", "ban"]
    order += (["knock"] if num(rv) >= 7 else []) + ["unknown"]
    return ".".join(str(x) for x in (top, order.index(kind) + 1, *sub))


def j(rv: RoomVersion, name: str, *sub: int) -> str:
    """Join sub-rule numbers."""
    order = ["creator", "sender", "banned", "invite"] + (["restricted"] if num(rv) >= 8 else [])
    order += ["public", "otherwise"]
    return m(rv, "join", order.index(name) + 1, *sub)


def room(rv: RoomVersion, join_rule: str = "invite", **kw: Any) -> RoomBuilder:
    return RoomBuilder(rv).initial_state(join_rule=join_rule, **kw)


def member(b: RoomBuilder, sender: str, target: str, membership: Any, **content: Any) -> Event:
    return b.build("m.room.member", sender, {"membership": membership, **content}, target)


def users_with(rv: RoomVersion, **levels: int) -> dict[str, int]:
    """A users map (the creator at 100 before v12) plus ``levels`` keyed by name."""
    names = {"bob": BOB, "carol": CAROL, "alice": ALICE, "dave": DAVE}
    users = {} if rv.privileged_creators else {ALICE: 100}
    users.update({names[k]: v for k, v in levels.items()})
    return users


class TestShape:
    @pytest.mark.parametrize("rv", ALL, ids=ids)
    @pytest.mark.parametrize(
        "content", [{}, {"membership": None}, {"membership": 3}, {"membership": ["join"]}]
    )
    def test_missing_membership_rejected(self, rv: RoomVersion, content: dict[str, Any]) -> None:
        """x.1: no (string) membership."""
        b = room(rv)
        ev = b.build("m.room.member", BOB, content, BOB)
        assert rejected_rule(ev, b.state) == m(rv, "missing")

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_missing_state_key_rejected(self, rv: RoomVersion) -> None:
        """x.1: no state_key."""
        b = room(rv)
        ev = b.build("m.room.member", BOB, {"membership": "join"})
        assert rejected_rule(ev, b.state) == m(rv, "missing")

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_unknown_membership_rejected(self, rv: RoomVersion) -> None:
        """Unknown membership values are rejected."""
        b = room(rv, "public")
        assert rejected_rule(member(b, BOB, BOB, "dance"), b.state) == m(rv, "unknown")


class TestJoin:
    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_creator_first_join_allowed(self, rv: RoomVersion) -> None:
        """x.1: right after the create event the creator may join."""
        b = RoomBuilder(rv)
        b.create()
        check_auth(member(b, ALICE, ALICE, "join"), b.state)

    def test_creator_field_v10(self) -> None:
        """v10: the creator is content.creator, not the create event's sender."""
        b = RoomBuilder(V.V10)
        b.create({"creator": BOB})
        check_auth(member(b, BOB, BOB, "join"), b.state)
        assert rejected_rule(member(b, ALICE, ALICE, "join"), b.state) == j(V.V10, "otherwise")

    @pytest.mark.parametrize("rv", [V.V11, V.V12], ids=ids)
    def test_creator_is_sender_v11(self, rv: RoomVersion) -> None:
        """v11+: the creator is the create event's sender; content.creator means nothing."""
        b = RoomBuilder(rv)
        b.create({"creator": BOB})
        check_auth(member(b, ALICE, ALICE, "join"), b.state)
        assert rejected_rule(member(b, BOB, BOB, "join"), b.state) == j(rv, "otherwise")

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_join_for_someone_else_rejected(self, rv: RoomVersion) -> None:
        """x.2: sender must be the state_key."""
        b = room(rv, "public")
        assert rejected_rule(member(b, ALICE, BOB, "join"), b.state) == j(rv, "sender")

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_banned_join_rejected(self, rv: RoomVersion) -> None:
        """x.3: a banned user cannot join, even a public room."""
        b = room(rv, "public")
        b.member(ALICE, BOB, "ban")
        assert rejected_rule(member(b, BOB, BOB, "join"), b.state) == j(rv, "banned")

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_invite_only(self, rv: RoomVersion) -> None:
        """x.4: invite rooms need an invite (or an existing join)."""
        b = room(rv, "invite")
        assert rejected_rule(member(b, BOB, BOB, "join"), b.state) == j(rv, "otherwise")
        b.invite(ALICE, BOB)
        check_auth(member(b, BOB, BOB, "join"), b.state)
        b.join(BOB)
        check_auth(member(b, BOB, BOB, "join", displayname="B"), b.state)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_public_allowed(self, rv: RoomVersion) -> None:
        """Public rooms can be joined by anyone not banned."""
        b = room(rv, "public")
        check_auth(member(b, BOB, BOB, "join"), b.state)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_private_rejected(self, rv: RoomVersion) -> None:
        """Other join rules reject."""
        b = room(rv, "private")
        assert rejected_rule(member(b, BOB, BOB, "join"), b.state) == j(rv, "otherwise")

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_no_join_rules_acts_as_invite(self, rv: RoomVersion) -> None:
        """Without m.room.join_rules an invited user may join, others may not (NOTSPEC default)."""
        b = RoomBuilder(rv)
        b.create()
        b.join(ALICE)
        assert rejected_rule(member(b, BOB, BOB, "join"), b.state) == j(rv, "otherwise")
        b.invite(ALICE, BOB)
        check_auth(member(b, BOB, BOB, "join"), b.state)

    @pytest.mark.parametrize("rv", [V.V6, V.V7], ids=ids)
    def test_knock_join_rule_v6_v7(self, rv: RoomVersion) -> None:
        """The knock join rule admits invited users only from v7."""
        b = room(rv, "knock")
        b.invite(ALICE, BOB)
        ev = member(b, BOB, BOB, "join")
        if rv.knock_join_rule:
            check_auth(ev, b.state)
        else:
            assert rejected_rule(ev, b.state) == j(rv, "otherwise")


def signed_join(b: RoomBuilder, user: str, via: object, signers: tuple[str, ...] = ("example.org",)) -> Event:
    sigs = {s: {"ed25519:1": "c2ln"} for s in signers}
    return b.build(
        "m.room.member",
        user,
        {"membership": "join", "join_authorised_via_users_server": via},
        user,
        extra={"signatures": sigs},
    )


class TestRestricted:
    @pytest.mark.parametrize("rv", [V.V7, V.V8, V.V9, V.V12], ids=ids)
    def test_restricted_join(self, rv: RoomVersion) -> None:
        """restricted joins via an authorising member work from v8; v7 rejects them."""
        b = room(rv, "restricted")
        ev = signed_join(b, DAVE, ALICE, ("other.org", "example.org"))
        if rv.restricted_join_rule:
            check_auth(ev, b.state)
            assert ("m.room.member", ALICE) in auth_types_for_event(ev, rv)
        else:
            assert rejected_rule(ev, b.state) == j(rv, "otherwise")
            assert ("m.room.member", ALICE) not in auth_types_for_event(ev, rv)

    @pytest.mark.parametrize("rv", [V.V9, V.V10, V.V11], ids=ids)
    def test_knock_restricted_join(self, rv: RoomVersion) -> None:
        """knock_restricted acts as restricted from v10; v9 does not know it."""
        b = room(rv, "knock_restricted")
        ev = signed_join(b, DAVE, ALICE, ("other.org", "example.org"))
        if rv.knock_restricted_join_rule:
            check_auth(ev, b.state)
        else:
            assert rejected_rule(ev, b.state) == j(rv, "otherwise")

    @pytest.mark.parametrize("rv", [V.V8, V.V10, V.V12], ids=ids)
    def test_invited_user_joins_restricted(self, rv: RoomVersion) -> None:
        """x.5.1: an invited user needs no authorising user."""
        b = room(rv, "restricted")
        b.invite(ALICE, BOB)
        check_auth(member(b, BOB, BOB, "join"), b.state)

    @pytest.mark.parametrize("rv", [V.V8, V.V10, V.V12], ids=ids)
    def test_restricted_without_via_rejected(self, rv: RoomVersion) -> None:
        """x.5.2: without join_authorised_via_users_server the join is rejected."""
        b = room(rv, "restricted")
        assert rejected_rule(member(b, BOB, BOB, "join"), b.state) == j(rv, "restricted", 2)

    @pytest.mark.parametrize("rv", [V.V8, V.V12], ids=ids)
    def test_via_user_not_joined_rejected(self, rv: RoomVersion) -> None:
        """x.5.2: the authorising user must be joined."""
        b = room(rv, "restricted")
        ev = signed_join(b, BOB, CAROL)
        assert rejected_rule(ev, b.state) == j(rv, "restricted", 2)

    @pytest.mark.parametrize("rv", [V.V8, V.V12], ids=ids)
    def test_via_user_cannot_invite_rejected(self, rv: RoomVersion) -> None:
        """x.5.2: the authorising user must reach the invite level."""
        b = room(rv, "public")
        b.join(CAROL)
        b.set_power_levels(ALICE, invite=50)
        b.add("m.room.join_rules", ALICE, {"join_rule": "restricted"}, "")
        assert rejected_rule(signed_join(b, BOB, CAROL), b.state) == j(rv, "restricted", 2)

    @pytest.mark.parametrize("rv", [V.V8, V.V11, V.V12], ids=ids)
    def test_unsigned_by_authorising_server_rejected(self, rv: RoomVersion) -> None:
        """x.2.1 (v8+): the event must be signed by the authorising user's server."""
        b = room(rv, "restricted")
        ev = signed_join(b, DAVE, ALICE, ("other.org",))
        assert rejected_rule(ev, b.state) == m(rv, "via", 1)
        assert join_authorising_server(ev) == "example.org"

    @pytest.mark.parametrize("via", [5, "not-a-user", None])
    def test_malformed_via_rejected(self, via: object) -> None:
        """x.2.1: a malformed join_authorised_via_users_server is rejected."""
        b = room(V.V10, "restricted")
        ev = signed_join(b, DAVE, via, ("other.org", "example.org"))
        assert rejected_rule(ev, b.state) == "4.2.1"
        assert join_authorising_server(ev) is None

    def test_via_ignored_before_v8(self) -> None:
        """v7 ignores join_authorised_via_users_server entirely."""
        b = room(V.V7, "public")
        ev = signed_join(b, DAVE, 5, ("other.org",))
        check_auth(ev, b.state)
        assert join_authorising_server(ev) is None


def _b64(data: bytes, urlsafe: bool = False) -> str:
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return enc(data).decode().rstrip("=")


class TestThirdPartyInvite:
    key = nacl.signing.SigningKey(b"\x01" * 32)
    other_key = nacl.signing.SigningKey(b"\x02" * 32)

    def _signed(
        self, mxid: str = BOB, token: str = "tok", key: nacl.signing.SigningKey | None = None
    ) -> dict[str, Any]:
        signed: dict[str, Any] = {"mxid": mxid, "token": token}
        sig = (key or self.key).sign(encode_canonical_json(signed)).signature
        signed["signatures"] = {"id.example": {"ed25519:0": _b64(sig)}}
        return signed

    def _room(self, rv: RoomVersion, public_key: str | None = None, public_keys: Any = None) -> RoomBuilder:
        b = room(rv)
        content: dict[str, Any] = {"display_name": "b", "key_validity_url": "https://id.example/v"}
        content["public_key"] = public_key if public_key is not None else _b64(bytes(self.key.verify_key))
        if public_keys is not None:
            content["public_keys"] = public_keys
        b.add("m.room.third_party_invite", ALICE, content, "tok")
        return b

    def _invite(self, b: RoomBuilder, signed: Any, sender: str = ALICE, target: str = BOB) -> Event:
        return b.build(
            "m.room.member",
            sender,
            {"membership": "invite", "third_party_invite": {"display_name": "b", "signed": signed}},
            target,
        )

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_valid_signature_allowed(self, rv: RoomVersion) -> None:
        """x.1.7: a signature by the invite's public_key allows the invite."""
        b = self._room(rv)
        ev = self._invite(b, self._signed())
        check_auth(ev, b.state)
        assert ("m.room.third_party_invite", "tok") in auth_types_for_event(ev, rv)

    def test_public_keys_list_and_urlsafe_allowed(self) -> None:
        """x.1.7.2: keys in public_keys (URL-safe base64) count too."""
        keys = [{"public_key": _b64(bytes(self.other_key.verify_key), urlsafe=True)}, "junk"]
        b = self._room(V.V11, public_key="!!notbase64", public_keys=keys)
        check_auth(self._invite(b, self._signed(key=self.other_key)), b.state)

    @pytest.mark.parametrize("rv", [V.V1, V.V6, V.V12], ids=ids)
    def test_bad_signature_rejected(self, rv: RoomVersion) -> None:
        """x.1.8: a signature by another key is rejected."""
        b = self._room(rv)
        assert rejected_rule(self._invite(b, self._signed(key=self.other_key)), b.state) == m(
            rv, "invite", 1, 8
        )

    def test_tampered_signed_rejected(self) -> None:
        """x.1.8: the signature covers mxid and token."""
        b = self._room(V.V11)
        signed = self._signed(mxid=BOB)
        signed["token"] = "tok"
        signed["extra"] = 1
        assert rejected_rule(self._invite(b, signed), b.state) == "4.4.1.8"

    @pytest.mark.parametrize(
        "sigs",
        [None, "x", {"id.example": "x"}, {"id.example": {"ed25519:0": 5}}, {"id.example": {"rsa:0": "AAAA"}}],
    )
    def test_malformed_signatures_rejected(self, sigs: object) -> None:
        """x.1.8: malformed signatures never verify."""
        b = self._room(V.V11)
        signed = self._signed()
        signed["signatures"] = sigs
        assert rejected_rule(self._invite(b, signed), b.state) == "4.4.1.8"

    def test_target_banned_rejected(self) -> None:
        """x.1.1: banned targets cannot be invited this way."""
        b = self._room(V.V11)
        b.member(ALICE, BOB, "ban")
        assert rejected_rule(self._invite(b, self._signed()), b.state) == "4.4.1.1"

    @pytest.mark.parametrize("signed", [None, "x", 5])
    def test_no_signed_rejected(self, signed: object) -> None:
        """x.1.2: third_party_invite needs a signed object."""
        b = self._room(V.V11)
        assert rejected_rule(self._invite(b, signed), b.state) == "4.4.1.2"

    def test_third_party_invite_not_object_rejected(self) -> None:
        """x.1.2: a non-object third_party_invite has no signed property."""
        b = self._room(V.V11)
        ev = b.build("m.room.member", ALICE, {"membership": "invite", "third_party_invite": "x"}, BOB)
        assert rejected_rule(ev, b.state) == "4.4.1.2"

    @pytest.mark.parametrize("signed", [{"mxid": BOB}, {"token": "tok"}, {"mxid": 1, "token": "tok"}])
    def test_signed_without_mxid_token_rejected(self, signed: dict[str, Any]) -> None:
        """x.1.3: signed needs mxid and token."""
        b = self._room(V.V11)
        assert rejected_rule(self._invite(b, signed), b.state) == "4.4.1.3"

    def test_mxid_mismatch_rejected(self) -> None:
        """x.1.4: mxid must be the state_key."""
        b = self._room(V.V11)
        assert rejected_rule(self._invite(b, self._signed(mxid=CAROL)), b.state) == "4.4.1.4"

    def test_no_matching_invite_event_rejected(self) -> None:
        """x.1.5: an m.room.third_party_invite with the token must exist."""
        b = self._room(V.V11)
        assert rejected_rule(self._invite(b, self._signed(token="other")), b.state) == "4.4.1.5"

    def test_sender_mismatch_rejected(self) -> None:
        """x.1.6: the member event's sender must have sent the third-party invite."""
        b = self._room(V.V11)
        b.join(CAROL)
        assert rejected_rule(self._invite(b, self._signed(), sender=CAROL), b.state) == "4.4.1.6"

    def test_verify_helper_rejects_non_canonical(self) -> None:
        """verify_third_party_signed returns False for content that is not canonical JSON."""
        assert not verify_third_party_signed(
            {"mxid": 1.5, "token": "t", "signatures": {}}, {"public_key": "x"}
        )


class TestInvite:
    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_member_invites(self, rv: RoomVersion) -> None:
        """x.4: a joined sender at the invite level may invite."""
        b = room(rv)
        check_auth(member(b, ALICE, BOB, "invite"), b.state)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_non_member_invite_rejected(self, rv: RoomVersion) -> None:
        """x.2: the sender must be joined."""
        b = room(rv)
        assert rejected_rule(member(b, CAROL, BOB, "invite"), b.state) == m(rv, "invite", 2)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    @pytest.mark.parametrize("current", ["join", "ban"])
    def test_joined_or_banned_target_rejected(self, rv: RoomVersion, current: str) -> None:
        """x.3: joined or banned targets cannot be invited."""
        b = room(rv, "public")
        b.join(BOB) if current == "join" else b.member(ALICE, BOB, "ban")
        assert rejected_rule(member(b, ALICE, BOB, "invite"), b.state) == m(rv, "invite", 3)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_below_invite_level_rejected(self, rv: RoomVersion) -> None:
        """x.5: below the invite level the invite is rejected."""
        b = room(rv, "public")
        b.set_power_levels(ALICE, invite=10)
        b.join(CAROL)
        assert rejected_rule(member(b, CAROL, BOB, "invite"), b.state) == m(rv, "invite", 5)


class TestLeave:
    @pytest.mark.parametrize("rv", ALL, ids=ids)
    @pytest.mark.parametrize("current", ["join", "invite"])
    def test_self_leave_allowed(self, rv: RoomVersion, current: str) -> None:
        """x.1: leaving, or rejecting an invite, is allowed."""
        b = room(rv, "public")
        b.join(BOB) if current == "join" else b.invite(ALICE, BOB)
        check_auth(member(b, BOB, BOB, "leave"), b.state)

    @pytest.mark.parametrize("rv", [V.V6, V.V7], ids=ids)
    def test_rescind_knock_v6_v7(self, rv: RoomVersion) -> None:
        """x.1: rescinding a knock is allowed from v7."""
        b = room(rv, "knock")
        b.member(BOB, BOB, "knock")
        ev = member(b, BOB, BOB, "leave")
        if rv.knock_join_rule:
            check_auth(ev, b.state)
        else:
            assert rejected_rule(ev, b.state) == m(rv, "leave", 1)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    @pytest.mark.parametrize("current", [None, "leave", "ban"])
    def test_self_leave_from_other_states_rejected(self, rv: RoomVersion, current: str | None) -> None:
        """x.1: a user who is not joined/invited cannot leave (nor unban themselves)."""
        b = room(rv, "public")
        if current is not None:
            b.join(BOB)
            b.member(BOB, BOB, "leave") if current == "leave" else b.member(ALICE, BOB, "ban")
        assert rejected_rule(member(b, BOB, BOB, "leave"), b.state) == m(rv, "leave", 1)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_kick_allowed(self, rv: RoomVersion) -> None:
        """x.4: kick level and higher than the target."""
        b = room(rv, "public")
        b.join(BOB)
        check_auth(member(b, ALICE, BOB, "leave"), b.state)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_kick_by_non_member_rejected(self, rv: RoomVersion) -> None:
        """x.2: the kicker must be joined."""
        b = room(rv, "public")
        b.join(BOB)
        b.set_power_levels(ALICE, users=users_with(rv, carol=100))
        assert rejected_rule(member(b, CAROL, BOB, "leave"), b.state) == m(rv, "leave", 2)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_kick_below_kick_level_rejected(self, rv: RoomVersion) -> None:
        """x.5: below the kick level."""
        b = room(rv, "public")
        b.join(BOB)
        b.join(CAROL)
        b.set_power_levels(ALICE, users=users_with(rv, carol=40))
        assert rejected_rule(member(b, CAROL, BOB, "leave"), b.state) == m(rv, "leave", 5)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_kick_equal_level_rejected(self, rv: RoomVersion) -> None:
        """x.5: the target's level must be below the sender's."""
        b = room(rv, "public")
        b.join(BOB)
        b.join(CAROL)
        b.set_power_levels(ALICE, users=users_with(rv, carol=60, bob=60))
        assert rejected_rule(member(b, CAROL, BOB, "leave"), b.state) == m(rv, "leave", 5)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_unban_needs_ban_level(self, rv: RoomVersion) -> None:
        """x.3: unbanning needs the ban level as well as the kick level."""
        b = room(rv, "public")
        b.join(CAROL)
        b.member(ALICE, BOB, "ban")
        b.set_power_levels(ALICE, users=users_with(rv, carol=60), ban=70, kick=50)
        assert rejected_rule(member(b, CAROL, BOB, "leave"), b.state) == m(rv, "leave", 3)
        check_auth(member(b, ALICE, BOB, "leave"), b.state)


class TestBan:
    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_ban_allowed(self, rv: RoomVersion) -> None:
        """x.2: ban level and higher than the target."""
        b = room(rv, "public")
        check_auth(member(b, ALICE, BOB, "ban"), b.state)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    def test_ban_by_non_member_rejected(self, rv: RoomVersion) -> None:
        """x.1: the sender must be joined."""
        b = room(rv, "public")
        b.set_power_levels(ALICE, users=users_with(rv, carol=100))
        assert rejected_rule(member(b, CAROL, BOB, "ban"), b.state) == m(rv, "ban", 1)

    @pytest.mark.parametrize("rv", ALL, ids=ids)
    @pytest.mark.parametrize("carol, bob", [(40, 0), (60, 60), (60, 70)])
    def test_ban_insufficient_rejected(self, rv: RoomVersion, carol: int, bob: int) -> None:
        """x.3: below the ban level, or not above the target."""
        b = room(rv, "public")
        b.join(CAROL)
        b.set_power_levels(ALICE, users=users_with(rv, carol=carol, bob=bob))
        assert rejected_rule(member(b, CAROL, BOB, "ban"), b.state) == m(rv, "ban", 3)


class TestKnock:
    @pytest.mark.parametrize("rv", [V.V6, V.V7], ids=ids)
    def test_knock_v6_v7(self, rv: RoomVersion) -> None:
        """knock is an unknown membership before v7 and allowed in knock rooms from v7."""
        b = room(rv, "knock")
        ev = member(b, BOB, BOB, "knock")
        if rv.knock_join_rule:
            check_auth(ev, b.state)
        else:
            assert rejected_rule(ev, b.state) == m(rv, "unknown")

    @pytest.mark.parametrize("rv", [V.V9, V.V10], ids=ids)
    def test_knock_on_knock_restricted(self, rv: RoomVersion) -> None:
        """x.1: knock_restricted rooms accept knocks from v10."""
        b = room(rv, "knock_restricted")
        ev = member(b, BOB, BOB, "knock")
        if rv.knock_restricted_join_rule:
            check_auth(ev, b.state)
        else:
            assert rejected_rule(ev, b.state) == m(rv, "knock", 1)

    @pytest.mark.parametrize("rv", [V.V7, V.V12], ids=ids)
    @pytest.mark.parametrize("join_rule", ["invite", "public", "restricted"])
    def test_knock_wrong_join_rule_rejected(self, rv: RoomVersion, join_rule: str) -> None:
        """x.1: only knock (and knock_restricted) rooms accept knocks."""
        b = room(rv, join_rule)
        assert rejected_rule(member(b, BOB, BOB, "knock"), b.state) == m(rv, "knock", 1)

    @pytest.mark.parametrize("rv", [V.V7, V.V12], ids=ids)
    def test_knock_for_someone_else_rejected(self, rv: RoomVersion) -> None:
        """x.2: sender must be the state_key."""
        b = room(rv, "knock")
        assert rejected_rule(member(b, ALICE, BOB, "knock"), b.state) == m(rv, "knock", 2)

    @pytest.mark.parametrize("rv", [V.V7, V.V12], ids=ids)
    @pytest.mark.parametrize("current", ["ban", "invite", "join"])
    def test_knock_from_wrong_state_rejected(self, rv: RoomVersion, current: str) -> None:
        """x.4: banned, invited or joined users cannot knock."""
        b = room(rv, "knock")
        if current == "ban":
            b.member(ALICE, BOB, "ban")
        elif current == "invite":
            b.invite(ALICE, BOB)
        else:
            b.invite(ALICE, BOB)
            b.join(BOB)
        assert rejected_rule(member(b, BOB, BOB, "knock"), b.state) == m(rv, "knock", 4)

    def test_knock_after_leave_allowed(self) -> None:
        """x.3: users who left may knock again."""
        b = room(V.V11, "knock")
        b.member(BOB, BOB, "knock")
        b.member(BOB, BOB, "leave")
        check_auth(member(b, BOB, BOB, "knock"), b.state)


class TestV12Creators:
    def test_creator_outranks_any_level(self) -> None:
        """Creators have infinite power: they can ban a user at 100; the reverse is rejected."""
        b = room(V.V12, "public")
        b.join(BOB)
        b.set_power_levels(ALICE, users={BOB: 100})
        check_auth(member(b, ALICE, BOB, "ban"), b.state)
        assert rejected_rule(member(b, BOB, ALICE, "ban"), b.state) == "5.6.3"
        assert rejected_rule(member(b, BOB, ALICE, "leave"), b.state) == "5.5.5"

    def test_additional_creators_are_creators(self) -> None:
        """additional_creators share infinite power; creators cannot kick each other."""
        b = room(V.V12, "public", create_content={"additional_creators": [BOB]})
        b.join(BOB)
        b.join(CAROL)
        b.set_power_levels(ALICE, users={CAROL: 100})
        check_auth(member(b, BOB, CAROL, "ban"), b.state)
        assert rejected_rule(member(b, ALICE, BOB, "ban"), b.state) == "5.6.3"

    def test_v11_additional_creators_have_no_power(self) -> None:
        """Before v12 additional_creators is meaningless."""
        b = room(V.V11, "public", create_content={"additional_creators": [BOB]})
        b.join(BOB)
        assert rejected_rule(member(b, BOB, ALICE, "ban"), b.state) == "4.6.3"

    def test_non_creator_first_join_not_special(self) -> None:
        """x.3.1 applies to the create event's sender only, not additional creators."""
        b = RoomBuilder(V.V12)
        b.create({"additional_creators": [BOB]})
        assert rejected_rule(member(b, BOB, BOB, "join"), b.state) == "5.3.7"


def test_make_event_v12_non_create_needs_room_id() -> None:
    """Sanity check of the factory: v12 non-create events carry the derived room ID."""
    b = RoomBuilder(V.V12)
    b.create()
    ev = make_event(V.V12, "m.room.message", ALICE, {}, room_id=b.room_id)
    assert ev.room_id == "!" + b.create_event.event_id[1:]  # type: ignore[union-attr]
