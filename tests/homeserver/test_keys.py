"""End-to-end keys: ``/keys/upload``, ``/keys/query``, ``/keys/claim``, key counts in ``/sync``, and
opaque ``m.room.encrypted`` events (both databases; the atomic claim also under real threads)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet import defer

from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.one_time_keys import OneTimeKeyService
from homeserver.storage.pool import DatabasePool
from homeserver.storage.stores.e2e_keys import E2EKeyStore, StoredKey
from sc_proto.crypto.keys import SigningKey, generate_signing_key
from sc_proto.crypto.signing import sign_json
from tests.homeserver.test_sync import SyncTestCase
from tests.storage.conftest import _pg_prepared_db, postgres_server, prepared_database  # noqa: F401 - fixtures
from tests.storage.harness import TestDatabase, ThreadCallbackReactor

V3 = "/_matrix/client/v3"
OLM = "m.olm.v1.curve25519-aes-sha2"
MEGOLM = "m.megolm.v1.aes-sha2"


def device_keys(user_id: str, device_id: str, key: SigningKey, **override: Any) -> dict[str, Any]:
    """A device-keys object signed by ``key`` as ``ed25519:<device_id>`` (``override`` replaces fields
    before signing)."""
    from sc_proto.crypto.keys import encode_verify_key_base64, get_verify_key

    body: dict[str, Any] = {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": [OLM, MEGOLM],
        "keys": {
            f"curve25519:{device_id}": "curve" + device_id,
            f"ed25519:{device_id}": encode_verify_key_base64(get_verify_key(key)),
        },
    }
    body.update(override)
    return sign_json(body, user_id, key, key_id=f"ed25519:{device_id}")


def otk(user_id: str, device_id: str, key: SigningKey, value: str, fallback: bool = False) -> dict[str, Any]:
    """A signed one-time (or fallback) key object."""
    body: dict[str, Any] = {"key": value}
    if fallback:
        body["fallback"] = True
    return sign_json(body, user_id, key, key_id=f"ed25519:{device_id}")


class KeysTestCase(SyncTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.alice_device = self.whoami(self.alice).json_body["device_id"]
        self.bob_device = self.whoami(self.bob).json_body["device_id"]
        self.alice_key = generate_signing_key("a")
        self.bob_key = generate_signing_key("b")

    def upload(self, token: str, body: Any) -> Any:
        return self.make_request("POST", f"{V3}/keys/upload", body, access_token=token)

    def upload_ok(self, token: str, body: Any) -> dict[str, Any]:
        channel = self.upload(token, body)
        self.assertEqual(channel.code, 200, channel.json_body)
        result: dict[str, Any] = channel.json_body
        return result

    def query(self, token: str, device_keys: Any) -> Any:
        return self.make_request("POST", f"{V3}/keys/query", {"device_keys": device_keys}, access_token=token)

    def claim(self, token: str, one_time_keys: Any) -> Any:
        return self.make_request("POST", f"{V3}/keys/claim", {"one_time_keys": one_time_keys}, access_token=token)

    def alice_keys(self, **override: Any) -> dict[str, Any]:
        return device_keys("@alice:test:8448", self.alice_device, self.alice_key, **override)

    def alice_otks(self, *names: str) -> dict[str, Any]:
        return {
            f"signed_curve25519:{n}": otk("@alice:test:8448", self.alice_device, self.alice_key, f"k{n}") for n in names
        }

    def stored_device_keys(self) -> Any:
        return self.get_success(self.hs.stores.e2e_keys.get_device_keys([("@alice:test:8448", None)]))


class UploadTests(KeysTestCase):
    def test_upload_and_query_device_keys(self) -> None:
        """Signed device keys are stored and returned by /keys/query with the device's display name."""
        self.make_request("PUT", f"{V3}/devices/{self.alice_device}", {"display_name": "Phone"}, access_token=self.alice)
        body = self.upload_ok(self.alice, {"device_keys": self.alice_keys()})
        self.assertEqual(body, {"one_time_key_counts": {"signed_curve25519": 0}})
        channel = self.query(self.bob, {"@alice:test:8448": []})
        self.assertEqual(channel.code, 200, channel.json_body)
        got = channel.json_body["device_keys"]["@alice:test:8448"][self.alice_device]
        expected = self.alice_keys()
        self.assertEqual({k: v for k, v in got.items() if k != "unsigned"}, expected)
        self.assertEqual(got["unsigned"], {"device_display_name": "Phone"})
        self.assertEqual(channel.json_body["failures"], {})

    def test_query_specific_devices_unknown_users_and_remote(self) -> None:
        """Device lists filter; unknown local users are left out; remote users fail per server."""
        self.upload_ok(self.alice, {"device_keys": self.alice_keys()})
        channel = self.query(
            self.bob, {"@alice:test:8448": ["NOPE"], "@nobody:test:8448": [], "@carol:remote.example": []}
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["device_keys"], {})
        self.assertEqual(list(channel.json_body["failures"]), ["remote.example"])
        channel = self.query(self.bob, {"@alice:test:8448": [self.alice_device]})
        self.assertEqual(list(channel.json_body["device_keys"]["@alice:test:8448"]), [self.alice_device])

    def test_owner_mismatch_is_400_and_stores_nothing(self) -> None:
        """Keys naming another user or another device are refused whole, one-time keys included."""
        for keys in (
            device_keys("@bob:test:8448", self.alice_device, self.alice_key),
            device_keys("@alice:test:8448", "OTHERDEVICE", self.alice_key),
            device_keys("@bob:test:8448", self.bob_device, self.bob_key),
        ):
            channel = self.upload(self.alice, {"device_keys": keys, "one_time_keys": self.alice_otks("A")})
            self.assertEqual(channel.code, 400, channel.json_body)
        self.assertEqual(self.stored_device_keys(), {})
        self.assertEqual(self.get_success(self.hs.features.get(OneTimeKeyService).get_counts("@alice:test:8448", self.alice_device)),
                         {"signed_curve25519": 0})

    def test_bad_signatures_are_400(self) -> None:
        """Unsigned, wrongly signed, tampered and other-key-signed device keys are refused."""
        good = self.alice_keys()
        unsigned = {k: v for k, v in good.items() if k != "signatures"}
        unsigned["signatures"] = {}
        tampered = json.loads(json.dumps(good))
        tampered["algorithms"] = [OLM]
        other_key = device_keys("@alice:test:8448", self.alice_device, generate_signing_key("x"))
        # Claims another key as its ed25519 key but is signed by the real one.
        swapped = json.loads(json.dumps(good))
        swapped["keys"][f"ed25519:{self.alice_device}"] = other_key["keys"][f"ed25519:{self.alice_device}"]
        bad_b64 = json.loads(json.dumps(good))
        bad_b64["signatures"]["@alice:test:8448"][f"ed25519:{self.alice_device}"] = "!!!"
        for keys in (unsigned, tampered, swapped, bad_b64):
            channel = self.upload(self.alice, {"device_keys": keys})
            self.assertEqual(channel.code, 400, (keys, channel.json_body))
            self.assertIn(channel.json_body["errcode"], ("M_INVALID_PARAM", "M_BAD_JSON"))
        self.assertEqual(self.stored_device_keys(), {})

    def test_malformed_bodies_are_400(self) -> None:
        """Wrong types and malformed algorithms or key IDs are 400 and store nothing."""
        cases: list[Any] = [
            {"device_keys": "keys"},
            {"device_keys": self.alice_keys(algorithms="m.olm")},
            {"device_keys": self.alice_keys(algorithms=[OLM, 5])},
            {"device_keys": self.alice_keys(algorithms=[""])},
            {"device_keys": self.alice_keys(keys={f"curve25519:{self.alice_device}": "x"})},
            {"device_keys": self.alice_keys(keys={f"ed25519:{self.alice_device}": 5})},
            {"device_keys": self.alice_keys(keys=["x"])},
            {"device_keys": self.alice_keys(algorithms=["a"] * 100)},
            {"one_time_keys": []},
            {"one_time_keys": {"nocolon": "k"}},
            {"one_time_keys": {"signed_curve25519:": "k"}},
            {"one_time_keys": {"signed_curve25519:A": 5}},
            {"one_time_keys": {"signed_curve25519:A": {"signatures": {}}}},
            {"one_time_keys": {"signed_curve25519:A": {"key": "k", "fallback": "yes"}}},
            {"one_time_keys": {f"signed_curve25519:{i}": "k" for i in range(1001)}},
            {"fallback_keys": {"signed_curve25519:A": "k", "signed_curve25519:B": "k"}},
            {"fallback_keys": "k"},
        ]
        for body in cases:
            channel = self.upload(self.alice, body)
            too_many = len(body.get("one_time_keys") or ()) > 1000
            self.assertEqual(channel.code, 413 if too_many else 400, (body, channel.json_body))
        channel = self.upload(self.alice, "[]")
        self.assertEqual(channel.code, 400)
        self.assertEqual(self.stored_device_keys(), {})

    def test_one_time_key_reupload(self) -> None:
        """Same ID and content is a no-op; same ID with different content is 400 and stores nothing."""
        self.assertEqual(self.upload_ok(self.alice, {"one_time_keys": self.alice_otks("A", "B")}),
                         {"one_time_key_counts": {"signed_curve25519": 2}})
        self.assertEqual(self.upload_ok(self.alice, {"one_time_keys": self.alice_otks("A")}),
                         {"one_time_key_counts": {"signed_curve25519": 2}})
        changed = {"signed_curve25519:A": "different", "signed_curve25519:C": "new"}
        channel = self.upload(self.alice, {"one_time_keys": changed, "device_keys": self.alice_keys()})
        self.assertEqual(channel.code, 400, channel.json_body)
        self.assertEqual(self.upload_ok(self.alice, {})["one_time_key_counts"], {"signed_curve25519": 2})
        self.assertEqual(self.stored_device_keys(), {})

    def test_device_keys_reupload_is_idempotent(self) -> None:
        """Re-uploading identical device keys changes nothing (no device-list change)."""
        self.upload_ok(self.alice, {"device_keys": self.alice_keys()})
        position = self.hs.features.get(DeviceListTracker).current_position()
        self.upload_ok(self.alice, {"device_keys": self.alice_keys()})
        self.assertEqual(self.hs.features.get(DeviceListTracker).current_position(), position)

    def test_device_less_token_and_unauthenticated(self) -> None:
        """Uploads need an access token."""
        channel = self.make_request("POST", f"{V3}/keys/upload", {})
        self.assertEqual(channel.code, 401)
        for path in ("query", "claim"):
            self.assertEqual(self.make_request("POST", f"{V3}/keys/{path}", {}).code, 401)


class ClaimTests(KeysTestCase):
    def test_claim_oldest_first_and_counts_decrease(self) -> None:
        """Keys come out in upload order, each once; counts decrease; an empty device gives nothing."""
        self.upload_ok(self.alice, {"device_keys": self.alice_keys(), "one_time_keys": self.alice_otks("A")})
        self.reactor.advance(1)
        self.upload_ok(self.alice, {"one_time_keys": self.alice_otks("B")})
        claimed = []
        for _ in range(3):
            channel = self.claim(self.bob, {"@alice:test:8448": {self.alice_device: "signed_curve25519"}})
            self.assertEqual(channel.code, 200, channel.json_body)
            claimed.append(channel.json_body["one_time_keys"].get("@alice:test:8448", {}).get(self.alice_device))
        self.assertEqual(list(claimed[0]), ["signed_curve25519:A"])
        self.assertEqual(claimed[0]["signed_curve25519:A"], self.alice_otks("A")["signed_curve25519:A"])
        self.assertEqual(list(claimed[1]), ["signed_curve25519:B"])
        self.assertIsNone(claimed[2])
        self.assertEqual(self.upload_ok(self.alice, {})["one_time_key_counts"], {"signed_curve25519": 0})

    def test_fallback_key_when_exhausted(self) -> None:
        """With no one-time keys left the fallback key is returned (again and again) and marked used;
        replacing it makes it unused; sync reports unused fallback types and counts."""
        fallback = {"signed_curve25519:F": otk("@alice:test:8448", self.alice_device, self.alice_key, "kF", True)}
        self.upload_ok(self.alice, {"one_time_keys": self.alice_otks("A"), "fallback_keys": fallback})
        body = self.sync(self.alice)
        self.assertEqual(body["device_one_time_keys_count"], {"signed_curve25519": 1})
        self.assertEqual(body["device_unused_fallback_key_types"], ["signed_curve25519"])
        request = {"@alice:test:8448": {self.alice_device: "signed_curve25519"}}
        first = self.claim(self.bob, request).json_body["one_time_keys"]["@alice:test:8448"][self.alice_device]
        self.assertIn("signed_curve25519:A", first)
        for _ in range(2):
            got = self.claim(self.bob, request).json_body["one_time_keys"]["@alice:test:8448"][self.alice_device]
            self.assertEqual(got, fallback)
        body = self.sync(self.alice)
        self.assertEqual(body["device_one_time_keys_count"], {"signed_curve25519": 0})
        self.assertEqual(body["device_unused_fallback_key_types"], [])
        # Re-uploading the same fallback key keeps it used; a new one is unused.
        self.upload_ok(self.alice, {"fallback_keys": fallback})
        self.assertEqual(self.sync(self.alice)["device_unused_fallback_key_types"], [])
        new = {"signed_curve25519:G": otk("@alice:test:8448", self.alice_device, self.alice_key, "kG", True)}
        self.upload_ok(self.alice, {"fallback_keys": new})
        self.assertEqual(self.sync(self.alice)["device_unused_fallback_key_types"], ["signed_curve25519"])
        got = self.claim(self.bob, request).json_body["one_time_keys"]["@alice:test:8448"][self.alice_device]
        self.assertEqual(got, new)

    def test_claim_many_devices_remote_and_unknown(self) -> None:
        """One claim covers several users' devices; unknown ones are left out; remote ones fail."""
        self.upload_ok(self.alice, {"one_time_keys": self.alice_otks("A")})
        bob_otk = {"curve25519:B1": "plain-key"}
        self.upload_ok(self.bob, {"one_time_keys": bob_otk})
        channel = self.claim(self.carol, {
            "@alice:test:8448": {self.alice_device: "signed_curve25519", "NODEVICE": "signed_curve25519"},
            "@bob:test:8448": {self.bob_device: "curve25519"},
            "@x:elsewhere.example": {"D": "signed_curve25519"},
        })
        self.assertEqual(channel.code, 200, channel.json_body)
        keys = channel.json_body["one_time_keys"]
        self.assertEqual(set(keys), {"@alice:test:8448", "@bob:test:8448"})
        self.assertEqual(keys["@bob:test:8448"], {self.bob_device: bob_otk})
        self.assertEqual(list(channel.json_body["failures"]), ["elsewhere.example"])

    def test_malformed_claims_are_400(self) -> None:
        """Wrong types and bad user IDs are 400."""
        for body in ([], {"@alice:test:8448": []}, {"@alice:test:8448": {"D": 5}}, {"@alice:test:8448": {"D": ""}}, {"alice": {}}):
            self.assertEqual(self.claim(self.bob, body).code, 400, body)
        self.assertEqual(self.make_request("POST", f"{V3}/keys/claim", {}, access_token=self.bob).code, 400)
        for body in ([], {"@alice:test:8448": "D"}, {"@alice:test:8448": [5]}, {"bad": []}):
            self.assertEqual(self.query(self.bob, body).code, 400, body)


class EncryptedEventTests(KeysTestCase):
    def test_encrypted_event_roundtrips_exactly(self) -> None:
        """An m.room.encrypted event's content (opaque ciphertext) comes back unchanged through /sync
        and /messages: the server never parses it."""
        room_id = self.create_room()
        self.state(room_id, self.alice, "m.room.encryption", {"algorithm": MEGOLM})
        since = self.sync(self.alice)["next_batch"]
        content = {
            "algorithm": MEGOLM,
            "ciphertext": "AwgAEpAB" + "x/+=" * 300 + "ü\u2603",
            "device_id": self.alice_device,
            "sender_key": "curve+key/abc",
            "session_id": "sess",
            "extra": {"nested": [1, "two", None, True]},
        }
        channel = self.send(room_id, content, self.alice, txn="enc1", etype="m.room.encrypted")
        self.assertEqual(channel.code, 200, channel.json_body)
        body = self.sync(self.alice, since=since)
        events = body["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertEqual([e["content"] for e in events if e["type"] == "m.room.encrypted"], [content])
        messages = self.make_request("GET", f"{V3}/rooms/{room_id}/messages?dir=b&limit=5", access_token=self.alice)
        self.assertEqual(messages.code, 200, messages.json_body)
        encrypted = [e for e in messages.json_body["chunk"] if e["type"] == "m.room.encrypted"]
        self.assertEqual(len(encrypted), 1)
        self.assertEqual(json.dumps(encrypted[0]["content"], sort_keys=True), json.dumps(content, sort_keys=True))


# ---------------------------------------------------------------------- real concurrency


def _wait(reactor: ThreadCallbackReactor, coro: Any) -> Any:
    return reactor.wait(defer.ensureDeferred(coro))


class ClaimConcurrencyTests:
    """Concurrent claims never hand out one key twice (real threads, both engines)."""

    @pytest.mark.parametrize("keys", [40])
    def test_concurrent_claims_get_distinct_keys(self, prepared_database: TestDatabase, keys: int) -> None:  # noqa: F811
        """60 simultaneous claims of 40 keys: 40 distinct keys, then the fallback key; nothing twice."""
        reactor = ThreadCallbackReactor()
        pool: DatabasePool = prepared_database.make_pool(reactor=reactor, run_in_thread=True, pool_max=8, txn_retries=100)
        try:
            store = E2EKeyStore(pool)
            stored = [StoredKey("signed_curve25519", f"K{i:03d}", json.dumps(f"key{i}")) for i in range(keys)]
            fallback = [StoredKey("signed_curve25519", "FB", json.dumps("fallback"))]

            def upload_txn(txn: Any) -> None:
                store.add_one_time_keys_txn(txn, "@alice:test:8448", "DEV", stored)
                store.set_fallback_keys_txn(txn, "@alice:test:8448", "DEV", fallback)

            _wait(reactor, pool.run_txn("upload", upload_txn))

            def claim_txn(txn: Any) -> Any:
                return store.claim_one_time_key_txn(txn, "@alice:test:8448", "DEV", "signed_curve25519")

            claims = [defer.ensureDeferred(pool.run_txn("claim", claim_txn)) for _ in range(60)]
            results = reactor.wait(defer.gatherResults(claims), timeout=60)
            ids = [r[0] for r in results]
            one_time = [i for i in ids if i != "signed_curve25519:FB"]
            assert len(one_time) == keys
            assert len(set(one_time)) == keys
            assert ids.count("signed_curve25519:FB") == 60 - keys
            assert _wait(reactor, store.count_one_time_keys("@alice:test:8448", "DEV")) == {}
            assert _wait(reactor, store.get_unused_fallback_key_types("@alice:test:8448", "DEV")) == []
        finally:
            prepared_database.close_pools(reactor)
