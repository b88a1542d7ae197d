"""Typing notifications: ``PUT /rooms/{roomId}/typing/{userId}`` and ``m.typing`` in ``/sync``, expiry on
the fake clock, permissions, long-poll wake-ups (both databases; audit "missing: typing")."""

from __future__ import annotations

from typing import Any

from homeserver.ephemeral.typing import TypingService
from tests.homeserver.test_rooms_core import V3
from tests.homeserver.test_sync import SyncTestCase
from tests.unittest import override_config


def typing_events(body: dict[str, Any], room_id: str) -> list[list[str]]:
    """The ``user_ids`` of every ``m.typing`` event of the room in a sync response."""
    room = body["rooms"]["join"].get(room_id)
    if room is None:
        return []
    return [e["content"]["user_ids"] for e in room["ephemeral"]["events"] if e["type"] == "m.typing"]


class TypingTestCase(SyncTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.room_id = self.create_room(preset="public_chat")
        self.join(self.room_id, self.bob)

    def put_typing(
        self, token: str, user_id: str, body: Any, room_id: str | None = None
    ) -> Any:
        path = f"{V3}/rooms/{room_id or self.room_id}/typing/{user_id}"
        return self.make_request("PUT", path, body, access_token=token)

    def type_(self, token: str, user_id: str, typing: bool = True, timeout: int | None = 30_000) -> None:
        body: dict[str, Any] = {"typing": typing}
        if timeout is not None:
            body["timeout"] = timeout
        channel = self.put_typing(token, user_id, body)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {})


class TypingDeliveryTests(TypingTestCase):
    def test_initial_sync_shows_typing_users(self) -> None:
        """A user who starts typing appears in every member's initial sync as m.typing."""
        self.type_(self.alice, "@alice:test:8448")
        self.assertEqual(typing_events(self.sync(self.bob), self.room_id), [["@alice:test:8448"]])
        self.assertEqual(typing_events(self.sync(self.alice), self.room_id), [["@alice:test:8448"]])

    def test_nobody_typing_sends_nothing(self) -> None:
        """An initial sync has no m.typing for a room where nobody types."""
        self.assertEqual(typing_events(self.sync(self.bob), self.room_id), [])

    def test_stop_is_delivered_as_empty_set(self) -> None:
        """typing=false removes the user; the next incremental sync carries the (empty) new set once."""
        self.type_(self.alice, "@alice:test:8448")
        since = self.sync(self.bob)["next_batch"]
        self.type_(self.alice, "@alice:test:8448", typing=False, timeout=None)
        body = self.sync(self.bob, since=since)
        self.assertEqual(typing_events(body, self.room_id), [[]])
        again = self.sync(self.bob, since=body["next_batch"])
        self.assertEqual(typing_events(again, self.room_id), [])

    def test_incremental_sends_current_set_of_changed_rooms(self) -> None:
        """Incremental syncs carry the whole current set (clients replace theirs), only for changed rooms."""
        other = self.create_room(preset="public_chat")
        self.join(other, self.bob)
        self.type_(self.alice, "@alice:test:8448")
        since = self.sync(self.bob)["next_batch"]
        self.type_(self.bob, "@bob:test:8448")
        body = self.sync(self.bob, since=since)
        self.assertEqual(typing_events(body, self.room_id), [["@alice:test:8448", "@bob:test:8448"]])
        self.assertNotIn(other, body["rooms"]["join"])

    def test_not_delivered_to_non_members(self) -> None:
        """Carol, not in the room, never sees its typing notifications (initial or incremental)."""
        since = self.sync(self.carol)["next_batch"]
        self.type_(self.alice, "@alice:test:8448")
        self.assertNotIn(self.room_id, self.sync(self.carol)["rooms"]["join"])
        body = self.sync(self.carol, since=since)
        self.assertNotIn(self.room_id, body["rooms"]["join"])
        self.assertNotIn("m.typing", str(body))

    def test_ephemeral_filter_can_exclude_typing(self) -> None:
        """room.ephemeral.not_types m.typing drops the notifications."""
        self.type_(self.alice, "@alice:test:8448")
        body = self.sync(self.bob, filter={"room": {"ephemeral": {"not_types": ["m.typing"]}}})
        self.assertEqual(typing_events(body, self.room_id), [])

    def test_leaving_stops_typing(self) -> None:
        """A user who leaves the room stops typing at once."""
        self.type_(self.bob, "@bob:test:8448")
        since = self.sync(self.alice)["next_batch"]
        self.post(self.room_id, "leave", self.bob)
        body = self.sync(self.alice, since=since)
        self.assertEqual(typing_events(body, self.room_id), [[]])
        self.assertFalse(self.hs.features.get(TypingService).is_typing(self.room_id, "@bob:test:8448"))

    def test_newly_joined_room_gets_current_typers(self) -> None:
        """Joining a room where someone types delivers the current set in the join's incremental sync."""
        self.type_(self.alice, "@alice:test:8448")
        since = self.sync(self.carol)["next_batch"]
        self.join(self.room_id, self.carol)
        body = self.sync(self.carol, since=since)
        self.assertEqual(typing_events(body, self.room_id), [["@alice:test:8448"]])


class TypingExpiryTests(TypingTestCase):
    def test_expires_after_timeout(self) -> None:
        """Typing ends by itself when the timeout passes on the clock; syncs see the empty set."""
        self.type_(self.alice, "@alice:test:8448", timeout=10_000)
        since = self.sync(self.bob)["next_batch"]
        self.reactor.advance(9)
        self.assertEqual(typing_events(self.sync(self.bob), self.room_id), [["@alice:test:8448"]])
        self.reactor.advance(2)
        self.assertEqual(typing_events(self.sync(self.bob), self.room_id), [])
        self.assertEqual(typing_events(self.sync(self.bob, since=since), self.room_id), [[]])

    def test_refresh_extends_without_a_change(self) -> None:
        """Re-sending typing=true pushes the expiry back and is not a change (no new position)."""
        self.type_(self.alice, "@alice:test:8448", timeout=10_000)
        position = self.hs.features.get(TypingService).position
        self.reactor.advance(8)
        self.type_(self.alice, "@alice:test:8448", timeout=10_000)
        self.assertEqual(self.hs.features.get(TypingService).position, position)
        self.reactor.advance(8)
        self.assertTrue(self.hs.features.get(TypingService).is_typing(self.room_id, "@alice:test:8448"))
        self.reactor.advance(3)
        self.assertFalse(self.hs.features.get(TypingService).is_typing(self.room_id, "@alice:test:8448"))

    def test_timeout_is_capped(self) -> None:
        """A huge timeout is clamped to 120 s; no timeout means 30 s."""
        self.type_(self.alice, "@alice:test:8448", timeout=10**12)
        self.type_(self.bob, "@bob:test:8448", timeout=None)
        self.reactor.advance(31)
        self.assertEqual(self.hs.features.get(TypingService).get_typing_users(self.room_id), ["@alice:test:8448"])
        self.reactor.advance(90)
        self.assertEqual(self.hs.features.get(TypingService).get_typing_users(self.room_id), [])

    def test_stop_cancels_the_timer(self) -> None:
        """After typing=false no timer is left behind."""
        self.type_(self.alice, "@alice:test:8448")
        timer = self.hs.features.get(TypingService)._typing[self.room_id]["@alice:test:8448"]
        self.assertTrue(timer.active())
        self.type_(self.alice, "@alice:test:8448", typing=False)
        self.assertFalse(timer.active())
        self.assertNotIn(timer, self.reactor.getDelayedCalls())
        self.assertEqual(self.hs.features.get(TypingService)._typing, {})


class TypingLongPollTests(TypingTestCase):
    def test_long_poll_wakes_on_typing(self) -> None:
        """A member's waiting sync returns as soon as someone starts typing in the room."""
        since = self.sync(self.bob)["next_batch"]
        channel = self.sync_channel(self.bob, since=since, timeout=20_000, await_result=False)
        self.pump(1)
        self.assertFalse(channel.is_finished())
        self.type_(self.alice, "@alice:test:8448")
        self.pump(0.1)
        self.assertTrue(channel.is_finished())
        self.assertEqual(typing_events(channel.json_body, self.room_id), [["@alice:test:8448"]])

    def test_long_poll_of_non_member_not_woken(self) -> None:
        """Typing in a room does not wake (or leak into) a non-member's waiting sync."""
        since = self.sync(self.carol)["next_batch"]
        channel = self.sync_channel(self.carol, since=since, timeout=5_000, await_result=False)
        self.pump(1)
        self.type_(self.alice, "@alice:test:8448")
        self.pump(0.1)
        self.assertFalse(channel.is_finished())
        self.pump(5)
        self.assertTrue(channel.is_finished())
        self.assertNotIn(self.room_id, channel.json_body["rooms"]["join"])


class TypingPermissionTests(TypingTestCase):
    def test_only_for_yourself(self) -> None:
        """Setting another user's typing state is 403."""
        channel = self.put_typing(self.alice, "@bob:test:8448", {"typing": True, "timeout": 1000})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(self.hs.features.get(TypingService).get_typing_users(self.room_id), [])

    def test_only_joined_members(self) -> None:
        """Non-members, invitees and unknown rooms get 403; nothing is recorded."""
        channel = self.put_typing(self.carol, "@carol:test:8448", {"typing": True})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        private = self.create_room()
        self.post(private, "invite", self.alice, {"user_id": "@carol:test:8448"})
        channel = self.put_typing(self.carol, "@carol:test:8448", {"typing": True}, room_id=private)
        self.assertEqual(channel.code, 403)
        channel = self.put_typing(self.alice, "@alice:test:8448", {"typing": True}, room_id="!nope:test:8448")
        self.assertEqual(channel.code, 403)
        self.assertEqual(self.hs.features.get(TypingService).get_typing_users(self.room_id), [])
        self.assertEqual(self.hs.features.get(TypingService).get_typing_users(private), [])

    def test_requires_auth(self) -> None:
        channel = self.make_request("PUT", f"{V3}/rooms/{self.room_id}/typing/@alice:test:8448", {"typing": True})
        self.assertEqual(channel.code, 401)

    def test_bad_bodies(self) -> None:
        """Missing or mistyped fields and bad room IDs are 400."""
        for body in ({}, {"typing": "yes"}, {"typing": True, "timeout": -1}, {"typing": True, "timeout": "10"},
                     {"typing": True, "timeout": 1.5}, [], "typing"):
            channel = self.put_typing(self.alice, "@alice:test:8448", body)
            self.assertEqual(channel.code, 400, (body, channel.json_body))
        channel = self.put_typing(self.alice, "@alice:test:8448", {"typing": True}, room_id="not-a-room")
        self.assertEqual(channel.code, 400)
        self.assertEqual(self.hs.features.get(TypingService).get_typing_users(self.room_id), [])

    @override_config({"ratelimits": {"enabled": True, "admins_exempt": False}})
    def test_rate_limited(self) -> None:
        """A burst of typing updates beyond the limit gets 429 with retry_after_ms."""
        codes = [self.put_typing(self.alice, "@alice:test:8448", {"typing": i % 2 == 0}).code for i in range(15)]
        self.assertIn(429, codes)
        self.assertEqual(codes[:10], [200] * 10)


class TypingServiceTests(TypingTestCase):
    def test_old_token_beyond_change_log_sends_every_room(self) -> None:
        """When the change log no longer reaches back to the token, every joined room's set is sent."""
        service: TypingService = self.hs.features.get(TypingService)
        service._max_changes = 1
        other = self.create_room(preset="public_chat")
        self.join(other, self.bob)
        since = self.sync(self.bob)["next_batch"]
        self.type_(self.alice, "@alice:test:8448")
        self.type_(self.alice, "@alice:test:8448", typing=False)
        self.put_typing(self.alice, "@alice:test:8448", {"typing": True}, room_id=other)
        self.assertIsNone(service.rooms_changed_since(0))
        body = self.sync(self.bob, since=since)
        self.assertEqual(typing_events(body, self.room_id), [[]])
        self.assertEqual(typing_events(body, other), [["@alice:test:8448"]])
