"""Read receipts, read markers and unread counts: ``/receipt``, ``/read_markers``, ``m.receipt`` and
``unread_notifications`` in ``/sync`` (both databases; audit "missing: read receipts")."""

from __future__ import annotations

import urllib.parse
from typing import Any

from homeserver.ephemeral.unread import UnreadCounter
from tests.homeserver.test_rooms_core import V3
from tests.homeserver.test_sync import SyncTestCase
from tests.unittest import override_config


def receipt_contents(body: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = body["rooms"]["join"].get(room_id)
    if room is None:
        return []
    return [e["content"] for e in room["ephemeral"]["events"] if e["type"] == "m.receipt"]


def receipts_of(body: dict[str, Any], room_id: str) -> dict[tuple[str, str, str | None], str]:
    """``(user, receipt type, thread_id) -> event_id`` over every m.receipt of the room."""
    found: dict[tuple[str, str, str | None], str] = {}
    for content in receipt_contents(body, room_id):
        for event_id, types in content.items():
            for rtype, users in types.items():
                for user, data in users.items():
                    found[(user, rtype, data.get("thread_id"))] = event_id
    return found


class ReceiptsTestCase(SyncTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.room_id = self.create_room(preset="public_chat")
        self.join(self.room_id, self.bob)

    def receipt(
        self, token: str, event_id: str, rtype: str = "m.read", body: Any = None, room_id: str | None = None
    ) -> Any:
        path = f"{V3}/rooms/{room_id or self.room_id}/receipt/{rtype}/{event_id}"
        return self.make_request("POST", path, body if body is not None else {}, access_token=token)

    def ok_receipt(self, token: str, event_id: str, rtype: str = "m.read", body: Any = None) -> None:
        channel = self.receipt(token, event_id, rtype, body)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {})

    def markers(self, token: str, body: Any, room_id: str | None = None) -> Any:
        path = f"{V3}/rooms/{room_id or self.room_id}/read_markers"
        return self.make_request("POST", path, body, access_token=token)

    def send_event(self, token: str, content: dict[str, Any], etype: str = "m.room.message") -> str:
        self._txn += 1
        channel = self.send(self.room_id, content, token, txn=f"r{self._txn}", etype=etype)
        self.assertEqual(channel.code, 200, channel.json_body)
        event_id: str = channel.json_body["event_id"]
        return event_id

    def unread(self, body: dict[str, Any], room_id: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = body["rooms"]["join"][room_id or self.room_id]["unread_notifications"]
        return counts


class ReceiptDeliveryTests(ReceiptsTestCase):
    def test_read_receipt_in_initial_and_incremental_sync(self) -> None:
        """An m.read receipt reaches other members: initial syncs carry the latest, incremental ones the change."""
        e1 = self.say(self.room_id, self.alice, "one")
        since = self.sync(self.alice)["next_batch"]
        self.ok_receipt(self.bob, e1)
        self.assertEqual(receipts_of(self.sync(self.alice), self.room_id), {("@bob:test:8448", "m.read", None): e1})
        body = self.sync(self.alice, since=since)
        contents = receipt_contents(body, self.room_id)
        self.assertEqual(len(contents), 1)
        self.assertEqual(set(contents[0][e1]["m.read"]["@bob:test:8448"]), {"ts"})
        again = self.sync(self.alice, since=body["next_batch"])
        self.assertEqual(receipt_contents(again, self.room_id), [])

    def test_percent_encoded_event_id(self) -> None:
        """Clients percent-encode the event ID in the path ($ as %24); it is decoded."""
        e1 = self.say(self.room_id, self.alice, "one")
        channel = self.receipt(self.bob, urllib.parse.quote(e1, safe=""))
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(receipts_of(self.sync(self.alice), self.room_id), {("@bob:test:8448", "m.read", None): e1})

    def test_receipts_only_move_forward(self) -> None:
        """A receipt for an earlier event is accepted (200) but does not move the receipt back."""
        e1 = self.say(self.room_id, self.alice, "one")
        e2 = self.say(self.room_id, self.alice, "two")
        self.ok_receipt(self.bob, e2)
        since = self.sync(self.alice)["next_batch"]
        self.ok_receipt(self.bob, e1)
        self.assertEqual(receipts_of(self.sync(self.alice), self.room_id), {("@bob:test:8448", "m.read", None): e2})
        self.assertEqual(receipt_contents(self.sync(self.alice, since=since), self.room_id), [])
        self.ok_receipt(self.bob, e2)  # the same event again: no change either
        self.assertEqual(receipt_contents(self.sync(self.alice, since=since), self.room_id), [])

    def test_private_receipts_never_leak(self) -> None:
        """m.read.private is delivered to its owner only, in initial and incremental syncs alike."""
        e1 = self.say(self.room_id, self.alice, "one")
        since_alice = self.sync(self.alice)["next_batch"]
        since_bob = self.sync(self.bob)["next_batch"]
        self.ok_receipt(self.bob, e1, "m.read.private")
        for body in (self.sync(self.alice), self.sync(self.alice, since=since_alice)):
            self.assertNotIn("m.read.private", str(body))
            self.assertEqual(receipts_of(body, self.room_id), {})
        self.assertEqual(receipts_of(self.sync(self.bob), self.room_id), {("@bob:test:8448", "m.read.private", None): e1})
        self.assertEqual(
            receipts_of(self.sync(self.bob, since=since_bob), self.room_id), {("@bob:test:8448", "m.read.private", None): e1}
        )

    def test_private_receipt_does_not_wake_others(self) -> None:
        """A private receipt wakes its owner's long poll, not other members'."""
        e1 = self.say(self.room_id, self.alice, "one")
        alice_poll = self.sync_channel(self.alice, since=self.sync(self.alice)["next_batch"], timeout=5000,
                                       await_result=False)
        bob_poll = self.sync_channel(self.bob, since=self.sync(self.bob)["next_batch"], timeout=5000,
                                     await_result=False)
        self.pump(0.5)
        self.ok_receipt(self.bob, e1, "m.read.private")
        self.pump(0.1)
        self.assertTrue(bob_poll.is_finished())
        self.assertFalse(alice_poll.is_finished())
        self.pump(5)
        self.assertNotIn("m.read.private", alice_poll.text_body)

    def test_long_poll_wakes_on_receipt(self) -> None:
        """A member's waiting sync returns with a new public receipt."""
        e1 = self.say(self.room_id, self.alice, "one")
        since = self.sync(self.alice)["next_batch"]
        channel = self.sync_channel(self.alice, since=since, timeout=20_000, await_result=False)
        self.pump(1)
        self.assertFalse(channel.is_finished())
        self.ok_receipt(self.bob, e1)
        self.pump(0.1)
        self.assertTrue(channel.is_finished())
        self.assertEqual(receipts_of(channel.json_body, self.room_id), {("@bob:test:8448", "m.read", None): e1})

    def test_not_delivered_to_non_members(self) -> None:
        """Receipts of a room never appear in a non-member's sync."""
        e1 = self.say(self.room_id, self.alice, "one")
        since = self.sync(self.carol)["next_batch"]
        self.ok_receipt(self.bob, e1)
        self.assertNotIn(self.room_id, self.sync(self.carol)["rooms"]["join"])
        self.assertNotIn(self.room_id, self.sync(self.carol, since=since)["rooms"]["join"])

    def test_newly_joined_room_gets_existing_receipts(self) -> None:
        """Joining a room delivers its current receipts in the join's incremental sync."""
        e1 = self.say(self.room_id, self.alice, "one")
        self.ok_receipt(self.bob, e1)
        since = self.sync(self.carol)["next_batch"]
        self.join(self.room_id, self.carol)
        body = self.sync(self.carol, since=since)
        self.assertEqual(receipts_of(body, self.room_id).get(("@bob:test:8448", "m.read", None)), e1)


class ThreadedReceiptTests(ReceiptsTestCase):
    def make_thread(self) -> tuple[str, str]:
        root = self.say(self.room_id, self.alice, "root")
        reply = self.send_event(
            self.alice, {"msgtype": "m.text", "body": "in thread", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}
        )
        return root, reply

    def test_threaded_and_unthreaded_receipts_are_separate(self) -> None:
        """A receipt per (type, thread): thread receipts carry thread_id, and do not replace the unthreaded one."""
        root, reply = self.make_thread()
        self.ok_receipt(self.bob, reply, body={"thread_id": root})
        self.ok_receipt(self.bob, root, body={"thread_id": "main"})
        plain = self.say(self.room_id, self.alice, "later")
        self.ok_receipt(self.bob, plain)
        found = receipts_of(self.sync(self.alice), self.room_id)
        self.assertEqual(found[("@bob:test:8448", "m.read", root)], reply)
        self.assertEqual(found[("@bob:test:8448", "m.read", "main")], root)
        self.assertEqual(found[("@bob:test:8448", "m.read", None)], plain)
        self.assertEqual(self._stored_keys(), {("m.read", ""), ("m.read", "main"), ("m.read", root)})

    def _stored_keys(self) -> set[tuple[str, str]]:
        rows = self.get_success(self.hs.pool.run_read(
            "keys", lambda txn: (txn.execute("SELECT receipt_type, thread_id FROM receipts WHERE user_id = ?",
                                             ("@bob:test:8448",)), txn.fetchall())[1]
        ))
        return {(str(r[0]), str(r[1])) for r in rows}

    def test_thread_id_must_match_the_event(self) -> None:
        """An event outside the given thread, or a main receipt on a thread event, is 400 M_INVALID_PARAM."""
        root, reply = self.make_thread()
        plain = self.say(self.room_id, self.alice, "main timeline")
        for event_id, thread in ((reply, "main"), (plain, root)):
            channel = self.receipt(self.bob, event_id, body={"thread_id": thread})
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        self.assertEqual(self._stored_keys(), set())

    def test_reaction_in_thread_belongs_to_the_thread(self) -> None:
        """Relations are followed (up to 3 hops): a reaction to a thread reply is in that thread."""
        root, reply = self.make_thread()
        reaction = self.send_event(
            self.alice, {"m.relates_to": {"rel_type": "m.annotation", "event_id": reply, "key": "+1"}}, "m.reaction"
        )
        self.ok_receipt(self.bob, reaction, body={"thread_id": root})

    def test_bad_thread_ids(self) -> None:
        """thread_id must be a non-empty string naming main or an event, and never goes with m.fully_read."""
        root, _ = self.make_thread()
        for body in ({"thread_id": ""}, {"thread_id": 5}, {"thread_id": "thread"}, {"thread_id": ["main"]}):
            channel = self.receipt(self.bob, root, body=body)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"), body)
        channel = self.receipt(self.bob, root, "m.fully_read", body={"thread_id": "main"})
        self.assertEqual(channel.code, 400)


class ReadMarkerTests(ReceiptsTestCase):
    def fully_read(self, token: str) -> Any:
        channel = self.make_request(
            "GET", f"{V3}/user/{'@bob:test:8448' if token == self.bob else '@alice:test:8448'}/rooms/{self.room_id}"
            "/account_data/m.fully_read", access_token=token,
        )
        return channel.json_body if channel.code == 200 else None

    def test_read_markers_sets_all_three(self) -> None:
        """/read_markers sets m.fully_read (room account data) and both receipts."""
        e1 = self.say(self.room_id, self.alice, "one")
        e2 = self.say(self.room_id, self.alice, "two")
        since = self.sync(self.bob)["next_batch"]
        channel = self.markers(self.bob, {"m.fully_read": e1, "m.read": e2, "m.read.private": e2})
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.fully_read(self.bob), {"event_id": e1})
        body = self.sync(self.bob, since=since)
        room = body["rooms"]["join"][self.room_id]
        self.assertIn({"type": "m.fully_read", "content": {"event_id": e1}}, room["account_data"]["events"])
        self.assertEqual(
            receipts_of(body, self.room_id),
            {("@bob:test:8448", "m.read", None): e2, ("@bob:test:8448", "m.read.private", None): e2},
        )
        self.assertEqual(receipts_of(self.sync(self.alice), self.room_id), {("@bob:test:8448", "m.read", None): e2})

    def test_fully_read_via_receipt_endpoint_and_forward_only(self) -> None:
        """/receipt/m.fully_read sets the marker; an earlier event leaves it in place."""
        e1 = self.say(self.room_id, self.alice, "one")
        e2 = self.say(self.room_id, self.alice, "two")
        self.ok_receipt(self.bob, e2, "m.fully_read")
        self.assertEqual(self.fully_read(self.bob), {"event_id": e2})
        self.assertEqual(self.markers(self.bob, {"m.fully_read": e1}).code, 200)
        self.assertEqual(self.fully_read(self.bob), {"event_id": e2})
        self.assertNotIn("m.fully_read", str(receipt_contents(self.sync(self.bob), self.room_id)))

    def test_fully_read_cannot_be_set_as_account_data(self) -> None:
        """Clients cannot write m.fully_read directly (spec: the server MUST prevent it)."""
        channel = self.make_request(
            "PUT", f"{V3}/user/@bob:test:8448/rooms/{self.room_id}/account_data/m.fully_read", {"event_id": "$x"},
            access_token=self.bob,
        )
        self.assertEqual(channel.code, 405)

    def test_bad_marker_writes_nothing(self) -> None:
        """A bad marker in the request fails it before any marker is written."""
        e1 = self.say(self.room_id, self.alice, "one")
        channel = self.markers(self.bob, {"m.fully_read": e1, "m.read": "$unknown"})
        self.assertEqual(channel.code, 404)
        self.assertIsNone(self.fully_read(self.bob))
        for body in ({"m.read": 5}, {"m.fully_read": ["x"]}, {"m.read.private": "no-dollar"}, [], "x"):
            channel = self.markers(self.bob, body)
            self.assertEqual(channel.code, 400, (body, channel.json_body))
        self.assertEqual(receipts_of(self.sync(self.alice), self.room_id), {})

    def test_empty_body_is_a_no_op(self) -> None:
        self.assertEqual(self.markers(self.bob, {}).code, 200)

    def test_non_member_forbidden(self) -> None:
        e1 = self.say(self.room_id, self.alice, "one")
        channel = self.markers(self.carol, {"m.fully_read": e1})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))


class ReceiptInputTests(ReceiptsTestCase):
    def test_unknown_receipt_type(self) -> None:
        """A receipt type outside m.read, m.read.private, m.fully_read is 400."""
        e1 = self.say(self.room_id, self.alice, "one")
        for rtype in ("m.unknown", "m.read.public", "read"):
            channel = self.receipt(self.bob, e1, rtype)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))

    def test_unknown_event_and_event_of_other_room(self) -> None:
        """Receipts name an event of the room: unknown IDs and other rooms' events are 404."""
        other = self.create_room(preset="public_chat")
        self.join(other, self.bob)
        foreign = self.say(other, self.alice, "elsewhere")
        for event_id in ("$doesnotexist", foreign):
            channel = self.receipt(self.bob, event_id)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))
        channel = self.receipt(self.bob, "not-an-event-id")
        self.assertEqual(channel.code, 400)

    def test_non_members_forbidden(self) -> None:
        """Users not joined to the room get 403 (also for an unknown room)."""
        e1 = self.say(self.room_id, self.alice, "one")
        channel = self.receipt(self.carol, e1)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        channel = self.receipt(self.carol, e1, room_id="!unknown:test:8448")
        self.assertEqual(channel.code, 403)

    def test_invisible_event_forbidden(self) -> None:
        """An event the user cannot see (history visibility joined, sent before they joined) is 403."""
        room = self.create_room(preset="public_chat")
        self.state(room, self.alice, "m.room.history_visibility", {"history_visibility": "joined"})
        hidden = self.say(room, self.alice, "before carol")
        self.join(room, self.carol)
        channel = self.receipt(self.carol, hidden, room_id=room)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))

    def test_bad_bodies(self) -> None:
        e1 = self.say(self.room_id, self.alice, "one")
        for body in ("[]", "{bad"):
            channel = self.make_request(
                "POST", f"{V3}/rooms/{self.room_id}/receipt/m.read/{e1}", body.encode(), access_token=self.bob
            )
            self.assertEqual(channel.code, 400)
        big = {"thread_id": "$" + "x" * 10_000}
        channel = self.receipt(self.bob, e1, body=big)
        self.assertIn(channel.code, (400, 413))

    @override_config({"ratelimits": {"enabled": True, "admins_exempt": False}})
    def test_rate_limited(self) -> None:
        """Receipts are rate limited per user (429 after the burst)."""
        e1 = self.say(self.room_id, self.alice, "one")
        codes = [self.receipt(self.bob, e1).code for _ in range(40)]
        self.assertIn(429, codes)
        self.assertEqual(codes[:30], [200] * 30)


class UnreadCountTests(ReceiptsTestCase):
    def test_counts_go_up_with_messages_and_down_after_receipt(self) -> None:
        """Messages from others raise notification_count; a receipt lowers it in the next sync."""
        self.assertEqual(self.unread(self.sync(self.bob)), {"notification_count": 0, "highlight_count": 0})
        since = self.sync(self.bob)["next_batch"]
        e1 = self.say(self.room_id, self.alice, "one")
        self.say(self.room_id, self.alice, "two")
        self.say(self.room_id, self.alice, "three")
        body = self.sync(self.bob, since=since)
        self.assertEqual(self.unread(body)["notification_count"], 3)
        self.ok_receipt(self.bob, e1)
        body = self.sync(self.bob, since=body["next_batch"])
        self.assertEqual(self.unread(body), {"notification_count": 2, "highlight_count": 0})
        self.assertEqual(self.unread(self.sync(self.bob))["notification_count"], 2)

    def test_own_messages_and_state_do_not_count(self) -> None:
        """The user's own messages and state events never count; sending marks earlier messages read."""
        self.say(self.room_id, self.alice, "one")
        self.state(self.room_id, self.alice, "m.room.topic", {"topic": "t"})
        self.assertEqual(self.unread(self.sync(self.bob))["notification_count"], 1)
        self.say(self.room_id, self.bob, "reply")
        self.assertEqual(self.unread(self.sync(self.bob))["notification_count"], 0)
        self.assertEqual(self.unread(self.sync(self.alice))["notification_count"], 1)

    def test_private_receipt_clears_and_public_behind_does_not_rewind(self) -> None:
        """m.read.private clears counts; a later m.read behind it does not bring them back."""
        e1 = self.say(self.room_id, self.alice, "one")
        e2 = self.say(self.room_id, self.alice, "two")
        self.ok_receipt(self.bob, e2, "m.read.private")
        self.assertEqual(self.unread(self.sync(self.bob))["notification_count"], 0)
        self.ok_receipt(self.bob, e1)
        self.assertEqual(self.unread(self.sync(self.bob))["notification_count"], 0)

    def test_highlights(self) -> None:
        """Only m.mentions naming the user highlights (the spec's default push rules since v1.17 no longer
        match the body for the user ID or display name); every message notifies."""
        channel = self.make_request(
            "PUT", f"{V3}/profile/@bob:test:8448/displayname", {"displayname": "Bob"}, access_token=self.bob
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.say(self.room_id, self.alice, "hello @bob:test:8448")
        self.say(self.room_id, self.alice, "BOB, are you there?")
        self.send_event(self.alice, {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": ["@bob:test:8448"]}})
        self.send_event(self.alice, {"msgtype": "m.text", "body": "bob!", "m.mentions": {}})
        self.say(self.room_id, self.alice, "bobcat is not bob's name")
        body = self.sync(self.bob)
        counts = self.unread(body)
        self.assertEqual(counts["notification_count"], 5)
        self.assertEqual(counts["highlight_count"], 1)  # only m.mentions (.m.rule.is_user_mention)

    def test_notices_edits_and_redactions_do_not_count(self) -> None:
        """m.notice messages, edits and redacted messages are not notifications; encrypted ones are."""
        e1 = self.say(self.room_id, self.alice, "one")
        self.send_event(self.alice, {"msgtype": "m.notice", "body": "bot"})
        self.send_event(self.alice, {"msgtype": "m.text", "body": "* one", "m.new_content": {"msgtype": "m.text", "body": "one"},
                                     "m.relates_to": {"rel_type": "m.replace", "event_id": e1}})
        gone = self.say(self.room_id, self.alice, "oops")
        channel = self.make_request("PUT", f"{V3}/rooms/{self.room_id}/redact/{gone}/x1", {}, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.send_event(self.alice, {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"}, "m.room.encrypted")
        self.assertEqual(self.unread(self.sync(self.bob)), {"notification_count": 2, "highlight_count": 0})

    def test_thread_counts_when_filter_asks(self) -> None:
        """With unread_thread_notifications the room counts cover main; threads are counted apart and
        cleared by threaded receipts."""
        root = self.say(self.room_id, self.alice, "root")
        relates = {"rel_type": "m.thread", "event_id": root}
        t1 = self.send_event(self.alice, {"msgtype": "m.text", "body": "t1", "m.relates_to": relates})
        self.send_event(self.alice, {"msgtype": "m.text", "body": "t2 @bob:test:8448", "m.relates_to": relates,
                                     "m.mentions": {"user_ids": ["@bob:test:8448"]}})
        flt = {"room": {"timeline": {"unread_thread_notifications": True}}}
        body = self.sync(self.bob, filter=flt)
        room = body["rooms"]["join"][self.room_id]
        self.assertEqual(room["unread_notifications"], {"notification_count": 1, "highlight_count": 0})
        self.assertEqual(room["unread_thread_notifications"], {root: {"notification_count": 2, "highlight_count": 1}})
        self.assertEqual(self.unread(self.sync(self.bob))["notification_count"], 3)
        self.ok_receipt(self.bob, t1, body={"thread_id": root})
        room = self.sync(self.bob, filter=flt)["rooms"]["join"][self.room_id]
        self.assertEqual(room["unread_thread_notifications"], {root: {"notification_count": 1, "highlight_count": 1}})
        self.ok_receipt(self.bob, root, body={"thread_id": "main"})
        room = self.sync(self.bob, filter=flt)["rooms"]["join"][self.room_id]
        self.assertEqual(room["unread_notifications"]["notification_count"], 0)

    def test_events_before_join_do_not_count(self) -> None:
        """Messages from before the user joined are not unread for them."""
        self.say(self.room_id, self.alice, "before")
        self.join(self.room_id, self.carol)
        self.say(self.room_id, self.alice, "after")
        self.assertEqual(self.unread(self.sync(self.carol))["notification_count"], 1)

    def test_counts_are_bounded(self) -> None:
        """Counting examines at most max_counted events per room (counts saturate)."""
        self.hs.features.get(UnreadCounter)._max = 3
        for i in range(5):
            self.say(self.room_id, self.alice, f"m{i}")
        self.assertEqual(self.unread(self.sync(self.bob))["notification_count"], 3)
