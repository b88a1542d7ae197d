"""Room state reads: GET /state, /state/{type}/{key}, /members (both databases)."""

from __future__ import annotations

from typing import Any

from tests.homeserver.test_messages import ReadsTestCase
from tests.homeserver.test_rooms_core import V3
from tests.unittest import FakeChannel


class StateReadsTestCase(ReadsTestCase):
    def get(self, path: str, token: str | None = None) -> FakeChannel:
        return self.make_request("GET", f"{V3}{path}", access_token=token or self.alice)

    def put_state(self, room_id: str, etype: str, content: dict[str, Any], key: str = "") -> str:
        channel = self.make_request("PUT", f"{V3}/rooms/{room_id}/state/{etype}/{key}", content,
                                    access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        event_id: str = channel.json_body["event_id"]
        return event_id

    def join(self, room_id: str, token: str) -> None:
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=token).code, 200)

    def leave(self, room_id: str, token: str) -> None:
        self.assertEqual(self.make_request("POST", f"{V3}/rooms/{room_id}/leave", {}, access_token=token).code, 200)

    def member_keys(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        return [(e["state_key"], e["content"]["membership"]) for e in body["chunk"]]


class StateTests(StateReadsTestCase):
    def test_full_state_for_member(self) -> None:
        """A member gets every current state event as client events."""
        room_id = self.create_room(name="Lobby")
        channel = self.get(f"/rooms/{room_id}/state")
        self.assertEqual(channel.code, 200, channel.json_body)
        keys = {(e["type"], e["state_key"]) for e in channel.json_body}
        for key in (("m.room.create", ""), ("m.room.member", "@alice:test:8448"), ("m.room.name", ""),
                    ("m.room.power_levels", ""), ("m.room.join_rules", "")):
            self.assertIn(key, keys)
        self.assertTrue(all(e["room_id"] == room_id and "event_id" in e for e in channel.json_body))

    def test_single_state_event_and_formats(self) -> None:
        """Content by default (with or without the trailing slash), the whole event with
        format=event, 404 M_NOT_FOUND when unset, 400 for an unknown format."""
        room_id = self.create_room(name="Lobby")
        for path in ("/state/m.room.name", "/state/m.room.name/"):
            channel = self.get(f"/rooms/{room_id}{path}")
            self.assertEqual((channel.code, channel.json_body), (200, {"name": "Lobby"}), path)
        event = self.get(f"/rooms/{room_id}/state/m.room.name/?format=event").json_body
        self.assertEqual((event["type"], event["state_key"], event["content"]), ("m.room.name", "", {"name": "Lobby"}))
        self.assertTrue(event["event_id"].startswith("$"))
        member = self.get(f"/rooms/{room_id}/state/m.room.member/@alice:test:8448").json_body
        self.assertEqual(member["membership"], "join")
        missing = self.get(f"/rooms/{room_id}/state/m.room.topic")
        self.assertEqual((missing.code, missing.json_body["errcode"]), (404, "M_NOT_FOUND"))
        self.assertEqual(self.get(f"/rooms/{room_id}/state/m.room.name?format=xml").code, 400)

    def test_departed_user_sees_state_as_of_leave(self) -> None:
        """After leaving, a user reads the state at their departure, not later changes."""
        room_id = self.create_room(preset="public_chat", name="Before")
        self.join(room_id, self.bob)
        self.leave(room_id, self.bob)
        self.put_state(room_id, "m.room.name", {"name": "After"})
        self.assertEqual(self.get(f"/rooms/{room_id}/state/m.room.name", self.bob).json_body, {"name": "Before"})
        state = {(e["type"], e["state_key"]): e for e in self.get(f"/rooms/{room_id}/state", self.bob).json_body}
        self.assertEqual(state[("m.room.member", "@bob:test:8448")]["content"]["membership"], "leave")
        self.assertEqual(self.get(f"/rooms/{room_id}/state/m.room.name").json_body, {"name": "After"})

    def test_non_members_forbidden_unless_world_readable(self) -> None:
        """Never-members, invitees and users banned without ever joining get 403 (unknown rooms too);
        a world_readable room's current state is open to anyone."""
        room_id = self.create_room(preset="public_chat")
        self.make_request("POST", f"{V3}/rooms/{room_id}/ban", {"user_id": "@bob:test:8448"}, access_token=self.alice)
        for path in ("/state", "/state/m.room.create", "/members"):
            channel = self.get(f"/rooms/{room_id}{path}", self.bob)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"), path)
            self.assertEqual(self.get(f"/rooms/!unknown:test:8448{path}").code, 403)
            self.assertEqual(self.get(f"/rooms/bad{path}").code, 400)
        invite_room = self.create_room(invite=["@bob:test:8448"])
        self.assertEqual(self.get(f"/rooms/{invite_room}/state", self.bob).code, 403)
        self.put_state(invite_room, "m.room.history_visibility", {"history_visibility": "world_readable"})
        self.assertEqual(self.get(f"/rooms/{invite_room}/state", self.bob).code, 200)
        self.assertEqual(self.get(f"/rooms/{invite_room}/state/m.room.create", self.bob).code, 200)

    def test_redacted_state_event(self) -> None:
        """A redacted state event is served redacted."""
        room_id = self.create_room(name="Secret")
        name_id = self.get(f"/rooms/{room_id}/state/m.room.name?format=event").json_body["event_id"]
        self.assertEqual(
            self.make_request("PUT", f"{V3}/rooms/{room_id}/redact/{name_id}/r", {}, access_token=self.alice).code, 200
        )
        self.assertEqual(self.get(f"/rooms/{room_id}/state/m.room.name").json_body, {})


class MembersTests(StateReadsTestCase):
    def setup_room(self) -> str:
        """alice joined, bob joined then left, carol invited."""
        self.register_user("carol")
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        self.leave(room_id, self.bob)
        self.make_request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": "@carol:test:8448"}, access_token=self.alice)
        return room_id

    def test_members_and_filters(self) -> None:
        """All members; membership=; not_membership=; both together are an "or"; bad values are 400."""
        room_id = self.setup_room()
        everyone = {("@alice:test:8448", "join"), ("@bob:test:8448", "leave"), ("@carol:test:8448", "invite")}

        def members(query: str = "") -> set[tuple[str, str]]:
            channel = self.get(f"/rooms/{room_id}/members{query}")
            self.assertEqual(channel.code, 200, channel.json_body)
            return set(self.member_keys(channel.json_body))

        self.assertEqual(members(), everyone)
        self.assertEqual(members("?membership=join"), {("@alice:test:8448", "join")})
        self.assertEqual(members("?not_membership=leave"), everyone - {("@bob:test:8448", "leave")})
        # membership=leave OR not invite -> alice and bob.
        self.assertEqual(members("?membership=leave&not_membership=invite"),
                         {("@alice:test:8448", "join"), ("@bob:test:8448", "leave")})
        for query in ("?membership=joined", "?not_membership=x", "?at=nonsense"):
            self.assertEqual(self.get(f"/rooms/{room_id}/members{query}").code, 400, query)

    def test_members_at_token(self) -> None:
        """``at`` gives the members at that point (pagination or sync token); a departed user's view
        stops at their leave."""
        self.register_user("carol")
        room_id = self.create_room(preset="public_chat")
        early_token = self.sync_token()
        self.join(room_id, self.bob)
        self.leave(room_id, self.bob)
        carol = self.login("carol")["access_token"]
        self.join(room_id, carol)
        now = {("@alice:test:8448", "join"), ("@bob:test:8448", "leave"), ("@carol:test:8448", "join")}
        self.assertEqual(set(self.member_keys(self.get(f"/rooms/{room_id}/members").json_body)), now)
        at_messages = self.ok_messages(room_id, limit=3)["end"]
        for at in (early_token, at_messages):
            body = self.get(f"/rooms/{room_id}/members?at={at}").json_body
            self.assertEqual(set(self.member_keys(body)), {("@alice:test:8448", "join")}, at)
        # Bob left before carol joined: even "now" his view is the one at his leave.
        bob_view = set(self.member_keys(self.get(f"/rooms/{room_id}/members?at={self.sync_token()}", self.bob).json_body))
        self.assertEqual(bob_view, {("@alice:test:8448", "join"), ("@bob:test:8448", "leave")})
        self.assertEqual(set(self.member_keys(self.get(f"/rooms/{room_id}/members", self.bob).json_body)), bob_view)
