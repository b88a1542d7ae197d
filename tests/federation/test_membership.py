"""Membership across servers: two real homeservers over the in-memory federation transport."""

from __future__ import annotations

import urllib.parse

from tests.federation.harness import FederationTestCase


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class RemoteJoinTests(FederationTestCase):
    def test_join_public_room_by_id(self) -> None:
        """A user of A joins B's public room by ID through server_name; both servers agree."""
        bob, bob_token = self.user_on(self.b, "bob")
        alice, alice_token = self.user_on(self.a, "alice")
        room_id = self.create_room(self.b, bob_token, preset="public_chat", name="B's room")
        channel = self.request(
            self.a, "POST", f"/_matrix/client/v3/join/{q(room_id)}?server_name={q(self.b.name)}", {}, alice_token
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["room_id"], room_id)
        self.assertEqual(self.membership_on(self.a, room_id, alice), "join")
        self.assertEqual(self.membership_on(self.b, room_id, alice), "join")
        self.assertEqual(self.membership_on(self.a, room_id, bob), "join")

    def test_messages_flow_both_ways_after_join(self) -> None:
        """After the join each server accepts the other's events into the room (the join's state
        is a sound base for later PDUs)."""
        _bob, bob_token = self.user_on(self.b, "bob")
        _alice, alice_token = self.user_on(self.a, "alice")
        room_id = self.create_room(self.b, bob_token, preset="public_chat")
        self.request(self.a, "POST", f"/_matrix/client/v3/join/{q(room_id)}?via={q(self.b.name)}", {}, alice_token)
        sent = self.request(
            self.b, "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t1",
            {"msgtype": "m.text", "body": "hello from b"}, bob_token,
        )
        self.assertEqual(sent.code, 200, sent.json_body)
        sent = self.request(
            self.a, "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t2",
            {"msgtype": "m.text", "body": "hello from a"}, alice_token,
        )
        self.assertEqual(sent.code, 200, sent.json_body)
        self.assertEqual(self.network.pdu_failures, [])
        for server, token in ((self.a, alice_token), (self.b, bob_token)):
            channel = self.request(
                server, "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages?dir=b&limit=10", None, token
            )
            bodies = [e["content"].get("body") for e in channel.json_body["chunk"] if e["type"] == "m.room.message"]
            self.assertEqual(bodies, ["hello from a", "hello from b"], server.name)

    def test_join_by_alias_of_the_other_server(self) -> None:
        """``/join/#alias:b`` resolves through the directory port and joins through the alias's server."""
        _, bob_token = self.user_on(self.b, "bob")
        alice, alice_token = self.user_on(self.a, "alice")
        room_id = self.create_room(self.b, bob_token, preset="public_chat", room_alias_name="lobby")
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/join/{q('#lobby:' + self.b.name)}", {}, alice_token)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["room_id"], room_id)
        self.assertEqual(self.membership_on(self.b, room_id, alice), "join")

    def test_sync_shows_the_joined_room_with_its_state(self) -> None:
        """The joining user's /sync lists the room under ``join`` with the room's state."""
        _, bob_token = self.user_on(self.b, "bob")
        _, alice_token = self.user_on(self.a, "alice")
        room_id = self.create_room(self.b, bob_token, preset="public_chat", name="Lobby")
        self.request(self.a, "POST", f"/_matrix/client/v3/join/{q(room_id)}?via={q(self.b.name)}", {}, alice_token)
        sync = self.request(self.a, "GET", "/_matrix/client/v3/sync", None, alice_token).json_body
        room = sync["rooms"]["join"][room_id]
        types = {e["type"] for e in room["state"]["events"] + room["timeline"]["events"]}
        self.assertIn("m.room.create", types)
        self.assertIn("m.room.name", types)

    def test_join_of_an_invite_only_room_is_refused(self) -> None:
        """make_join answers 403 when the rules refuse the join; the client gets 403 and A stores nothing."""
        _, bob_token = self.user_on(self.b, "bob")
        alice, alice_token = self.user_on(self.a, "alice")
        room_id = self.create_room(self.b, bob_token, preset="private_chat")
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/join/{q(room_id)}?via={q(self.b.name)}", {}, alice_token)
        self.assertEqual(channel.code, 403, channel.json_body)
        self.assertIsNone(self.get_success(self.a.hs.rooms.rooms.get_room(room_id)))
        self.assertIsNone(self.membership_on(self.b, room_id, alice))

    def test_unreachable_server_then_a_working_one(self) -> None:
        """Servers are tried in order: an unreachable one is skipped."""
        _, bob_token = self.user_on(self.b, "bob")
        alice, alice_token = self.user_on(self.a, "alice")
        room_id = self.create_room(self.b, bob_token, preset="public_chat")
        channel = self.request(
            self.a, "POST",
            f"/_matrix/client/v3/join/{q(room_id)}?via=nowhere.test&via={q(self.b.name)}", {}, alice_token,
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.membership_on(self.b, room_id, alice), "join")

    def test_only_unreachable_servers_is_502(self) -> None:
        """No server answers: 502, nothing stored."""
        _, alice_token = self.user_on(self.a, "alice")
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/join/{q('!x:nowhere.test')}?via=nowhere.test", {}, alice_token)
        self.assertEqual(channel.code, 502, channel.json_body)


class RemoteInviteTests(FederationTestCase):
    def _invite(self) -> tuple[str, str, str, str, str]:
        alice, alice_token = self.user_on(self.a, "alice")
        bob, bob_token = self.user_on(self.b, "bob")
        room_id = self.create_room(self.a, alice_token, preset="private_chat", name="Secret plans")
        channel = self.request(
            self.a, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": bob}, alice_token
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        return alice, alice_token, bob, bob_token, room_id

    def test_invite_is_countersigned_and_shown_in_sync(self) -> None:
        """A's user invites B's user: B signs, A persists the invite with both signatures, and B's
        user sees it in sync's ``invite`` section with the stripped state."""
        _, _, bob, bob_token, room_id = self._invite()
        self.assertEqual(self.membership_on(self.a, room_id, bob), "invite")
        head = self.get_success(self.a.hs.rooms.creator.get_head(room_id))
        stored = self.get_success(self.a.hs.rooms.events.get_event(head.state[("m.room.member", bob)]))
        self.assertEqual(set(stored.event.pdu["signatures"]), {self.a.name, self.b.name})
        sync = self.request(self.b, "GET", "/_matrix/client/v3/sync", None, bob_token).json_body
        events = sync["rooms"]["invite"][room_id]["invite_state"]["events"]
        by_type = {e["type"]: e for e in events}
        self.assertEqual(by_type["m.room.name"]["content"]["name"], "Secret plans")
        self.assertEqual(by_type["m.room.member"]["content"]["membership"], "invite")
        self.assertEqual(by_type["m.room.member"]["state_key"], bob)

    def test_invitee_accepts_with_a_plain_join(self) -> None:
        """``/rooms/{id}/join`` with no server names joins through the inviting server."""
        alice, _alice_token, bob, bob_token, room_id = self._invite()
        channel = self.request(self.b, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/join", {}, bob_token)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.membership_on(self.a, room_id, bob), "join")
        self.assertEqual(self.membership_on(self.b, room_id, bob), "join")
        self.assertEqual(self.membership_on(self.b, room_id, alice), "join")
        sync = self.request(self.b, "GET", "/_matrix/client/v3/sync", None, bob_token).json_body
        self.assertIn(room_id, sync["rooms"]["join"])
        self.assertNotIn(room_id, sync["rooms"].get("invite", {}))

    def test_invitee_rejects_through_make_leave(self) -> None:
        """Rejecting a remote invite (``/leave`` in a room we are not in) goes through make/send_leave."""
        _, _, bob, bob_token, room_id = self._invite()
        channel = self.request(self.b, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {}, bob_token)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.membership_on(self.a, room_id, bob), "leave")
        self.assertEqual(self.membership_on(self.b, room_id, bob), "leave")
        self.assertIn("send_leave", " ".join(r.path for r in self.network.requests))
        sync = self.request(self.b, "GET", "/_matrix/client/v3/sync", None, bob_token).json_body
        self.assertNotIn(room_id, sync["rooms"].get("invite", {}))

    def test_invite_to_an_unreachable_server_fails_and_stores_nothing(self) -> None:
        """The invitee's server must countersign: unreachable means 502 and no invite event."""
        _, alice_token = self.user_on(self.a, "alice")
        room_id = self.create_room(self.a, alice_token, preset="private_chat")
        channel = self.request(
            self.a, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": "@x:nowhere.test"}, alice_token
        )
        self.assertEqual(channel.code, 502, channel.json_body)
        self.assertIsNone(self.membership_on(self.a, room_id, "@x:nowhere.test"))


class RemoteLeaveTests(FederationTestCase):
    def _joined(self) -> tuple[str, str, str, str, str]:
        bob, bob_token = self.user_on(self.b, "bob")
        alice, alice_token = self.user_on(self.a, "alice")
        room_id = self.create_room(self.b, bob_token, preset="public_chat")
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/join/{q(room_id)}?via={q(self.b.name)}", {}, alice_token)
        self.assertEqual(channel.code, 200, channel.json_body)
        return alice, alice_token, bob, bob_token, room_id

    def test_remote_member_leaves(self) -> None:
        """A's user leaves B's room: both servers see the leave."""
        alice, alice_token, _, _, room_id = self._joined()
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {}, alice_token)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.membership_on(self.a, room_id, alice), "leave")
        self.assertEqual(self.membership_on(self.b, room_id, alice), "leave")

    def test_resident_kicks_remote_member(self) -> None:
        """B's user kicks A's user: the kick reaches A."""
        alice, _, _, bob_token, room_id = self._joined()
        channel = self.request(
            self.b, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/kick", {"user_id": alice}, bob_token
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.membership_on(self.b, room_id, alice), "leave")
        self.assertEqual(self.membership_on(self.a, room_id, alice), "leave")

    def test_rejoin_after_leaving_goes_through_the_resident_server(self) -> None:
        """With none of our users left in the room, a rejoin is a remote join again."""
        alice, alice_token, _, _, room_id = self._joined()
        self.request(self.a, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {}, alice_token)
        before = len([r for r in self.network.requests if "make_join" in r.path])
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/join", {}, alice_token)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(len([r for r in self.network.requests if "make_join" in r.path]), before + 1)
        self.assertEqual(self.membership_on(self.b, room_id, alice), "join")

    def test_banned_remote_user_cannot_rejoin(self) -> None:
        """B bans A's user; a rejoin is refused at make_join (403) and nothing changes."""
        alice, alice_token, _, bob_token, room_id = self._joined()
        self.request(self.b, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/ban", {"user_id": alice}, bob_token)
        self.assertEqual(self.membership_on(self.a, room_id, alice), "ban")
        channel = self.request(self.a, "POST", f"/_matrix/client/v3/join/{q(room_id)}?via={q(self.b.name)}", {}, alice_token)
        self.assertEqual(channel.code, 403, channel.json_body)
        self.assertEqual(self.membership_on(self.b, room_id, alice), "ban")


class InviteIntoASharedRoomTests(FederationTestCase):
    def test_invite_to_a_room_the_invitees_server_is_in(self) -> None:
        """B is already in A's room: B's server takes the invite through its room input (not out of
        band) and its user joins locally, without another make_join."""
        _, alice_token = self.user_on(self.a, "alice")
        _, bob_token = self.user_on(self.b, "bob")
        carol, carol_token = self.user_on(self.b, "carol")
        room_id = self.create_room(self.a, alice_token, preset="public_chat")
        self.request(self.b, "POST", f"/_matrix/client/v3/join/{q(room_id)}?via={q(self.a.name)}", {}, bob_token)
        channel = self.request(
            self.a, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": carol}, alice_token
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.membership_on(self.b, room_id, carol), "invite")
        make_joins = len([r for r in self.network.requests if "make_join" in r.path])
        channel = self.request(self.b, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/join", {}, carol_token)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(len([r for r in self.network.requests if "make_join" in r.path]), make_joins)
        self.assertEqual(self.membership_on(self.a, room_id, carol), "join")
        self.assertEqual(self.network.pdu_failures, [])


class RoomVersionsTests(FederationTestCase):
    def test_join_and_talk_in_every_event_format(self) -> None:
        """Rooms v1 (event IDs with a domain, [id, hashes] references), v3, v4-v11 and v12 (room ID
        from the create event) all join across servers and take messages afterwards."""
        _, bob_token = self.user_on(self.b, "bob")
        alice, alice_token = self.user_on(self.a, "alice")
        for version in ("1", "3", "10", "11", "12"):
            room_id = self.create_room(self.b, bob_token, preset="public_chat", room_version=version)
            channel = self.request(
                self.a, "POST", f"/_matrix/client/v3/join/{q(room_id)}?via={q(self.b.name)}", {}, alice_token
            )
            self.assertEqual(channel.code, 200, (version, channel.json_body))
            self.assertEqual(self.membership_on(self.b, room_id, alice), "join", version)
            sent = self.request(
                self.a, "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/v{version}",
                {"msgtype": "m.text", "body": version}, alice_token,
            )
            self.assertEqual(sent.code, 200, sent.json_body)
        self.assertEqual(self.network.pdu_failures, [])
