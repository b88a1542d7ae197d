"""Interop bugs found by the cross-server tests against Synapse (issue 13), one regression test each.

* Outbound invites carried *stripped* state in ``invite_room_state``; since spec v1.16 every entry
  must be a whole PDU in the room version's format, ``m.room.create`` included. Synapse 1.163 logs
  "failed to validate `invite_room_state`" for room versions 1-11 and refuses the invite for later
  ones.
"""

from __future__ import annotations

from typing import Any

from sc_proto.crypto.keys import get_verify_key
from sc_proto.crypto.signing import verify_json
from sc_proto.events.model import Event
from sc_proto.events.redaction import redact
from sc_proto.room_versions import get_room_version
from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_ports import CAROL, REMOTE, PortsTestCase
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

