"""Device lists: ``device_lists.changed``/``left`` in ``/sync`` and ``/keys/changes`` across shared
rooms, joins and leaves, device deletion, the tracker API and wake-ups (both databases)."""

from __future__ import annotations

from typing import Any

from homeserver.e2ee.device_lists import DeviceListTracker
from sc_proto.crypto.keys import generate_signing_key
from tests.homeserver.test_keys import V3, KeysTestCase, device_keys


class DeviceListTestCase(KeysTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.carol_device = self.whoami(self.carol).json_body["device_id"]

    def shared_room(self, *tokens: str) -> str:
        room_id = self.create_room(preset="public_chat")
        for token in tokens:
            self.join(room_id, token)
        return room_id

    def lists(self, token: str, since: str) -> tuple[dict[str, Any], str]:
        body = self.sync(token, since=since)
        return body["device_lists"], body["next_batch"]

    def changes(self, token: str, from_token: str, to_token: str) -> Any:
        return self.make_request("GET", f"{V3}/keys/changes?from={from_token}&to={to_token}", access_token=token)


class ChangedTests(DeviceListTestCase):
    def test_key_upload_reaches_room_sharers_only(self) -> None:
        """Alice's new device keys show up for Bob (shares a room) and Alice, not for Carol."""
        self.shared_room(self.bob)
        since = {name: self.sync(tok)["next_batch"] for name, tok in
                 (("alice", self.alice), ("bob", self.bob), ("carol", self.carol))}
        self.upload_ok(self.alice, {"device_keys": self.alice_keys()})
        self.assertEqual(self.lists(self.bob, since["bob"])[0], {"changed": ["@alice:test:8448"], "left": []})
        self.assertEqual(self.lists(self.alice, since["alice"])[0]["changed"], ["@alice:test:8448"])
        self.assertEqual(self.lists(self.carol, since["carol"])[0], {"changed": [], "left": []})
        channel = self.changes(self.bob, since["bob"], self.sync(self.bob)["next_batch"])
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {"changed": ["@alice:test:8448"], "left": []})

    def test_initial_sync_and_unchanged_tokens_have_no_changes(self) -> None:
        """An initial sync lists nothing; a sync with nothing new lists nothing."""
        self.shared_room(self.bob)
        self.upload_ok(self.alice, {"device_keys": self.alice_keys()})
        body = self.sync(self.bob)
        self.assertEqual(body["device_lists"], {"changed": [], "left": []})
        self.assertEqual(self.lists(self.bob, body["next_batch"])[0], {"changed": [], "left": []})

    def test_joining_a_shared_room_lists_new_sharers(self) -> None:
        """When Carol joins, she sees the members as changed and they see her."""
        room_id = self.shared_room(self.bob)
        since_carol = self.sync(self.carol)["next_batch"]
        since_alice = self.sync(self.alice)["next_batch"]
        self.join(room_id, self.carol)
        self.assertEqual(self.lists(self.carol, since_carol)[0], {"changed": ["@alice:test:8448", "@bob:test:8448"], "left": []})
        self.assertEqual(self.lists(self.alice, since_alice)[0], {"changed": ["@carol:test:8448"], "left": []})

    def test_device_deletion_is_a_change_only_with_keys(self) -> None:
        """Deleting a device that had keys is a change for room sharers; one without keys is not."""
        self.shared_room(self.bob)
        alice2 = self.login("alice")["access_token"]
        alice2_device = self.whoami(alice2).json_body["device_id"]
        alice3 = self.login("alice")["access_token"]
        self.upload_ok(alice2, {"device_keys": device_keys("@alice:test:8448", alice2_device, generate_signing_key("z"))})
        since = self.sync(self.bob)["next_batch"]
        self.assertEqual(self.make_request("POST", f"{V3}/logout", {}, access_token=alice3).code, 200)
        self.assertEqual(self.lists(self.bob, since)[0]["changed"], [])
        self.assertEqual(self.make_request("POST", f"{V3}/logout", {}, access_token=alice2).code, 200)
        self.assertEqual(self.lists(self.bob, since)[0]["changed"], ["@alice:test:8448"])
        channel = self.query(self.bob, {"@alice:test:8448": []})
        self.assertEqual(channel.json_body["device_keys"], {})

    def test_tracker_api_records_changes(self) -> None:
        """``record_change`` (used by cross-signing) is seen like a key upload."""
        self.shared_room(self.bob)
        since = self.sync(self.bob)["next_batch"]
        position = self.get_success(self.hs.features.get(DeviceListTracker).record_change("@alice:test:8448"))
        self.assertEqual(position, self.hs.features.get(DeviceListTracker).current_position())
        self.assertEqual(self.lists(self.bob, since)[0]["changed"], ["@alice:test:8448"])

    def test_waiting_sync_is_woken_by_a_change(self) -> None:
        """Bob's long poll returns when Alice (a room sharer) uploads keys."""
        self.shared_room(self.bob)
        since = self.sync(self.bob, set_presence="offline")["next_batch"]
        channel = self.sync_channel(self.bob, since=since, timeout=30_000, set_presence="offline", await_result=False)
        self.pump(1)
        self.assertFalse(channel.is_finished())
        self.upload_ok(self.alice, {"device_keys": self.alice_keys()})
        self.pump(0.1)
        self.assertTrue(channel.is_finished())
        self.assertEqual(channel.json_body["device_lists"]["changed"], ["@alice:test:8448"])


class LeftTests(DeviceListTestCase):
    def test_leaving_the_only_shared_room(self) -> None:
        """When Carol leaves, Alice and Bob see her in ``left`` and she sees them."""
        room_id = self.shared_room(self.bob, self.carol)
        since = {name: self.sync(tok)["next_batch"] for name, tok in
                 (("alice", self.alice), ("carol", self.carol))}
        self.post(room_id, "leave", self.carol)
        self.assertEqual(self.lists(self.alice, since["alice"])[0], {"changed": [], "left": ["@carol:test:8448"]})
        self.assertEqual(self.lists(self.carol, since["carol"])[0], {"changed": [], "left": ["@alice:test:8448", "@bob:test:8448"]})
        channel = self.changes(self.alice, since["alice"], self.sync(self.alice)["next_batch"])
        self.assertEqual(channel.json_body, {"changed": [], "left": ["@carol:test:8448"]})

    def test_still_sharing_another_room_is_not_left(self) -> None:
        """Leaving one of two shared rooms keeps the users tracked."""
        room1 = self.shared_room(self.bob)
        self.shared_room(self.bob)
        since = self.sync(self.alice)["next_batch"]
        self.post(room1, "leave", self.bob)
        self.assertEqual(self.lists(self.alice, since)[0], {"changed": [], "left": []})

    def test_kicked_user_is_left(self) -> None:
        """A kick ends sharing like a leave."""
        room_id = self.shared_room(self.bob)
        since = self.sync(self.alice)["next_batch"]
        self.post(room_id, "kick", self.alice, {"user_id": "@bob:test:8448"})
        self.assertEqual(self.lists(self.alice, since)[0]["left"], ["@bob:test:8448"])


class KeysChangesInputTests(DeviceListTestCase):
    def test_bad_tokens_are_400(self) -> None:
        """Missing or malformed ``from``/``to`` are 400."""
        good = self.sync(self.alice)["next_batch"]
        self.assertEqual(self.make_request("GET", f"{V3}/keys/changes?from={good}", access_token=self.alice).code, 400)
        self.assertEqual(self.changes(self.alice, "garbage", good).code, 400)
        self.assertEqual(self.changes(self.alice, good, "sc1_x").code, 400)
        self.assertEqual(self.make_request("GET", f"{V3}/keys/changes?from={good}&to={good}").code, 401)
