"""Review: the cached room head must never be replaced by an older one (both databases).

A room head loaded outside the room's queue turn (a read receipt's membership check, ``/state``,
``/joined_members``, ...) reads the current state, the forward extremities and their depth in separate
transactions. If the room moves on while that load is in flight, the load mixes old and new rows; it
must not be installed over the newer head the write path has just cached, or the next event is
authorised against stale state (a banned user could still send) and forks the room's DAG.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from tests.homeserver.test_rooms_core import V3, RoomsTestCase


class StaleHeadTests(RoomsTestCase):
    def _join_bob(self, room_id: str) -> None:
        channel = self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob)
        self.assertEqual(channel.code, 200, channel.json_body)

    def _paused_head_load(self, room_id: str) -> tuple[Deferred[Any], Deferred[None]]:
        """Starts a head load (outside the room's queue) that has read the current state and then
        pauses until the returned gate fires, as a slow database read would."""
        rooms_store = self.hs.rooms.rooms
        original = rooms_store.get_current_state_ids
        gate: Deferred[None] = Deferred()

        async def paused(room_nid: int) -> Any:
            state = await original(room_nid)
            await gate
            return state

        rooms_store.get_current_state_ids = paused  # type: ignore[method-assign]
        try:
            reader = ensureDeferred(self.hs.rooms.creator.get_head(room_id))
        finally:
            del rooms_store.get_current_state_ids  # back to the class method
        return reader, gate

    def test_stale_load_does_not_undo_a_ban(self) -> None:
        """SEC: a head read before a ban and finished after it must not let the banned user send."""
        room_id = self.create_room(preset="public_chat")
        self._join_bob(room_id)
        creator = self.hs.rooms.creator
        creator._heads.clear()  # evicted from the LRU (or a fresh process)
        reader, gate = self._paused_head_load(room_id)
        ban = self.make_request("POST", f"{V3}/rooms/{room_id}/ban", {"user_id": "@bob:test:8448"}, access_token=self.alice)
        self.assertEqual(ban.code, 200, ban.json_body)
        gate.callback(None)
        self.get_success(reader)
        channel = self.send(room_id, {"msgtype": "m.text", "body": "still here?"}, self.bob, txn="after-ban")
        self.assertEqual(channel.code, 403, channel.json_body)
        head = self.get_success(creator.get_head(room_id))
        assert head is not None
        member = head.state[("m.room.member", "@bob:test:8448")]
        stored = self.get_success(self.hs.rooms.events.get_event(member))
        assert stored is not None
        self.assertEqual(stored.event.membership, "ban")

    def test_stale_load_does_not_fork_the_room(self) -> None:
        """A stale head must not make the next event point at an old extremity (one extremity stays)."""
        room_id = self.create_room(preset="public_chat")
        creator = self.hs.rooms.creator
        creator._heads.clear()
        reader, gate = self._paused_head_load(room_id)
        first = self.send(room_id, {"msgtype": "m.text", "body": "one"}, self.alice, txn="one")
        self.assertEqual(first.code, 200, first.json_body)
        topic = self.make_request("PUT", f"{V3}/rooms/{room_id}/state/m.room.topic/", {"topic": "t"}, access_token=self.alice)
        self.assertEqual(topic.code, 200, topic.json_body)
        gate.callback(None)
        self.get_success(reader)
        second = self.send(room_id, {"msgtype": "m.text", "body": "two"}, self.alice, txn="two")
        self.assertEqual(second.code, 200, second.json_body)
        head = self.get_success(creator.get_head(room_id))
        assert head is not None
        extremities = self.get_success(self.hs.rooms.rooms.get_forward_extremities(head.room.room_nid))
        self.assertEqual(extremities, [second.json_body["event_id"]])
        self.assertIn(("m.room.topic", ""), head.state)

    def test_load_in_the_queue_is_still_cached(self) -> None:
        """The fix keeps the cache useful: a head loaded with no write in between is remembered."""
        room_id = self.create_room()
        creator = self.hs.rooms.creator
        creator._heads.clear()
        first = self.get_success(creator.get_head(room_id))
        second = self.get_success(creator.get_head(room_id))
        self.assertIs(first, second)
