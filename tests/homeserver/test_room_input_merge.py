"""The room input's merge of forks and its backfill entry point (issue 13 scenarios found these).

* A received event that forks the room is resolved together with the other forward extremities'
  states, the event itself included (it is not stored yet when its state is resolved).
* ``/messages`` asks the room input to backfill only when a backwards page reaches the start of
  what we hold; a room whose create event we hold has nothing older.
"""

from __future__ import annotations

from typing import Any

from homeserver.api.services import PDUStatus
from sc_proto.events.model import StateKey
from tests.homeserver.test_room_input import RITA, V3, RoomInputTestCase


class MergeResolutionTests(RoomInputTestCase):
    def _parent(self) -> tuple[str, dict[StateKey, str]]:
        """Rita joins and gets PL 100; returns that power-levels event and the state after it."""
        self.join_rita()
        pl = self.make_request("GET", f"{V3}/rooms/{self.room_id}/state/m.room.power_levels/", access_token=self.alice)
        content = dict(pl.json_body)
        content["users"] = dict(content.get("users", {}), **{RITA: 100})
        put = self.make_request("PUT", f"{V3}/rooms/{self.room_id}/state/m.room.power_levels/", content, access_token=self.alice)
        self.assertEqual(put.code, 200, put.json_body)
        return put.json_body["event_id"], self.state_after(put.json_body["event_id"])

    def _topic(self, topic: str) -> str:
        put = self.make_request("PUT", f"{V3}/rooms/{self.room_id}/state/m.room.topic/", {"topic": topic}, access_token=self.alice)
        self.assertEqual(put.code, 200, put.json_body)
        return str(put.json_body["event_id"])

    def test_received_event_can_win_the_merge(self) -> None:
        """Rita's topic is later (origin_server_ts) than Alice's concurrent one: state resolution picks
        it, so the received event's own state takes part in the resolution (it used to be missing,
        the resolution failed and the old current state was kept)."""
        parent, at_parent = self._parent()
        local = self._topic("alice")
        self.reactor.advance(10)
        remote = self.remote_event("m.room.topic", {"topic": "rita"}, state_key="", prevs=[parent], state=at_parent)
        self.assertEqual(self.receive(remote).status, PDUStatus.ACCEPTED)
        self.assertEqual(self.db_extremities(), {local, remote.event_id})
        self.assertEqual(self.db_current_state()[("m.room.topic", "")], remote.event_id)
        self.assertEqual(dict(self.head().state), self.db_current_state())

    def test_current_state_is_the_resolution_of_the_extremities(self) -> None:
        """With two forks, the current state is the resolution of the extremities' states, whatever
        order the remote fork's events arrived in (not the old current state resolved pairwise)."""
        parent, at_parent = self._parent()
        local = self._topic("alice")
        self.reactor.advance(10)
        r1 = self.remote_event("m.room.topic", {"topic": "rita"}, state_key="", prevs=[parent], state=at_parent)
        self.assertEqual(self.receive(r1).status, PDUStatus.ACCEPTED)
        r2 = self.remote_event(
            "m.room.name", {"name": "rita's"}, state_key="", prevs=[r1.event_id], state=self.state_after(r1.event_id)
        )
        self.assertEqual(self.receive(r2).status, PDUStatus.ACCEPTED)
        self.assertEqual(self.db_extremities(), {local, r2.event_id})
        expected = self.get_success(
            self.input.resolve(self.head().version, [self.state_after(local), self.state_after(r2.event_id)])
        )
        self.assertIsNotNone(expected)
        self.assertEqual(self.db_current_state(), expected)
        self.assertEqual(self.db_current_state()[("m.room.name", "")], r2.event_id)


class _RecordingFetcher:
    def __init__(self) -> None:
        self.asked: list[Any] = []

    async def backfill(self, destination: str, room_id: str, from_event_ids: Any, limit: int) -> list[Any]:
        self.asked.append((destination, room_id, list(from_event_ids), limit))
        return []


class BackfillEntryTests(RoomInputTestCase):
    def test_a_room_we_hold_from_its_create_event_asks_nobody(self) -> None:
        fetcher = _RecordingFetcher()
        self.input._fetcher = fetcher
        self.join_rita()
        self.assertFalse(self.get_success(self.input.backfill(self.room_id, 10)))
        self.assertFalse(self.get_success(self.input.backfill("!unknown:test", 10)))
        self.assertEqual(fetcher.asked, [])

    def test_messages_backfills_only_at_the_start_of_what_it_holds(self) -> None:
        calls: list[tuple[str, int]] = []

        async def backfill(room_id: str, limit: int) -> bool:
            calls.append((room_id, limit))
            return False

        self.hs.room_reader._backfill = backfill
        for i in range(3):
            self.send(self.room_id, {"msgtype": "m.text", "body": str(i)}, self.alice, txn=f"t{i}")
        page = self.make_request("GET", f"{V3}/rooms/{self.room_id}/messages?dir=b&limit=2", access_token=self.alice)
        self.assertEqual(page.code, 200, page.json_body)
        self.assertEqual(calls, [])
        forwards = self.make_request("GET", f"{V3}/rooms/{self.room_id}/messages?dir=f&limit=100", access_token=self.alice)
        self.assertEqual(forwards.code, 200)
        self.assertEqual(calls, [])
        rest = self.make_request(
            "GET", f"{V3}/rooms/{self.room_id}/messages?dir=b&limit=100&from={page.json_body['end']}",
            access_token=self.alice,
        )
        self.assertEqual(rest.code, 200, rest.json_body)
        self.assertNotIn("end", rest.json_body)
        self.assertEqual(calls, [(self.room_id, 100)])
