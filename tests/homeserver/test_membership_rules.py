"""Membership rules end to end through the HTTP API: knocking, restricted joins, forgetting,
kick/ban/unban power, banned joiners and invites (both databases)."""

from __future__ import annotations

from typing import Any

from tests.homeserver.test_rooms_core import V3, RoomsTestCase


class MembershipRulesTestCase(RoomsTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.register_user("carol")
        self.carol = self.login("carol")["access_token"]

    def post(self, path: str, token: str, body: Any = None) -> Any:
        return self.make_request("POST", f"{V3}{path}", body if body is not None else {}, access_token=token)

    def membership(self, room_id: str, user_id: str) -> tuple[str | None, dict[str, Any]]:
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))
        assert head is not None
        key = ("m.room.member", user_id)
        event = self.get_success(self.hs.rooms.creator.get_state_events(head.state, [key])).get(key)
        return (None, {}) if event is None else (event.membership, dict(event.content))

    def room_with_rule(self, version: str, rule: str, allow: list[str] | None = None, **body: Any) -> str:
        content: dict[str, Any] = {"join_rule": rule}
        if allow is not None:
            content["allow"] = [{"type": "m.room_membership", "room_id": r} for r in allow]
        return self.create_room(
            room_version=version, preset="private_chat",
            initial_state=[{"type": "m.room.join_rules", "content": content}], **body,
        )


class KnockTests(MembershipRulesTestCase):
    def test_knock_then_invite_then_join(self) -> None:
        """v7+: a knock is accepted in a knock room; the knocker can then be invited and join."""
        for version in ("7", "11", "12"):
            room_id = self.room_with_rule(version, "knock")
            knock = self.post(f"/knock/{room_id}", self.bob, {"reason": "let me in"})
            self.assertEqual(knock.code, 200, (version, knock.json_body))
            self.assertEqual(knock.json_body, {"room_id": room_id})
            membership, content = self.membership(room_id, "@bob:test:8448")
            self.assertEqual((membership, content.get("reason")), ("knock", "let me in"))
            # A knocker cannot join by themselves.
            self.assertEqual(self.post(f"/join/{room_id}", self.bob).code, 403)
            invite = self.post(f"/rooms/{room_id}/invite", self.alice, {"user_id": "@bob:test:8448"})
            self.assertEqual(invite.code, 200, invite.json_body)
            self.assertEqual(self.post(f"/join/{room_id}", self.bob).code, 200)
            self.assertEqual(self.membership(room_id, "@bob:test:8448")[0], "join")

    def test_knock_refused_before_v7(self) -> None:
        """v6 has no knocking: a knock is 403 even with a 'knock' join rule, and nothing is stored."""
        room_id = self.room_with_rule("6", "knock")
        channel = self.post(f"/knock/{room_id}", self.bob)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(self.membership(room_id, "@bob:test:8448")[0], None)

    def test_knock_refused_without_knock_rule(self) -> None:
        """Knocking on invite-only or public rooms, or while joined, is refused."""
        invite_only = self.create_room(room_version="11")
        self.assertEqual(self.post(f"/knock/{invite_only}", self.bob).code, 403)
        public = self.create_room(room_version="11", preset="public_chat")
        self.assertEqual(self.post(f"/knock/{public}", self.bob).code, 403)
        knock_room = self.room_with_rule("11", "knock")
        self.assertEqual(self.post(f"/knock/{knock_room}", self.alice).code, 403)  # already joined

    def test_knock_by_alias_and_bad_targets(self) -> None:
        room_id = self.room_with_rule("11", "knock", room_alias_name="door")
        channel = self.post("/knock/%23door:test:8448", self.bob)
        self.assertEqual((channel.code, channel.json_body.get("room_id")), (200, room_id))
        self.assertEqual(self.post("/knock/%23nodoor:test:8448", self.carol).code, 404)
        self.assertEqual(self.post("/knock/!unknown:test:8448", self.carol).code, 404)
        self.assertEqual(self.post("/knock/garbage", self.carol).code, 400)
        self.assertEqual(self.make_request("POST", f"{V3}/knock/{room_id}", {}).code, 401)

    def test_knocker_may_withdraw_and_be_refused(self) -> None:
        """A knocker may leave (withdraw); a moderator may refuse a knock by kicking it."""
        room_id = self.room_with_rule("11", "knock")
        self.post(f"/knock/{room_id}", self.bob)
        self.assertEqual(self.post(f"/rooms/{room_id}/leave", self.bob).code, 200)
        self.assertEqual(self.membership(room_id, "@bob:test:8448")[0], "leave")
        self.post(f"/knock/{room_id}", self.carol)
        self.assertEqual(self.post(f"/rooms/{room_id}/kick", self.alice, {"user_id": "@carol:test:8448"}).code, 200)
        self.assertEqual(self.membership(room_id, "@carol:test:8448")[0], "leave")


class RestrictedJoinTests(MembershipRulesTestCase):
    def test_member_of_allowed_room_may_join(self) -> None:
        """v8+: members of an allowed room join; the event names a local authoriser who can invite."""
        space = self.create_room(preset="public_chat")
        self.assertEqual(self.post(f"/join/{space}", self.bob).code, 200)
        for version in ("8", "10", "12"):
            room_id = self.room_with_rule(version, "restricted", [space])
            channel = self.post(f"/join/{room_id}", self.bob)
            self.assertEqual(channel.code, 200, (version, channel.json_body))
            membership, content = self.membership(room_id, "@bob:test:8448")
            self.assertEqual(membership, "join")
            self.assertEqual(content["join_authorised_via_users_server"], "@alice:test:8448")

    def test_non_member_of_allowed_rooms_refused(self) -> None:
        space = self.create_room(preset="public_chat")
        room_id = self.room_with_rule("10", "restricted", [space])
        channel = self.post(f"/join/{room_id}", self.carol)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertIsNone(self.membership(room_id, "@carol:test:8448")[0])
        # Having left the allowed room does not count either.
        self.post(f"/join/{space}", self.carol)
        self.post(f"/rooms/{space}/leave", self.carol)
        self.assertEqual(self.post(f"/join/{room_id}", self.carol).code, 403)

    def test_invited_user_joins_restricted_room_without_authoriser(self) -> None:
        """An invite is enough: no allowed-room membership and no authoriser needed."""
        room_id = self.room_with_rule("10", "restricted", [])
        self.post(f"/rooms/{room_id}/invite", self.alice, {"user_id": "@carol:test:8448"})
        self.assertEqual(self.post(f"/join/{room_id}", self.carol).code, 200)
        self.assertNotIn("join_authorised_via_users_server", self.membership(room_id, "@carol:test:8448")[1])

    def test_restricted_rule_ignored_before_v8(self) -> None:
        """In v7 'restricted' is no rule the auth rules know: joining is refused."""
        space = self.create_room(preset="public_chat")
        self.post(f"/join/{space}", self.bob)
        room_id = self.room_with_rule("7", "restricted", [space])
        self.assertEqual(self.post(f"/join/{room_id}", self.bob).code, 403)

    def test_knock_restricted(self) -> None:
        """v10+: allowed-room members join directly; others may knock; v9 refuses both."""
        space = self.create_room(preset="public_chat")
        self.post(f"/join/{space}", self.bob)
        room_id = self.room_with_rule("10", "knock_restricted", [space])
        self.assertEqual(self.post(f"/join/{room_id}", self.bob).code, 200)
        self.assertEqual(self.post(f"/join/{room_id}", self.carol).code, 403)
        self.assertEqual(self.post(f"/knock/{room_id}", self.carol).code, 200)
        self.assertEqual(self.membership(room_id, "@carol:test:8448")[0], "knock")
        old = self.room_with_rule("9", "knock_restricted", [space])
        self.assertEqual(self.post(f"/join/{old}", self.bob).code, 403)
        self.assertEqual(self.post(f"/knock/{old}", self.carol).code, 403)


class ForgetTests(MembershipRulesTestCase):
    def sync_rooms(self, token: str) -> dict[str, Any]:
        filt = '{"room":{"include_leave":true}}'
        channel = self.make_request("GET", f"{V3}/sync?filter={filt}", access_token=token)
        self.assertEqual(channel.code, 200, channel.json_body)
        rooms: dict[str, Any] = channel.json_body.get("rooms", {})
        return rooms

    def test_forget_only_after_leaving(self) -> None:
        room_id = self.create_room(preset="public_chat")
        self.post(f"/join/{room_id}", self.bob)
        channel = self.post(f"/rooms/{room_id}/forget", self.bob)
        self.assertEqual(channel.code, 400, channel.json_body)
        self.post(f"/rooms/{room_id}/leave", self.bob)
        self.assertEqual(self.post(f"/rooms/{room_id}/forget", self.bob).code, 200)
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))
        assert head is not None
        self.assertTrue(self.get_success(self.hs.rooms.rooms.is_forgotten("@bob:test:8448", head.room.room_nid)))

    def test_forgotten_room_leaves_include_leave_sync(self) -> None:
        """A left room shows under rooms.leave with include_leave until it is forgotten."""
        room_id = self.create_room(preset="public_chat")
        self.post(f"/join/{room_id}", self.bob)
        self.post(f"/rooms/{room_id}/leave", self.bob)
        self.assertIn(room_id, self.sync_rooms(self.bob).get("leave", {}))
        self.post(f"/rooms/{room_id}/forget", self.bob)
        self.assertNotIn(room_id, self.sync_rooms(self.bob).get("leave", {}))

    def test_forget_unknown_or_never_joined(self) -> None:
        room_id = self.create_room()
        self.assertEqual(self.post(f"/rooms/{room_id}/forget", self.bob).code, 404)
        self.assertEqual(self.post("/rooms/!unknown:test:8448/forget", self.bob).code, 404)
        self.assertEqual(self.post("/rooms/garbage/forget", self.bob).code, 400)

    def test_rejoin_unforgets(self) -> None:
        room_id = self.create_room(preset="public_chat")
        self.post(f"/join/{room_id}", self.bob)
        self.post(f"/rooms/{room_id}/leave", self.bob)
        self.post(f"/rooms/{room_id}/forget", self.bob)
        self.post(f"/join/{room_id}", self.bob)
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))
        assert head is not None
        self.assertFalse(self.get_success(self.hs.rooms.rooms.is_forgotten("@bob:test:8448", head.room.room_nid)))


class PowerTests(MembershipRulesTestCase):
    def setup_room(self) -> str:
        """alice 100, bob 50 (moderator), carol 0; all joined."""
        room_id = self.create_room(
            room_version="11", preset="public_chat",
            power_level_content_override={"users": {"@alice:test:8448": 100, "@bob:test:8448": 50}},
        )
        self.post(f"/join/{room_id}", self.bob)
        self.post(f"/join/{room_id}", self.carol)
        return room_id

    def test_kick_needs_power_above_target(self) -> None:
        room_id = self.setup_room()
        self.assertEqual(self.post(f"/rooms/{room_id}/kick", self.carol, {"user_id": "@bob:test:8448"}).code, 403)
        self.assertEqual(self.post(f"/rooms/{room_id}/kick", self.bob, {"user_id": "@alice:test:8448"}).code, 403)
        self.assertEqual(self.post(f"/rooms/{room_id}/kick", self.bob, {"user_id": "@carol:test:8448"}).code, 200)
        self.assertEqual(self.membership(room_id, "@carol:test:8448")[0], "leave")
        # Kicking someone who is not in the room is refused.
        self.assertEqual(self.post(f"/rooms/{room_id}/kick", self.bob, {"user_id": "@carol:test:8448"}).code, 403)

    def test_ban_and_unban_need_ban_power(self) -> None:
        room_id = self.setup_room()
        self.assertEqual(self.post(f"/rooms/{room_id}/ban", self.carol, {"user_id": "@bob:test:8448"}).code, 403)
        self.assertEqual(self.post(f"/rooms/{room_id}/ban", self.bob, {"user_id": "@carol:test:8448"}).code, 200)
        self.assertEqual(self.membership(room_id, "@carol:test:8448")[0], "ban")
        self.register_user("dave")
        dave = self.login("dave")["access_token"]
        self.post(f"/join/{room_id}", dave)
        self.assertEqual(self.post(f"/rooms/{room_id}/unban", dave, {"user_id": "@carol:test:8448"}).code, 403)
        self.assertEqual(self.post(f"/rooms/{room_id}/unban", self.bob, {"user_id": "@carol:test:8448"}).code, 200)
        self.assertEqual(self.membership(room_id, "@carol:test:8448")[0], "leave")
        # Unbanning someone who is not banned is refused.
        self.assertEqual(self.post(f"/rooms/{room_id}/unban", self.bob, {"user_id": "@carol:test:8448"}).code, 403)

    def test_banned_user_cannot_join_or_knock(self) -> None:
        room_id = self.setup_room()
        self.post(f"/rooms/{room_id}/ban", self.alice, {"user_id": "@carol:test:8448", "reason": "spam"})
        for path in (f"/join/{room_id}", f"/rooms/{room_id}/join"):
            channel = self.post(path, self.carol)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(self.membership(room_id, "@carol:test:8448"), ("ban", {"membership": "ban", "reason": "spam"}))
        # A ban of a user who was never in the room also keeps them out.
        self.register_user("erin")
        erin = self.login("erin")["access_token"]
        self.assertEqual(self.post(f"/rooms/{room_id}/ban", self.alice, {"user_id": "@erin:test:8448"}).code, 200)
        self.assertEqual(self.post(f"/join/{room_id}", erin).code, 403)

    def test_invites_by_non_members_refused(self) -> None:
        room_id = self.create_room()
        channel = self.post(f"/rooms/{room_id}/invite", self.bob, {"user_id": "@carol:test:8448"})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertIsNone(self.membership(room_id, "@carol:test:8448")[0])

    def test_invite_needs_invite_power(self) -> None:
        room_id = self.create_room(preset="public_chat")  # public_chat: invite level 50
        self.post(f"/join/{room_id}", self.bob)
        self.assertEqual(self.post(f"/rooms/{room_id}/invite", self.bob, {"user_id": "@carol:test:8448"}).code, 403)
        self.assertEqual(self.post(f"/rooms/{room_id}/invite", self.alice, {"user_id": "@carol:test:8448"}).code, 200)

    def test_bad_membership_bodies(self) -> None:
        room_id = self.setup_room()
        for body in ({}, {"user_id": 5}, {"user_id": "carol"}, {"user_id": "@carol:test:8448", "reason": 5}):
            channel = self.post(f"/rooms/{room_id}/kick", self.alice, body)
            self.assertEqual(channel.code, 400, body)
        self.assertEqual(self.membership(room_id, "@carol:test:8448")[0], "join")
