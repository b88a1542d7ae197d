"""Threads: thread summaries in bundled aggregations, ``/threads`` paging and filters, redactions and
send-time validation (both databases)."""

from __future__ import annotations

import urllib.parse
from typing import Any

from tests.homeserver.test_relations import V1, RelationsTestCase
from tests.homeserver.test_rooms_core import V3


class ThreadsTestCase(RelationsTestCase):
    def threads_channel(self, token: str, room: str | None = None, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self.make_request(
            "GET", f"{V1}/rooms/{room or self.room}/threads" + (f"?{query}" if query else ""), access_token=token
        )

    def threads(self, token: str, **params: Any) -> dict[str, Any]:
        channel = self.threads_channel(token, **params)
        self.assertEqual(channel.code, 200, channel.json_body)
        body: dict[str, Any] = channel.json_body
        return body

    def thread_roots(self, token: str, **params: Any) -> list[str]:
        return [e["event_id"] for e in self.threads(token, **params)["chunk"]]


class ThreadSummaryTests(ThreadsTestCase):
    def test_summary_counts_replies_and_shows_the_latest(self) -> None:
        """m.thread bundles count, the latest reply and whether the viewer participated."""
        root = self.say(self.room, self.alice, "root")
        self.reply_in_thread(self.bob, root, "one")
        latest = self.reply_in_thread(self.bob, root, "two")
        thread = self.bundle(self.alice, root)["m.thread"]
        self.assertEqual(thread["count"], 2)
        self.assertEqual(thread["latest_event"]["event_id"], latest)
        self.assertEqual(thread["latest_event"]["content"]["body"], "two")
        self.assertTrue(thread["current_user_participated"])  # alice sent the root

    def test_current_user_participated_is_per_viewer(self) -> None:
        """The root sender and repliers participated; another member did not."""
        root = self.say(self.room, self.alice)
        self.reply_in_thread(self.bob, root)
        self.join(self.room, self.carol)
        self.assertTrue(self.bundle(self.bob, root)["m.thread"]["current_user_participated"])
        self.assertFalse(self.bundle(self.carol, root)["m.thread"]["current_user_participated"])
        self.reply_in_thread(self.carol, root)
        self.assertTrue(self.bundle(self.carol, root)["m.thread"]["current_user_participated"])

    def test_latest_event_carries_its_own_bundle(self) -> None:
        """The latest reply is served with its own aggregations (its latest edit), one level deep."""
        root = self.say(self.room, self.alice)
        reply = self.reply_in_thread(self.bob, root, "typo")
        edit = self.edit(self.bob, reply, "fixed")
        latest = self.bundle(self.alice, root)["m.thread"]["latest_event"]
        self.assertEqual(latest["event_id"], reply)
        self.assertEqual(latest["unsigned"]["m.relations"]["m.replace"]["event_id"], edit)
        self.assertNotIn("m.relations", latest["unsigned"]["m.relations"]["m.replace"]["unsigned"])

    def test_thread_with_fallback_reply_is_a_thread(self) -> None:
        """A threaded reply with the rich-reply fallback (is_falling_back) counts in the thread."""
        root = self.say(self.room, self.alice)
        first = self.reply_in_thread(self.bob, root)
        self.sent(self.alice, {"msgtype": "m.text", "body": "fb", "m.relates_to": {
            "rel_type": "m.thread", "event_id": root, "is_falling_back": True, "m.in_reply_to": {"event_id": first}}})
        self.assertEqual(self.bundle(self.bob, root)["m.thread"]["count"], 2)

    def test_redacted_reply_leaves_the_count(self) -> None:
        """Redacting the latest reply lowers the count and makes the previous reply the latest;
        redacting every reply removes the summary and the thread from /threads."""
        root = self.say(self.room, self.alice)
        first = self.reply_in_thread(self.bob, root, "a")
        second = self.reply_in_thread(self.bob, root, "b")
        self.redact(self.bob, second)
        thread = self.bundle(self.alice, root)["m.thread"]
        self.assertEqual((thread["count"], thread["latest_event"]["event_id"]), (1, first))
        self.assertEqual(self.thread_roots(self.alice), [root])
        self.redact(self.bob, first)
        self.assertNotIn("m.thread", self.bundle(self.alice, root))
        self.assertEqual(self.thread_roots(self.alice), [])

    def test_redacted_root_keeps_its_thread(self) -> None:
        """A redacted thread root still lists its replies (only m.replace is dropped on redaction)."""
        root = self.say(self.room, self.alice)
        self.reply_in_thread(self.bob, root)
        self.redact(self.alice, root)
        self.assertEqual(self.bundle(self.bob, root)["m.thread"]["count"], 1)

    def test_thread_summary_in_sync_and_messages(self) -> None:
        """/sync and /messages serve the thread summary on the root."""
        root = self.say(self.room, self.alice)
        reply = self.reply_in_thread(self.bob, root)
        timeline = self.sync(self.alice)["rooms"]["join"][self.room]["timeline"]["events"]
        synced = next(e for e in timeline if e["event_id"] == root)
        self.assertEqual(synced["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"], reply)
        channel = self.make_request("GET", f"{V3}/rooms/{self.room}/messages?dir=b", access_token=self.bob)
        paged = next(e for e in channel.json_body["chunk"] if e["event_id"] == root)
        self.assertEqual(paged["unsigned"]["m.relations"]["m.thread"]["count"], 1)


class ThreadValidationTests(ThreadsTestCase):
    def test_thread_from_a_related_event_is_refused(self) -> None:
        """Starting a thread from an event with a relationship is 400 M_UNKNOWN (spec), nothing stored."""
        root = self.say(self.room, self.alice)
        reply = self.reply_in_thread(self.bob, root)
        nested = self.send_event(self.alice, {"body": "x", "m.relates_to": {"rel_type": "m.thread", "event_id": reply}})
        self.assertEqual((nested.code, nested.json_body["errcode"]), (400, "M_UNKNOWN"))
        edit = self.edit(self.alice, root, "e")
        from_edit = self.send_event(self.alice, {"body": "x", "m.relates_to": {"rel_type": "m.thread", "event_id": edit}})
        self.assertEqual(from_edit.code, 400)
        self.assertEqual(self.bundle(self.alice, root)["m.thread"]["count"], 1)

    def test_thread_from_a_reply_is_allowed(self) -> None:
        """A rich reply has no rel_type, so it may be a thread root."""
        parent = self.say(self.room, self.alice)
        reply = self.sent(self.bob, {"body": "re", "m.relates_to": {"m.in_reply_to": {"event_id": parent}}})
        self.reply_in_thread(self.alice, reply)
        self.assertEqual(self.bundle(self.alice, reply)["m.thread"]["count"], 1)


class ThreadsEndpointTests(ThreadsTestCase):
    def test_roots_are_ordered_by_latest_reply(self) -> None:
        """/threads lists roots by their latest reply, newest first, with bundled summaries."""
        old_root = self.say(self.room, self.alice, "old")
        new_root = self.say(self.room, self.alice, "new")
        self.reply_in_thread(self.bob, new_root)
        self.reply_in_thread(self.bob, old_root)
        body = self.threads(self.alice)
        self.assertEqual([e["event_id"] for e in body["chunk"]], [old_root, new_root])
        self.assertEqual(body["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"], 1)
        self.assertNotIn("next_batch", body)

    def test_pagination(self) -> None:
        """limit and next_batch walk every root exactly once."""
        roots = [self.say(self.room, self.alice, f"r{i}") for i in range(5)]
        for root in roots:
            self.reply_in_thread(self.bob, root)
        seen: list[str] = []
        token = None
        for _ in range(5):
            body = self.threads(self.alice, limit=2, **({"from": token} if token else {}))
            seen += [e["event_id"] for e in body["chunk"]]
            token = body.get("next_batch")
            if token is None:
                break
        self.assertEqual(seen, roots[::-1])

    def test_include_participated(self) -> None:
        """include=participated keeps threads the user started or replied to."""
        self.join(self.room, self.carol)
        by_alice = self.say(self.room, self.alice)
        by_bob = self.say(self.room, self.bob)
        replied = self.say(self.room, self.bob)
        self.reply_in_thread(self.bob, by_alice)
        self.reply_in_thread(self.bob, by_bob)
        self.reply_in_thread(self.carol, replied)
        self.assertEqual(self.thread_roots(self.carol, include="participated"), [replied])
        self.assertEqual(set(self.thread_roots(self.alice, include="participated")), {by_alice})
        self.assertEqual(set(self.thread_roots(self.bob, include="participated")), {by_alice, by_bob, replied})
        self.assertEqual(len(self.thread_roots(self.carol, include="all")), 3)

    def test_participation_by_a_redacted_reply_does_not_count(self) -> None:
        """A user whose only reply was redacted no longer participated."""
        self.join(self.room, self.carol)
        root = self.say(self.room, self.alice)
        self.reply_in_thread(self.bob, root)
        mine = self.reply_in_thread(self.carol, root)
        self.redact(self.carol, mine)
        self.assertEqual(self.thread_roots(self.carol, include="participated"), [])

    def test_visibility(self) -> None:
        """A non-member gets 403; roots the user may not see are left out."""
        root = self.say(self.room, self.alice)
        self.reply_in_thread(self.bob, root)
        private = self.create_room(self.alice)
        self.assertEqual(self.threads_channel(self.carol, room=private).code, 403)
        self.assertEqual(self.threads_channel(self.carol, room="!unknown:test:8448").code, 403)
        self.state(self.room, self.alice, "m.room.history_visibility", {"history_visibility": "joined"})
        hidden = self.say(self.room, self.alice)
        self.reply_in_thread(self.bob, hidden)
        self.join(self.room, self.carol)
        self.reply_in_thread(self.bob, root)
        self.assertEqual(self.thread_roots(self.carol), [root])

    def test_bad_inputs(self) -> None:
        """Malformed parameters are 400; no token is 401."""
        for params in ({"include": "mine"}, {"limit": "0"}, {"limit": "x"}, {"from": "bogus"}, {"from": "t1"}):
            channel = self.threads_channel(self.alice, **params)
            self.assertEqual(channel.code, 400, (params, channel.json_body))
        self.assertEqual(self.threads_channel(self.alice, room="nope").code, 400)
        self.assertEqual(self.make_request("GET", f"{V1}/rooms/{self.room}/threads").code, 401)

    def test_relations_of_a_thread_with_recurse(self) -> None:
        """/relations/{root}/m.thread lists replies; recurse adds reactions to the replies."""
        root = self.say(self.room, self.alice)
        reply = self.reply_in_thread(self.bob, root)
        reaction = self.react(self.alice, reply, "👍").json_body["event_id"]
        self.assertEqual([e["event_id"] for e in self.relations(self.alice, root, "m.thread")["chunk"]], [reply])
        deep = self.relations(self.alice, root, recurse="true")
        self.assertEqual([e["event_id"] for e in deep["chunk"]], [reaction, reply])
