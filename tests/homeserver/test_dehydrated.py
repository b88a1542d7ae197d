"""Dehydrated devices (MSC3814): upload, fetch, replace, delete, rehydration with ``next_batch``
pagination, key distribution to other users, cleanup and bad input (both databases)."""

from __future__ import annotations

from typing import Any

from sc_proto.crypto.keys import SigningKey, generate_signing_key
from tests.homeserver.test_keys import device_keys, otk
from tests.homeserver.test_sync import SyncTestCase

V3 = "/_matrix/client/v3"
MSC = "/_matrix/client/unstable/org.matrix.msc3814.v1"
PATH = f"{MSC}/dehydrated_device"
ALGORITHM = "org.matrix.msc3814.v1.olm"


class DehydratedTestCase(SyncTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.alice_device = self.whoami(self.alice).json_body["device_id"]
        self._n = 0

    def body(self, device_id: str = "CurveKeyA", user_id: str = "@alice:test:8448", key: SigningKey | None = None,
             **override: Any) -> dict[str, Any]:
        """A complete PUT body: device data, signed device keys, two one-time keys and a fallback key."""
        key = key or generate_signing_key("d")
        body: dict[str, Any] = {
            "device_id": device_id,
            "device_data": {"algorithm": ALGORITHM, "device_pickle": "opaque-ciphertext"},
            "initial_device_display_name": "Dehydrated device",
            "device_keys": device_keys(user_id, device_id, key, dehydrated=True),
            "one_time_keys": {
                f"signed_curve25519:{n}": otk(user_id, device_id, key, f"otk{n}") for n in ("AAA", "AAB")
            },
            "fallback_keys": {"signed_curve25519:FB": otk(user_id, device_id, key, "fb", fallback=True)},
        }
        body.update(override)
        return body

    def put(self, body: Any, token: str | None = None) -> Any:
        return self.make_request("PUT", PATH, body, access_token=token or self.alice)

    def put_ok(self, body: Any, token: str | None = None) -> str:
        channel = self.put(body, token)
        self.assertEqual(channel.code, 200, channel.json_body)
        device_id: str = channel.json_body["device_id"]
        return device_id

    def get(self, token: str | None = None) -> Any:
        return self.make_request("GET", PATH, access_token=token or self.alice)

    def events(self, device_id: str, body: Any = None, token: str | None = None) -> Any:
        return self.make_request("POST", f"{PATH}/{device_id}/events", body, access_token=token or self.alice)

    def events_ok(self, device_id: str, next_batch: str | None = None) -> dict[str, Any]:
        channel = self.events(device_id, {} if next_batch is None else {"next_batch": next_batch})
        self.assertEqual(channel.code, 200, channel.json_body)
        result: dict[str, Any] = channel.json_body
        return result

    def send_to(self, device_id: str, n: int, token: str | None = None) -> None:
        self._n += 1
        channel = self.make_request(
            "PUT", f"{V3}/sendToDevice/m.room.encrypted/t{self._n}",
            {"messages": {"@alice:test:8448": {device_id: {"n": n, "ciphertext": "olm"}}}}, access_token=token or self.bob,
        )
        self.assertEqual(channel.code, 200, channel.json_body)

    def count(self, table: str, device_id: str) -> int:
        def count_txn(txn: Any) -> int:
            txn.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id = ? AND device_id = ?", ("@alice:test:8448", device_id))
            return int(txn.fetchone()[0])

        return self.get_success(self.hs.pool.run_read("count", count_txn))

    def query_devices(self, token: str) -> dict[str, Any]:
        channel = self.make_request("POST", f"{V3}/keys/query", {"device_keys": {"@alice:test:8448": []}}, access_token=token)
        self.assertEqual(channel.code, 200, channel.json_body)
        found: dict[str, Any] = channel.json_body["device_keys"].get("@alice:test:8448", {})
        return found


class LifecycleTests(DehydratedTestCase):
    def test_put_then_get_round_trips_device_data(self) -> None:
        """PUT answers the device ID; GET returns it with the device data as uploaded."""
        self.assertEqual(self.put_ok(self.body()), "CurveKeyA")
        channel = self.get()
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(
            channel.json_body,
            {"device_id": "CurveKeyA", "device_data": {"algorithm": ALGORITHM, "device_pickle": "opaque-ciphertext"}},
        )

    def test_get_without_device_is_404(self) -> None:
        channel = self.get()
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))

    def test_devices_are_per_user(self) -> None:
        """Bob does not see Alice's dehydrated device."""
        self.put_ok(self.body())
        self.assertEqual(self.get(self.bob).code, 404)

    def test_device_is_listed_with_its_display_name(self) -> None:
        self.put_ok(self.body())
        channel = self.make_request("GET", f"{V3}/devices/CurveKeyA", access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["display_name"], "Dehydrated device")

    def test_new_upload_replaces_old_device_with_keys_and_messages(self) -> None:
        """One dehydrated device per user: the old one goes with its keys and inbox."""
        self.put_ok(self.body("OldCurve"))
        self.send_to("OldCurve", 1)
        self.assertEqual(self.count("to_device_inbox", "OldCurve"), 1)
        self.put_ok(self.body("NewCurve"))
        self.assertEqual(self.get().json_body["device_id"], "NewCurve")
        for table in ("devices", "e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys", "to_device_inbox"):
            self.assertEqual(self.count(table, "OldCurve"), 0, table)
        self.assertEqual(list(self.query_devices(self.bob)), ["NewCurve"])  # Alice's live device has no keys
        channel = self.events("OldCurve")
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))

    def test_reupload_with_same_device_id_starts_afresh(self) -> None:
        self.put_ok(self.body())
        self.send_to("CurveKeyA", 1)
        self.put_ok(self.body(device_data={"algorithm": ALGORITHM, "device_pickle": "v2"}))
        self.assertEqual(self.get().json_body["device_data"]["device_pickle"], "v2")
        self.assertEqual(self.events_ok("CurveKeyA")["events"], [])

    def test_delete_removes_everything(self) -> None:
        self.put_ok(self.body())
        self.send_to("CurveKeyA", 1)
        channel = self.make_request("DELETE", PATH, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {"device_id": "CurveKeyA"})
        self.assertEqual(self.get().code, 404)
        for table in ("devices", "e2e_device_keys", "e2e_one_time_keys", "to_device_inbox"):
            self.assertEqual(self.count(table, "CurveKeyA"), 0, table)
        again = self.make_request("DELETE", PATH, access_token=self.alice)
        self.assertEqual((again.code, again.json_body["errcode"]), (404, "M_NOT_FOUND"))

    def test_deleting_the_device_row_forgets_the_dehydrated_device(self) -> None:
        """However the device row goes (device deletion, session limit, deactivation), GET follows."""
        self.put_ok(self.body())
        self.get_success(self.hs.stores.devices.delete_devices("@alice:test:8448", ["CurveKeyA"]))
        self.assertEqual(self.get().code, 404)
        self.put_ok(self.body("Second"))
        self.get_success(self.hs.stores.devices.delete_all_devices("@alice:test:8448", except_device_id=self.alice_device))
        self.assertEqual(self.get().code, 404)

    def test_unauthenticated_and_guest_requests_are_refused(self) -> None:
        for method, path in (("PUT", PATH), ("GET", PATH), ("DELETE", PATH), ("POST", f"{PATH}/X/events")):
            channel = self.make_request(method, path, {} if method in ("PUT", "POST") else None)
            self.assertEqual(channel.code, 401, (method, path))
        self.get_success(self.hs.stores.users.create_user("@guest1:test:8448", None, 0, is_guest=True))
        session = self.get_success(self.hs.sessions.create_session(
            "@guest1:test:8448", device_id=None, display_name=None, want_refresh=False, ip=None, user_agent=None
        ))
        channel = self.get(str(session.access_token))
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_GUEST_ACCESS_FORBIDDEN"))


class KeyDistributionTests(DehydratedTestCase):
    def test_other_users_see_keys_and_claim_one_time_keys(self) -> None:
        """Bob finds the dehydrated device in /keys/query and claims its one-time keys, then its
        fallback key: so he can send it room keys."""
        self.put_ok(self.body())
        found = self.query_devices(self.bob)
        self.assertIn("CurveKeyA", found)
        self.assertTrue(found["CurveKeyA"]["dehydrated"])
        claimed = []
        for _ in range(3):
            channel = self.make_request(
                "POST", f"{V3}/keys/claim", {"one_time_keys": {"@alice:test:8448": {"CurveKeyA": "signed_curve25519"}}},
                access_token=self.bob,
            )
            self.assertEqual(channel.code, 200, channel.json_body)
            claimed.append(next(iter(channel.json_body["one_time_keys"]["@alice:test:8448"]["CurveKeyA"].values()))["key"])
        self.assertEqual(sorted(claimed[:2]), ["otkAAA", "otkAAB"])
        self.assertEqual(claimed[2], "fb")

    def test_upload_is_a_device_list_change_for_room_members(self) -> None:
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        since = self.sync(self.bob)["next_batch"]
        self.put_ok(self.body())
        body = self.sync(self.bob, since=since, timeout=0)
        self.assertIn("@alice:test:8448", body.get("device_lists", {}).get("changed", []))


class RehydrationTests(DehydratedTestCase):
    def test_events_are_paginated_and_never_deleted(self) -> None:
        """150 messages come as 100 + 50; the token after the last batch gives an empty batch and
        itself again; nothing is deleted, so starting over returns the same messages."""
        self.put_ok(self.body())
        for n in range(150):
            self.send_to("CurveKeyA", n)
        first = self.events_ok("CurveKeyA")
        self.assertEqual([e["content"]["n"] for e in first["events"]], list(range(100)))
        self.assertEqual(first["events"][0], {"sender": "@bob:test:8448", "type": "m.room.encrypted",
                                              "content": {"n": 0, "ciphertext": "olm"}})
        second = self.events_ok("CurveKeyA", first["next_batch"])
        self.assertEqual([e["content"]["n"] for e in second["events"]], list(range(100, 150)))
        last = self.events_ok("CurveKeyA", second["next_batch"])
        self.assertEqual(last, {"events": [], "next_batch": second["next_batch"]})
        self.assertEqual(self.count("to_device_inbox", "CurveKeyA"), 150)
        self.assertEqual(self.events_ok("CurveKeyA")["events"], first["events"])

    def test_messages_sent_later_follow_the_last_token(self) -> None:
        self.put_ok(self.body())
        empty = self.events_ok("CurveKeyA")
        self.assertEqual(empty["events"], [])
        self.send_to("CurveKeyA", 7)
        later = self.events_ok("CurveKeyA", empty["next_batch"])
        self.assertEqual([e["content"]["n"] for e in later["events"]], [7])

    def test_wildcard_messages_reach_the_dehydrated_device(self) -> None:
        self.put_ok(self.body())
        self.make_request(
            "PUT", f"{V3}/sendToDevice/m.room.encrypted/w1", {"messages": {"@alice:test:8448": {"*": {"all": True}}}},
            access_token=self.bob,
        )
        self.assertEqual([e["content"] for e in self.events_ok("CurveKeyA")["events"]], [{"all": True}])

    def test_empty_body_is_allowed(self) -> None:
        self.put_ok(self.body())
        channel = self.events("CurveKeyA", None)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["events"], [])

    def test_events_of_another_device_are_forbidden(self) -> None:
        """Only the current dehydrated device's inbox is readable: not a live device's, not another
        user's dehydrated device."""
        self.put_ok(self.body())
        bob_body = self.body("BobCurve", user_id="@bob:test:8448")
        self.put_ok(bob_body, token=self.bob)
        for device_id in (self.alice_device, "BobCurve", "Nope"):
            channel = self.events(device_id)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"), device_id)
        self.assertEqual(self.events("CurveKeyA", token=self.bob).code, 403)

    def test_bad_tokens_are_refused(self) -> None:
        self.put_ok(self.body())
        for token in ("abc", 5, "-1", "1" * 19, "", [], "1.5"):
            channel = self.events("CurveKeyA", {"next_batch": token})
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"), token)
        self.assertEqual(self.events("CurveKeyA", [1]).json_body["errcode"], "M_NOT_JSON")
        self.assertEqual(self.events("CurveKeyA", "x" * 5000).code, 413)


class BadUploadTests(DehydratedTestCase):
    def assert_refused(self, body: Any, code: int, errcode: str) -> None:
        channel = self.put(body)
        self.assertEqual((channel.code, channel.json_body.get("errcode")), (code, errcode), channel.json_body)
        self.assertEqual(self.get().code, 404)

    def test_missing_fields(self) -> None:
        for field in ("device_id", "device_data", "device_keys"):
            body = self.body()
            del body[field]
            self.assert_refused(body, 400, "M_MISSING_PARAM")

    def test_malformed_fields(self) -> None:
        for override in (
            {"device_id": "has space"},
            {"device_id": 12},
            {"device_id": "x" * 300},
            {"device_data": "pickle"},
            {"device_data": {"device_pickle": "no algorithm"}},
            {"device_data": {"algorithm": 1}},
            {"initial_device_display_name": 5},
            {"initial_device_display_name": "n" * 257},
        ):
            body = self.body()
            body.update(override)
            self.assert_refused(body, 400, "M_INVALID_PARAM")

    def test_keys_must_be_the_devices_own_and_signed(self) -> None:
        key = generate_signing_key("k")
        self.assert_refused(self.body(device_keys=device_keys("@alice:test:8448", "Other", key)), 400, "M_INVALID_PARAM")
        self.assert_refused(self.body(device_keys=device_keys("@bob:test:8448", "CurveKeyA", key)), 400, "M_INVALID_PARAM")
        forged = self.body()
        forged["device_keys"]["algorithms"] = ["changed.after.signing"]
        self.assert_refused(forged, 400, "M_INVALID_PARAM")
        self.assert_refused(self.body(device_keys="keys"), 400, "M_BAD_JSON")
        self.assert_refused(self.body(one_time_keys={"nocolon": "k"}), 400, "M_BAD_JSON")

    def test_oversized_device_data(self) -> None:
        self.assert_refused(self.body(device_data={"algorithm": ALGORITHM, "p": "x" * 300_000}), 413, "M_TOO_LARGE")

    def test_not_json(self) -> None:
        self.assert_refused(b"{not json", 400, "M_NOT_JSON")
        self.assert_refused([1, 2], 400, "M_NOT_JSON")

    def test_live_device_id_is_refused_and_previous_device_kept(self) -> None:
        """A dehydrated device may not take over a session's device; the failed upload rolls back,
        so the previous dehydrated device survives."""
        self.put_ok(self.body())
        channel = self.put(self.body(self.alice_device))
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        self.assertEqual(self.get().json_body["device_id"], "CurveKeyA")
        self.assertEqual(self.count("e2e_one_time_keys", "CurveKeyA"), 2)

    def test_cross_signing_key_as_device_id_is_refused(self) -> None:
        def add_txn(txn: Any) -> None:
            txn.execute(
                "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json, updated_ts)"
                " VALUES (?, ?, ?, ?, ?)",
                ("@alice:test:8448", "master", "MasterKeyPub", "{}", 0),
            )

        self.get_success(self.hs.pool.run_txn("add", add_txn))
        self.assert_refused(self.body("MasterKeyPub"), 400, "M_INVALID_PARAM")


class AdvertisedTests(DehydratedTestCase):
    def test_versions_advertises_msc3814(self) -> None:
        """Element checks unstable_features before using dehydrated devices."""
        body = self.make_request("GET", "/_matrix/client/versions").json_body
        self.assertIs(body["unstable_features"].get("org.matrix.msc3814"), True)
