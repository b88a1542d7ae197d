"""Send-to-device messaging: delivery through ``/sync`` exactly once, in order, after reconnects,
with retried transaction IDs, ``*`` fan-out, deleted devices, limits and bad input (both databases)."""

from __future__ import annotations

import json
from typing import Any

from homeserver.e2ee.to_device import ToDeviceService
from tests.homeserver.test_sync import SyncTestCase

V3 = "/_matrix/client/v3"


class ToDeviceTestCase(SyncTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.bob_device = self.whoami(self.bob).json_body["device_id"]
        self._n = 0

    def send_to_device(
        self, token: str, messages: Any, txn: str | None = None, etype: str = "m.room_key_request"
    ) -> Any:
        if txn is None:
            self._n += 1
            txn = f"txn{self._n}"
        return self.make_request("PUT", f"{V3}/sendToDevice/{etype}/{txn}", {"messages": messages}, access_token=token)

    def send_ok(self, token: str, messages: Any, **kwargs: Any) -> None:
        channel = self.send_to_device(token, messages, **kwargs)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {})

    def count_inbox(self, user_id: str, device_id: str) -> int:
        def count_txn(txn: Any) -> int:
            txn.execute("SELECT COUNT(*) FROM to_device_inbox WHERE user_id = ? AND device_id = ?", (user_id, device_id))
            return int(txn.fetchone()[0])

        return self.get_success(self.hs.pool.run_read("count", count_txn))


class DeliveryTests(ToDeviceTestCase):
    def test_delivered_once_in_order_then_deleted(self) -> None:
        """Messages arrive in send order with sender and type; the next sync acknowledges and deletes
        them; the sender's own sync never sees them."""
        since = self.sync(self.bob)["next_batch"]
        for i in range(3):
            self.send_ok(self.alice, {"@bob:test:8448": {self.bob_device: {"n": i, "ciphertext": "opaque"}}})
        body = self.sync(self.bob, since=since)
        self.assertEqual(
            body["to_device"]["events"],
            [{"sender": "@alice:test:8448", "type": "m.room_key_request", "content": {"n": i, "ciphertext": "opaque"}}
             for i in range(3)],
        )
        self.assertEqual(self.count_inbox("@bob:test:8448", self.bob_device), 3)
        again = self.sync(self.bob, since=body["next_batch"])
        self.assertEqual(again["to_device"]["events"], [])
        self.assertEqual(self.count_inbox("@bob:test:8448", self.bob_device), 0)
        self.assertEqual(self.sync(self.alice)["to_device"]["events"], [])

    def test_redelivered_until_acknowledged(self) -> None:
        """A client that lost a response (reconnects with the old token) gets the same messages again;
        an initial sync also returns unacknowledged messages."""
        since = self.sync(self.bob)["next_batch"]
        self.send_ok(self.alice, {"@bob:test:8448": {self.bob_device: {"m": 1}}})
        first = self.sync(self.bob, since=since)["to_device"]["events"]
        retry = self.sync(self.bob, since=since)["to_device"]["events"]
        self.assertEqual(first, retry)
        self.assertEqual(len(first), 1)
        self.assertEqual(self.sync(self.bob)["to_device"]["events"], first)

    def test_retried_transaction_is_not_delivered_twice(self) -> None:
        """The same txnId from the same device stores the messages once; another device's txnId is its own."""
        since = self.sync(self.bob)["next_batch"]
        for _ in range(3):
            self.send_ok(self.alice, {"@bob:test:8448": {self.bob_device: {"m": 1}}}, txn="same")
        alice2 = self.login("alice")["access_token"]
        self.send_ok(alice2, {"@bob:test:8448": {self.bob_device: {"m": 2}}}, txn="same")
        events = self.sync(self.bob, since=since)["to_device"]["events"]
        self.assertEqual([e["content"] for e in events], [{"m": 1}, {"m": 2}])

    def test_wildcard_fans_out_to_every_device(self) -> None:
        """``*`` reaches each of the user's devices once; an explicit entry beside it wins for its device."""
        bob2 = self.login("bob")["access_token"]
        bob2_device = self.whoami(bob2).json_body["device_id"]
        since1 = self.sync(self.bob)["next_batch"]
        since2 = self.sync(bob2)["next_batch"]
        self.send_ok(self.alice, {"@bob:test:8448": {"*": {"to": "all"}, bob2_device: {"to": "two"}}})
        self.assertEqual([e["content"] for e in self.sync(self.bob, since=since1)["to_device"]["events"]], [{"to": "all"}])
        self.assertEqual([e["content"] for e in self.sync(bob2, since=since2)["to_device"]["events"]], [{"to": "two"}])

    def test_unknown_and_remote_targets_are_ignored(self) -> None:
        """Unknown local users and devices and remote users are skipped (200, nothing stored)."""
        self.send_ok(self.alice, {
            "@nobody:test:8448": {"DEV": {"a": 1}},
            "@bob:test:8448": {"NOSUCHDEVICE": {"a": 1}},
            "@carol:remote.example": {"*": {"a": 1}},
        })

        def total_txn(txn: Any) -> int:
            txn.execute("SELECT COUNT(*) FROM to_device_inbox")
            return int(txn.fetchone()[0])

        self.assertEqual(self.get_success(self.hs.pool.run_read("total", total_txn)), 0)

    def test_more_than_a_page_arrives_in_order_without_loss(self) -> None:
        """Over 100 waiting messages come 100 per sync, in order, none lost or repeated, also when a
        partial response is retried."""
        since = self.sync(self.bob)["next_batch"]
        for i in range(130):
            self.send_ok(self.alice, {"@bob:test:8448": {self.bob_device: {"i": i}}})
        first = self.sync(self.bob, since=since)
        self.assertEqual([e["content"]["i"] for e in first["to_device"]["events"]], list(range(100)))
        second = self.sync(self.bob, since=first["next_batch"])
        self.assertEqual([e["content"]["i"] for e in second["to_device"]["events"]], list(range(100, 130)))
        retry = self.sync(self.bob, since=first["next_batch"])
        self.assertEqual([e["content"]["i"] for e in retry["to_device"]["events"]], list(range(100, 130)))
        self.assertEqual(self.sync(self.bob, since=retry["next_batch"])["to_device"]["events"], [])
        self.assertEqual(self.count_inbox("@bob:test:8448", self.bob_device), 0)

    def test_deleting_a_device_deletes_its_inbox(self) -> None:
        """Logging out (which deletes the device) drops its undelivered messages."""
        self.send_ok(self.alice, {"@bob:test:8448": {self.bob_device: {"x": 1}}})
        self.assertEqual(self.count_inbox("@bob:test:8448", self.bob_device), 1)
        self.assertEqual(self.make_request("POST", f"{V3}/logout", {}, access_token=self.bob).code, 200)
        self.assertEqual(self.count_inbox("@bob:test:8448", self.bob_device), 0)

    def test_waiting_sync_is_woken(self) -> None:
        """A long-polling sync of the recipient returns as soon as a message for it is sent."""
        since = self.sync(self.bob, set_presence="offline")["next_batch"]
        channel = self.sync_channel(self.bob, since=since, timeout=30_000, set_presence="offline", await_result=False)
        self.pump(1)
        self.assertFalse(channel.is_finished())
        self.send_ok(self.alice, {"@bob:test:8448": {self.bob_device: {"wake": True}}})
        self.pump(0.1)
        self.assertTrue(channel.is_finished())
        self.assertEqual([e["content"] for e in channel.json_body["to_device"]["events"]], [{"wake": True}])

    def test_stream_position_survives_emptied_inboxes(self) -> None:
        """The position a restart reads back is the highest id handed out even when every inbox row
        was deleted, so ids never go backwards under a client's token."""
        since = self.sync(self.bob)["next_batch"]
        self.send_ok(self.alice, {"@bob:test:8448": {self.bob_device: {"a": 1}}})
        self.send_ok(self.alice, {"@bob:test:8448": {self.bob_device: {"a": 2}}})
        body = self.sync(self.bob, since=since)
        self.sync(self.bob, since=body["next_batch"])
        self.assertEqual(self.count_inbox("@bob:test:8448", self.bob_device), 0)
        stored = self.get_success(self.hs.features.get(ToDeviceService)._store.get_max_stream_id())
        self.assertEqual(stored, self.hs.features.get(ToDeviceService).current_position())
        self.assertGreaterEqual(stored, 2)


class BadInputTests(ToDeviceTestCase):
    def test_malformed_bodies_are_400(self) -> None:
        """Wrong types, bad user IDs and missing fields are 400 and store nothing."""
        for messages in ("x", ["@bob:test:8448"], {"bob": {"D": {}}}, {"@bob:test:8448": []}, {"@bob:test:8448": {"D": "content"}},
                         {"@bob:test:8448": {"": {}}}):
            channel = self.send_to_device(self.alice, messages)
            self.assertEqual(channel.code, 400, (messages, channel.json_body))
        channel = self.make_request("PUT", f"{V3}/sendToDevice/m.x/t1", {}, access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_MISSING_PARAM"))
        channel = self.make_request("PUT", f"{V3}/sendToDevice/m.x/t1", "not json", access_token=self.alice)
        self.assertEqual(channel.code, 400)
        channel = self.send_to_device(self.alice, {}, etype="m." + "x" * 300)
        self.assertEqual(channel.code, 400)
        self.assertEqual(self.send_to_device(None, {}).code, 401)  # type: ignore[arg-type]
        self.assertEqual(self.count_inbox("@bob:test:8448", self.bob_device), 0)

    def test_limits(self) -> None:
        """A body over 1 MiB and over 10,000 target devices are 413 M_TOO_LARGE."""
        big = {"@bob:test:8448": {self.bob_device: {"blob": "x" * (1024 * 1024 + 10)}}}
        channel = self.send_to_device(self.alice, big)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (413, "M_TOO_LARGE"))
        many = {"@bob:test:8448": {f"D{i}": {} for i in range(10_001)}}
        self.assertLess(len(json.dumps({"messages": many})), 1024 * 1024)
        channel = self.send_to_device(self.alice, many)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (413, "M_TOO_LARGE"))
        self.assertEqual(self.count_inbox("@bob:test:8448", self.bob_device), 0)
