"""Interop bugs found by the cross-server tests against Synapse (issue 13), one regression test each.

* Outbound invites carried *stripped* state in ``invite_room_state``; since spec v1.16 every entry
  must be a whole PDU in the room version's format, ``m.room.create`` included. Synapse 1.163 logs
  "failed to validate `invite_room_state`" for room versions 1-11 and refuses the invite for later
  ones.
* A received state event on a fork (our room has other forward extremities) had its current state
  resolved with the event itself not yet persisted, so resolution lacked it ("state resolution is
  missing events") and the current state silently stayed as before: the event's change was lost
  until a later event merged the fork. Seen in the concurrent name/power-levels test with Synapse.
"""

from __future__ import annotations

from typing import Any

from homeserver.api.services import PDUStatus
from sc_proto.crypto.keys import get_verify_key
from sc_proto.crypto.signing import verify_json
from sc_proto.events.model import Event
from sc_proto.events.redaction import redact
from sc_proto.room_versions import get_room_version
from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_ports import CAROL, REMOTE, PortsTestCase
from tests.homeserver.test_room_input import RoomInputTestCase
from tests.homeserver.test_rooms_core import V3


class InviteRoomStateTests(PortsTestCase):
    def _invite_state(self, **create: Any) -> tuple[str, list[dict[str, Any]]]:
        room_id = self.create_room(name="Plans", **create)

        def countersign(room_version: str, event: dict[str, Any], state: list[Any]) -> dict[str, Any]:
            return {**event, "signatures": {**event["signatures"], REMOTE: {"ed25519:k": "c2ln"}}}

        self.fake.membership.answers["invite"] = countersign
        channel = self.make_request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": CAROL}, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        [(room_version, _event, state)] = self.fake.membership.called("invite")
        return room_version, state

    def test_entries_are_whole_signed_pdus_of_the_room(self) -> None:
        room_version, state = self._invite_state()
        rv = get_room_version(room_version)
        self.assertIn("m.room.create", [e["type"] for e in state])
        verify_key = get_verify_key(self.hs.signing_key)
        for pdu in state:
            for key in ("auth_events", "prev_events", "depth", "hashes", "signatures", "origin_server_ts"):
                self.assertIn(key, pdu, f"{pdu['type']} lacks {key}")
            event = Event.from_pdu(pdu, rv)  # formatted according to the room version
            self.assertTrue(event.event_id)
            verify_json(redact(pdu, rv), TEST_SERVER_NAME, verify_key)  # signed by us, unaltered

    def test_entries_are_the_current_state_events(self) -> None:
        _, state = self._invite_state()
        names = [e for e in state if e["type"] == "m.room.name"]
        self.assertEqual([e["content"]["name"] for e in names], ["Plans"])
        self.assertIn("m.room.join_rules", [e["type"] for e in state])
        self.assertNotIn("m.room.power_levels", [e["type"] for e in state])  # only the invite keys



class ForkedStateEventTests(RoomInputTestCase):
    def _fork_with_newer_remote_topic(self) -> tuple[str, str]:
        """Alice sets the topic; Rita (PL 100), on the same parent and later, sets it too."""
        self.join_rita()
        pl = self.make_request("GET", f"{V3}/rooms/{self.room_id}/state/m.room.power_levels/", access_token=self.alice)
        content = dict(pl.json_body)
        content["users"] = dict(content.get("users", {}), **{"@rita:remote:8448": 100})
        put = self.make_request("PUT", f"{V3}/rooms/{self.room_id}/state/m.room.power_levels/", content, access_token=self.alice)
        self.assertEqual(put.code, 200, put.json_body)
        parent = put.json_body["event_id"]
        at_parent = self.state_after(parent)
        local = self.make_request("PUT", f"{V3}/rooms/{self.room_id}/state/m.room.topic/", {"topic": "alice"}, access_token=self.alice)
        self.assertEqual(local.code, 200, local.json_body)
        self.reactor.advance(10)
        newer_ts = int(self.clock.time() * 1000)
        remote = self.remote_event("m.room.topic", {"topic": "rita"}, state_key="", prevs=[parent], state=at_parent, ts=newer_ts)
        with self.assertNoLogs("homeserver.events.input_queue", level="WARNING"):
            self.assertEqual(self.receive(remote).status, PDUStatus.ACCEPTED)
        return local.json_body["event_id"], remote.event_id

    def test_received_state_event_on_a_fork_takes_part_in_resolution(self) -> None:
        """Same power, same mainline: the later topic (Rita's) wins resolution (state res v2)."""
        local, remote = self._fork_with_newer_remote_topic()
        self.assertEqual(self.db_extremities(), {local, remote})
        self.assertEqual(self.db_current_state()[("m.room.topic", "")], remote)
        self.assertEqual(self.db_current_state(), dict(self.head().state))

    def test_clients_see_the_resolved_state(self) -> None:
        self._fork_with_newer_remote_topic()
        channel = self.make_request("GET", f"{V3}/rooms/{self.room_id}/state/m.room.topic/", access_token=self.alice)
        self.assertEqual(channel.json_body, {"topic": "rita"})
