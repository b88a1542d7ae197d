"""Knocking and restricted joins across servers, and bad input to the membership servlets."""

from __future__ import annotations

import urllib.parse
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sc_proto.crypto.keys import generate_signing_key, get_key_id
from sc_proto.events.builder import finalise_event
from sc_proto.federation.requests import fill_membership_template
from sc_proto.room_versions import get_room_version
from tests.federation.harness import FederationTestCase


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class KnockTests(FederationTestCase):
    def _knock_room(self) -> tuple[str, str, str]:
        bob, bob_token = self.user_on(self.b, "bob")
        room_id = self.create_room(
            self.b, bob_token, preset="private_chat", name="Knock here",
            initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        )
        return bob, bob_token, room_id

    def test_knock_on_a_remote_room(self) -> None:
        """A's user knocks on B's knockable room: B records the knock, A's sync shows ``knock`` with
        the knock_room_state B sent."""
        _, _, room_id = self._knock_room()
        alice, alice_token = self.user_on(self.a, "alice")
        channel = self.request(
            self.a, "POST", f"/_matrix/client/v3/knock/{q(room_id)}?via={q(self.b.name)}", {"reason": "hi"}, alice_token
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.membership_on(self.b, room_id, alice), "knock")
        self.assertEqual(self.membership_on(self.a, room_id, alice), "knock")
        sync = self.request(self.a, "GET", "/_matrix/client/v3/sync", None, alice_token).json_body
        events = sync["rooms"]["knock"][room_id]["knock_state"]["events"]
        names = [e["content"].get("name") for e in events if e["type"] == "m.room.name"]
        self.assertEqual(names, ["Knock here"])

    def test_knock_then_invite_then_join(self) -> None:
        """After a knock the resident invites the knocker, who joins with a plain /join."""
        _, bob_token, room_id = self._knock_room()
        alice, alice_token = self.user_on(self.a, "alice")
        self.request(self.a, "POST", f"/_matrix/client/v3/knock/{q(room_id)}?via={q(self.b.name)}", {}, alice_token)
        channel = self.request(
            self.b, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": alice}, bob_token
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.membership_on(self.a, room_id, alice), "invite")
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/join", {}, alice_token)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.membership_on(self.b, room_id, alice), "join")

    def test_knock_retracted_with_leave(self) -> None:
        """``/leave`` after a remote knock goes through a server of the room (found from the knock's
        stripped state: the knock itself was sent by us)."""
        _, _, room_id = self._knock_room()
        alice, alice_token = self.user_on(self.a, "alice")
        self.request(self.a, "POST", f"/_matrix/client/v3/knock/{q(room_id)}?via={q(self.b.name)}", {}, alice_token)
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {}, alice_token)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.membership_on(self.b, room_id, alice), "leave")
        self.assertEqual(self.membership_on(self.a, room_id, alice), "leave")

    def test_knock_on_a_public_room_is_refused(self) -> None:
        """make_knock answers 403 when the join rule is not knock; nothing is stored."""
        _, bob_token = self.user_on(self.b, "bob")
        alice, alice_token = self.user_on(self.a, "alice")
        room_id = self.create_room(self.b, bob_token, preset="public_chat")
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/knock/{q(room_id)}?via={q(self.b.name)}", {}, alice_token)
        self.assertEqual(channel.code, 403, channel.json_body)
        self.assertIsNone(self.membership_on(self.b, room_id, alice))


class RestrictedJoinTests(FederationTestCase):
    def _rooms(self) -> tuple[str, str, str]:
        _, bob_token = self.user_on(self.b, "bob")
        space = self.create_room(self.b, bob_token, preset="public_chat")
        restricted = self.create_room(
            self.b, bob_token, preset="private_chat", room_version="10",
            initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {
                "join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}}],
        )
        return bob_token, space, restricted

    def test_restricted_join_authorised_by_a_resident(self) -> None:
        """A member of the allowed room joins the restricted room; B's user authorises and B countersigns."""
        _, space, restricted = self._rooms()
        alice, alice_token = self.user_on(self.a, "alice")
        self.request(self.a, "POST", f"/_matrix/client/v3/join/{q(space)}?via={q(self.b.name)}", {}, alice_token)
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/join/{q(restricted)}?via={q(self.b.name)}", {}, alice_token)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.membership_on(self.b, restricted, alice), "join")
        head = self.get_success(self.a.hs.rooms.creator.get_head(restricted))
        join = self.get_success(self.a.hs.rooms.events.get_event(head.state[("m.room.member", alice)]))
        self.assertEqual(join.event.content["join_authorised_via_users_server"], self.b.user("bob"))
        self.assertEqual(set(join.event.pdu["signatures"]), {self.a.name, self.b.name})

    def test_restricted_join_refused_outside_the_allowed_rooms(self) -> None:
        """A user in none of the allowed rooms is refused with 403."""
        _, _, restricted = self._rooms()
        alice, alice_token = self.user_on(self.a, "alice")
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/join/{q(restricted)}?via={q(self.b.name)}", {}, alice_token)
        self.assertEqual(channel.code, 403, channel.json_body)
        self.assertIsNone(self.membership_on(self.b, restricted, alice))


class BadInputTests(FederationTestCase):
    """Hostile or broken servers get the spec's errors, never a 500, and nothing changes."""

    def setUp(self) -> None:
        super().setUp()
        self.bob, self.bob_token = self.user_on(self.b, "bob")
        self.room_id = self.create_room(self.b, self.bob_token, preset="public_chat", room_version="10")
        self.alice = self.a.user("alice")

    def _template(self, user_id: str | None = None, origin: str | None = None) -> dict[str, Any]:
        user_id = user_id or self.alice
        status, body = self.federation(
            origin or self.a.name, self.b, "GET", f"/_matrix/federation/v1/make_join/{q(self.room_id)}/{q(user_id)}",
            query={"ver": ["10"]},
        )
        self.assertEqual(status, 200, body)
        return body

    def _signed_join(self, key: Any = None, **changes: Any) -> Any:
        rv = get_room_version("10")
        body = self._template()
        filled = fill_membership_template(
            body["event"], room_id=self.room_id, user_id=self.alice, membership="join", origin=self.a.name,
            origin_server_ts=self.clock.time_msec(),
        )
        filled.update(changes)
        key = key or self.a.signing_key
        return finalise_event(filled, rv, self.a.name, get_key_id(key), key)

    def _send_join(self, pdu: Any, event_id: str, origin: str | None = None) -> tuple[int, dict[str, Any]]:
        return self.federation(
            origin or self.a.name, self.b, "PUT", f"/_matrix/federation/v2/send_join/{q(self.room_id)}/{q(event_id)}", pdu
        )

    def assert_unchanged(self) -> None:
        self.assertIsNone(self.membership_on(self.b, self.room_id, self.alice))

    def test_good_send_join_is_accepted(self) -> None:
        """The control case: a well-formed signed join is accepted and answered with state."""
        event = self._signed_join()
        status, body = self._send_join(dict(event.pdu), event.event_id)
        self.assertEqual(status, 200, body)
        self.assertIn("m.room.create", {e["type"] for e in body["state"]})
        self.assertTrue(body["auth_chain"])
        self.assertEqual(self.membership_on(self.b, self.room_id, self.alice), "join")

    def test_wrong_room_version_is_incompatible(self) -> None:
        """make_join without the room's version in ``ver`` is 400 M_INCOMPATIBLE_ROOM_VERSION."""
        for query in ({"ver": ["1", "2"]}, {}):
            status, body = self.federation(
                self.a.name, self.b, "GET", f"/_matrix/federation/v1/make_join/{q(self.room_id)}/{q(self.alice)}",
                query=query,
            )
            self.assertEqual(status, 400, body)
            self.assertEqual(body["errcode"], "M_INCOMPATIBLE_ROOM_VERSION")
            self.assertEqual(body["room_version"], "10")

    def test_make_join_for_another_servers_user_is_forbidden(self) -> None:
        """A server may only ask for its own users (here: one of B's own users)."""
        status, body = self.federation(
            self.a.name, self.b, "GET", f"/_matrix/federation/v1/make_join/{q(self.room_id)}/{q(self.b.user('eve'))}",
            query={"ver": ["10"]},
        )
        self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))

    def test_make_join_of_an_unknown_room_is_404(self) -> None:
        status, body = self.federation(
            self.a.name, self.b, "GET", f"/_matrix/federation/v1/make_join/{q('!nope:b.test:8448')}/{q(self.alice)}",
            query={"ver": ["10"]},
        )
        self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"))

    def test_send_join_not_matching_the_template(self) -> None:
        """A 'join' whose membership is leave, or whose state key is someone else, is 400."""
        rv = get_room_version("10")
        for changes in ({"content": {"membership": "leave"}}, {"state_key": self.a.user("carol")}):
            body = self._template()
            filled = fill_membership_template(
                body["event"], room_id=self.room_id, user_id=self.alice, membership="join", origin=self.a.name,
                origin_server_ts=self.clock.time_msec(),
            )
            filled.update(changes)
            event = finalise_event(filled, rv, self.a.name, get_key_id(self.a.signing_key), self.a.signing_key)
            status, answer = self._send_join(dict(event.pdu), event.event_id)
            self.assertEqual((status, answer["errcode"]), (400, "M_BAD_JSON"), changes)
        self.assert_unchanged()

    def test_send_join_with_a_forged_signature(self) -> None:
        """Signed with a key that is not A's: 403, nothing stored."""
        forger = generate_signing_key(get_key_id(self.a.signing_key).split(":", 1)[1])
        event = self._signed_join(key=forger)
        status, body = self._send_join(dict(event.pdu), event.event_id)
        self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))
        self.assert_unchanged()
        self.assertIsNone(self.get_success(self.b.hs.rooms.events.get_event(event.event_id)))

    def test_send_join_with_a_tampered_content(self) -> None:
        """Content changed after signing (bad hash): 403, nothing stored."""
        event = self._signed_join()
        pdu = dict(event.pdu)
        pdu["content"] = {**pdu["content"], "displayname": "changed"}
        status, body = self._send_join(pdu, event.event_id)
        self.assertIn(status, (400, 403), body)
        self.assert_unchanged()

    def test_join_for_a_user_not_of_the_origin(self) -> None:
        """A's join sent by another origin (here B's own name claimed by a third server) is refused."""
        event = self._signed_join()
        status, body = self._send_join(dict(event.pdu), event.event_id, origin="evil.test")
        self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))
        self.assert_unchanged()

    def test_claims_about_the_residents_own_users(self) -> None:
        """A cannot send a join, leave or invite in the name of one of B's users."""
        rv = get_room_version("10")
        key = self.a.signing_key
        eve = self.b.user("eve")
        for membership, endpoint in (("join", "v2/send_join"), ("leave", "v2/send_leave")):
            status, body = self.federation(
                self.b.name, self.b, "GET", f"/_matrix/federation/v1/make_{membership}/{q(self.room_id)}/{q(self.bob)}",
                query={"ver": ["10"]},
            )
            self.assertEqual(status, 200, body)
            filled = fill_membership_template(
                body["event"], room_id=self.room_id, user_id=self.bob, membership=membership, origin=self.a.name,
                origin_server_ts=self.clock.time_msec(),
            )
            event = finalise_event(filled, rv, self.a.name, get_key_id(key), key)
            status, answer = self.federation(
                self.a.name, self.b, "PUT", f"/_matrix/federation/{endpoint}/{q(self.room_id)}/{q(event.event_id)}",
                dict(event.pdu),
            )
            self.assertEqual((status, answer["errcode"]), (403, "M_FORBIDDEN"), membership)
        self.assertEqual(self.membership_on(self.b, self.room_id, self.bob), "join")
        pdu = {
            "type": "m.room.member", "room_id": "!r:a.test:8448", "sender": eve, "state_key": self.bob,
            "content": {"membership": "invite"}, "origin_server_ts": 1, "depth": 5, "prev_events": [], "auth_events": [],
        }
        event = finalise_event(pdu, rv, self.a.name, get_key_id(key), key)
        status, body = self.federation(
            self.a.name, self.b, "PUT", f"/_matrix/federation/v2/invite/{q('!r:a.test:8448')}/{q(event.event_id)}",
            {"room_version": "10", "event": dict(event.pdu), "invite_room_state": []},
        )
        self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertIsNone(self.membership_on(self.b, "!r:a.test:8448", self.bob))

    def test_retried_refused_join_stays_refused(self) -> None:
        """A join built before a ban is soft-failed (403), and a retry of it is 403 too, not 200."""
        event = self._signed_join()
        ban = self.request(
            self.b, "POST", f"/_matrix/client/v3/rooms/{q(self.room_id)}/ban", {"user_id": self.alice}, self.bob_token
        )
        self.assertEqual(ban.code, 200, ban.json_body)
        for _ in range(2):
            status, body = self._send_join(dict(event.pdu), event.event_id)
            self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(self.membership_on(self.b, self.room_id, self.alice), "ban")

    def test_event_id_not_matching_the_path(self) -> None:
        event = self._signed_join()
        status, body = self._send_join(dict(event.pdu), "$" + "A" * 43)
        self.assertEqual((status, body["errcode"]), (400, "M_BAD_JSON"))
        self.assert_unchanged()

    def test_malformed_bodies(self) -> None:
        """Not an object, missing keys, wrong types: 400, never 500."""
        event = self._signed_join()
        for body in (None, [], "join", {"type": "m.room.member"}, {**dict(event.pdu), "depth": "one"},
                     {**dict(event.pdu), "prev_events": "x"}):
            status, answer = self._send_join(body, event.event_id)
            self.assertEqual(status, 400, (body, answer))
        self.assert_unchanged()

    def test_send_join_to_an_unknown_room(self) -> None:
        event = self._signed_join()
        status, body = self.federation(
            self.a.name, self.b, "PUT", f"/_matrix/federation/v2/send_join/{q('!nope:b.test:8448')}/{q(event.event_id)}",
            dict(event.pdu),
        )
        self.assertEqual(status, 404, body)

    def test_invite_bad_input(self) -> None:
        """Invites: unknown version (400 M_INCOMPATIBLE_ROOM_VERSION), a user not of B (403), a
        sender not of the origin (403), garbage (400)."""
        rv = get_room_version("10")
        alice_key = self.a.signing_key

        def invite(target: str, sender: str, version: str = "10", origin: str | None = None) -> tuple[int, Any]:
            pdu = {
                "type": "m.room.member", "room_id": "!r:a.test:8448", "sender": sender, "state_key": target,
                "content": {"membership": "invite"}, "origin_server_ts": 1, "depth": 5,
                "prev_events": [], "auth_events": [],
            }
            event = finalise_event(pdu, rv, self.a.name, get_key_id(alice_key), alice_key)
            body = {"room_version": version, "event": dict(event.pdu), "invite_room_state": []}
            return self.federation(
                origin or self.a.name, self.b, "PUT", f"/_matrix/federation/v2/invite/{q('!r:a.test:8448')}/{q(event.event_id)}",
                body,
            )

        status, body = invite(self.bob, self.alice, version="999")
        self.assertEqual((status, body["errcode"]), (400, "M_INCOMPATIBLE_ROOM_VERSION"))
        status, body = invite(self.a.user("carol"), self.alice)
        self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))
        status, body = invite(self.bob, self.alice, origin="evil.test")
        self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))
        for garbage in (None, [], {"room_version": "10"}, {"room_version": 10, "event": {}}):
            status, body = self.federation(
                self.a.name, self.b, "PUT", "/_matrix/federation/v2/invite/!r:a.test:8448/$x", garbage
            )
            self.assertEqual(status, 400, (garbage, body))
        self.assertIsNone(self.membership_on(self.b, "!r:a.test:8448", self.bob))

    def test_good_invite_is_signed_and_stored(self) -> None:
        """The control case for invites: B countersigns and its user is invited."""
        rv = get_room_version("10")
        pdu = {
            "type": "m.room.member", "room_id": "!r:a.test:8448", "sender": self.alice, "state_key": self.bob,
            "content": {"membership": "invite"}, "origin_server_ts": 1, "depth": 5, "prev_events": [], "auth_events": [],
        }
        event = finalise_event(pdu, rv, self.a.name, get_key_id(self.a.signing_key), self.a.signing_key)
        status, body = self.federation(
            self.a.name, self.b, "PUT", f"/_matrix/federation/v2/invite/{q('!r:a.test:8448')}/{q(event.event_id)}",
            {"room_version": "10", "event": dict(event.pdu), "invite_room_state": []},
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(set(body["event"]["signatures"]), {self.a.name, self.b.name})
        self.assertEqual(self.membership_on(self.b, "!r:a.test:8448", self.bob), "invite")


class TamperedAnswerTests(FederationTestCase):
    """The joining server checks the resident server's send_join answer before storing anything."""

    def _join_with(self, tamper: Any) -> tuple[int, str]:
        _, bob_token = self.user_on(self.b, "bob")
        _, alice_token = self.user_on(self.a, "alice")
        room_id = self.create_room(self.b, bob_token, preset="public_chat")
        self.network.tamper[(self.b.name, "send_join")] = tamper
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/join/{q(room_id)}?via={q(self.b.name)}", {}, alice_token)
        return channel.code, room_id

    def test_answer_without_create_event(self) -> None:
        def drop_create(body: dict[str, Any]) -> dict[str, Any]:
            for key in ("state", "auth_chain"):
                body[key] = [e for e in body[key] if e["type"] != "m.room.create"]
            return body

        code, room_id = self._join_with(drop_create)
        self.assertEqual(code, 502)
        self.assertIsNone(self.get_success(self.a.hs.rooms.rooms.get_room(room_id)))

    def test_answer_with_unsigned_state(self) -> None:
        """Signatures stripped from every state event: nothing verifies, the join fails."""
        def strip(body: dict[str, Any]) -> dict[str, Any]:
            for key in ("state", "auth_chain"):
                for e in body[key]:
                    e["signatures"] = {}
            return body

        code, room_id = self._join_with(strip)
        self.assertEqual(code, 502)
        self.assertIsNone(self.get_success(self.a.hs.rooms.rooms.get_room(room_id)))

    def test_answer_that_is_not_an_object(self) -> None:
        code, room_id = self._join_with(lambda body: {"state": "x", "auth_chain": 3})
        self.assertEqual(code, 502)
        self.assertIsNone(self.get_success(self.a.hs.rooms.rooms.get_room(room_id)))

    def test_answer_with_a_different_join_event(self) -> None:
        def swap(body: dict[str, Any]) -> dict[str, Any]:
            body["event"] = {**body["event"], "origin_server_ts": 5}
            return body

        code, room_id = self._join_with(swap)
        self.assertEqual(code, 502)
        self.assertIsNone(self.get_success(self.a.hs.rooms.rooms.get_room(room_id)))


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), st.text(max_size=10))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["m.room.member", "m.room.create", 5]), "content": json_values},
    optional={
        "room_id": st.sampled_from(["!r:b.test:8448", 3, None]), "sender": st.sampled_from(["@alice:a.test:8448", 1]),
        "state_key": st.sampled_from(["@alice:a.test:8448", "", None]), "depth": json_values,
        "prev_events": json_values, "auth_events": json_values, "origin_server_ts": json_values,
        "hashes": json_values, "signatures": json_values,
    },
)


class FuzzTests(FederationTestCase):
    """Whatever a peer sends, the membership servlets answer 4xx (never 500) and change nothing."""

    ENDPOINTS = (
        ("PUT", "/_matrix/federation/v2/send_join/{room}/$e"),
        ("PUT", "/_matrix/federation/v2/send_leave/{room}/$e"),
        ("PUT", "/_matrix/federation/v1/send_knock/{room}/$e"),
        ("PUT", "/_matrix/federation/v2/invite/{room}/$e"),
    )

    def setUp(self) -> None:
        super().setUp()
        _, token = self.user_on(self.b, "bob")
        self.room_id = self.create_room(self.b, token, preset="public_chat")

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=st.one_of(json_values, event_like, st.fixed_dictionaries({"room_version": json_values, "event": event_like})))
    def test_garbage_bodies(self, body: Any) -> None:
        for method, pattern in self.ENDPOINTS:
            status, answer = self.federation(self.a.name, self.b, method, pattern.format(room=q(self.room_id)), body)
            self.assertTrue(400 <= status < 500, (pattern, body, answer))
        self.assertIsNone(self.membership_on(self.b, self.room_id, self.a.user("alice")))
