"""Review: in-memory caches of events and their client form must not serve redacted content
(both databases).

* The events cache is filled by reads. A read that started before a redaction committed returns the
  unredacted row; if it finishes after the redaction, it must not cache that row, or the event is
  served unredacted until it is evicted.
* The serialiser caches each event's viewer-independent client form, including
  ``unsigned.prev_content`` (the content of the state event it replaced). When that previous event is
  redacted later, the cached ``prev_content`` must not keep its old content.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from tests.homeserver.test_rooms_core import V3, RoomsTestCase


class EventsCacheTests(RoomsTestCase):
    def _get_event(self, room_id: str, event_id: str, token: str) -> dict[str, Any]:
        channel = self.make_request("GET", f"{V3}/rooms/{room_id}/event/{event_id}", access_token=token)
        self.assertEqual(channel.code, 200, channel.json_body)
        body: dict[str, Any] = channel.json_body
        return body

    def _redact(self, room_id: str, event_id: str, txn: str) -> None:
        channel = self.make_request("PUT", f"{V3}/rooms/{room_id}/redact/{event_id}/{txn}", {}, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)

    def test_read_racing_a_redaction_does_not_cache_the_unredacted_event(self) -> None:
        """A load that read the row before the redaction committed must not poison the cache."""
        room_id = self.create_room(preset="public_chat")
        sent = self.send(room_id, {"msgtype": "m.text", "body": "oops, my password"}, self.alice, txn="m1")
        self.assertEqual(sent.code, 200, sent.json_body)
        event_id = sent.json_body["event_id"]
        events = self.hs.rooms.events
        events._cache.pop(event_id, None)  # evicted from the LRU
        pool = self.hs.pool
        original = pool.run_read
        gate: Deferred[None] = Deferred()

        async def paused_read(desc: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
            result = await original(desc, fn, *args, **kwargs)
            if desc == "get_events":
                await gate
            return result

        pool.run_read = paused_read  # type: ignore[method-assign]
        try:
            reader = ensureDeferred(events.get_event(event_id))
        finally:
            del pool.run_read
        self._redact(room_id, event_id, "r1")
        gate.callback(None)
        self.get_success(reader)
        cached = self.get_success(events.get_event(event_id))
        assert cached is not None
        self.assertIsNotNone(cached.redacted_by)
        body = self._get_event(room_id, event_id, self.alice)
        self.assertEqual(body["content"], {})

    def test_prev_content_of_a_redacted_state_event_is_redacted(self) -> None:
        """unsigned.prev_content follows a later redaction of the replaced state event."""
        room_id = self.create_room()
        first = self.make_request("PUT", f"{V3}/rooms/{room_id}/state/m.room.topic/", {"topic": "secret plan"},
                                  access_token=self.alice)
        self.assertEqual(first.code, 200, first.json_body)
        second = self.make_request("PUT", f"{V3}/rooms/{room_id}/state/m.room.topic/", {"topic": "lunch"},
                                   access_token=self.alice)
        self.assertEqual(second.code, 200, second.json_body)
        before = self._get_event(room_id, second.json_body["event_id"], self.alice)
        self.assertEqual(before["unsigned"]["prev_content"], {"topic": "secret plan"})
        self._redact(room_id, first.json_body["event_id"], "r2")
        after = self._get_event(room_id, second.json_body["event_id"], self.alice)
        self.assertNotIn("secret plan", str(after))
        self.assertEqual(after["unsigned"]["prev_content"], {})
        self.assertEqual(after["unsigned"]["replaces_state"], first.json_body["event_id"])
