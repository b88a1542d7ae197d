"""The services the core offers adapters (``hs.api``, ``homeserver.api.services``) on a real homeserver."""

from __future__ import annotations

from typing import Any

from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_keys import KeysTestCase
from tests.homeserver.test_rooms_core import V3, RoomsTestCase

ALICE = f"@alice:{TEST_SERVER_NAME}"
BOB = f"@bob:{TEST_SERVER_NAME}"


class MembershipAPITests(RoomsTestCase):
    def test_joined_servers_rooms_and_is_joined(self) -> None:
        """Joined members' servers, a user's joined rooms, and is_joined follow joins and leaves."""
        api = self.hs.api.membership
        room_id = self.create_room(preset="public_chat")
        self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob)
        self.assertEqual(self.get_success(api.get_joined_servers(room_id)), {TEST_SERVER_NAME})
        self.assertTrue(self.get_success(api.is_joined(room_id, BOB)))
        self.assertEqual(self.get_success(api.get_joined_rooms(BOB)), [room_id])
        self.make_request("POST", f"{V3}/rooms/{room_id}/leave", {}, access_token=self.bob)
        self.assertFalse(self.get_success(api.is_joined(room_id, BOB)))
        self.assertEqual(self.get_success(api.get_joined_rooms(BOB)), [])

    def test_unknown_room(self) -> None:
        api = self.hs.api.membership
        self.assertEqual(self.get_success(api.get_joined_servers("!nope:elsewhere")), set())
        self.assertFalse(self.get_success(api.is_joined("!nope:elsewhere", ALICE)))


class AuthAPITests(RoomsTestCase):
    def test_authenticate_and_event_visibility(self) -> None:
        """authenticate() gives the requester; can_see_event follows history visibility."""
        from tests.unittest import make_request

        channel = make_request(self.reactor, self.site, "GET", f"{V3}/account/whoami", access_token=self.alice)
        requester = self.get_success(self.hs.api.auth.authenticate(channel.request))
        self.assertEqual(requester.user_id, ALICE)
        room_id = self.create_room(initial_state=[
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}
        ])
        event_id = self.send(room_id, {"msgtype": "m.text", "body": "x"}, self.alice).json_body["event_id"]
        self.assertTrue(self.get_success(self.hs.api.auth.can_see_event(ALICE, event_id)))
        self.assertFalse(self.get_success(self.hs.api.auth.can_see_event(BOB, event_id)))
        self.assertFalse(self.get_success(self.hs.api.auth.can_see_event(ALICE, "$unknown")))


class DeviceKeysAPITests(KeysTestCase):
    def test_local_keys_for_other_servers(self) -> None:
        """query/claim answer for our users only; get_user_devices lists devices with their keys."""
        api = self.hs.api.device_keys
        assert api is not None
        alice = ALICE
        self.upload_ok(self.alice, {"device_keys": self.alice_keys(), "one_time_keys": self.alice_otks("1")})
        queried = self.get_success(api.query_local_keys({alice: [], "@carol:remote.example": []}))
        self.assertIn(self.alice_device, queried["device_keys"][alice])
        self.assertNotIn("@carol:remote.example", queried["device_keys"])
        self.assertNotIn("failures", queried)
        devices: Any = self.get_success(api.get_user_devices(alice))
        self.assertEqual(devices["user_id"], alice)
        self.assertEqual([d["device_id"] for d in devices["devices"] if "keys" in d], [self.alice_device])
        claimed = self.get_success(api.claim_local_keys({alice: {self.alice_device: "signed_curve25519"}}))
        self.assertEqual(list(claimed["one_time_keys"][alice][self.alice_device]), ["signed_curve25519:1"])


class SyncSourceRegistryTests(RoomsTestCase):
    def test_registry_names_the_built_in_sources(self) -> None:
        names = self.hs.api.sync_sources.names()
        self.assertIn("td", names)
        self.assertIn("dl", names)
