"""Cross-signing: /keys/device_signing/upload, /keys/signatures/upload and /keys/query (both databases)."""

from __future__ import annotations

import copy
from typing import Any

import nacl.signing

from homeserver.e2ee.device_lists import DeviceListTracker
from sc_proto.crypto.keys import encode_base64
from sc_proto.e2ee.cross_signing import key_id_for_public_key, sign_object
from tests.homeserver.server_case import FullHomeserverTestCase

V3 = "/_matrix/client/v3"
PASSWORD = "p4ssw0rd-long"


class Key:
    """A test Ed25519 key pair."""

    def __init__(self, seed: int) -> None:
        self.private = nacl.signing.SigningKey(bytes([seed]) * 32)
        self.public = encode_base64(bytes(self.private.verify_key))
        self.key_id = key_id_for_public_key(self.public)


def cs_key(user_id: str, usage: str, key: Key, signer: Key | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"user_id": user_id, "usage": [usage], "keys": {key.key_id: key.public}}
    if signer is not None:
        obj = sign_object(obj, user_id, signer.key_id, signer.private)
    return obj


def device_keys(user_id: str, device_id: str, key: Key) -> dict[str, Any]:
    obj = {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{device_id}": encode_base64(b"c" * 32), f"ed25519:{device_id}": key.public},
    }
    return sign_object(obj, user_id, f"ed25519:{device_id}", key.private)


class CrossSigningTestCase(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")
        self.register_user("bob")
        alice = self.login("alice")
        bob = self.login("bob")
        self.alice, self.alice_device = alice["access_token"], alice["device_id"]
        self.bob, self.bob_device = bob["access_token"], bob["device_id"]
        self.alice_id, self.bob_id = "@alice:test:8448", "@bob:test:8448"
        self.alice_dev_key, self.bob_dev_key = Key(11), Key(12)
        self.alice_master, self.alice_ssk, self.alice_usk = Key(1), Key(2), Key(3)
        self.bob_master, self.bob_ssk, self.bob_usk = Key(4), Key(5), Key(6)
        self.upload_device_keys(self.alice, self.alice_id, self.alice_device, self.alice_dev_key)
        self.upload_device_keys(self.bob, self.bob_id, self.bob_device, self.bob_dev_key)

    def upload_device_keys(self, token: str, user_id: str, device_id: str, key: Key) -> None:
        channel = self.make_request(
            "POST", f"{V3}/keys/upload", {"device_keys": device_keys(user_id, device_id, key)}, access_token=token
        )
        self.assertEqual(channel.code, 200, channel.json_body)

    def signing_body(self, user_id: str, master: Key, ssk: Key, usk: Key) -> dict[str, Any]:
        return {
            "master_key": cs_key(user_id, "master", master),
            "self_signing_key": cs_key(user_id, "self_signing", ssk, master),
            "user_signing_key": cs_key(user_id, "user_signing", usk, master),
        }

    def upload_signing_keys(self, body: dict[str, Any], token: str | None = None) -> Any:
        return self.make_request("POST", f"{V3}/keys/device_signing/upload", body, access_token=token or self.alice)

    def setup_alice(self) -> None:
        channel = self.upload_signing_keys(self.signing_body(self.alice_id, self.alice_master, self.alice_ssk,
                                                             self.alice_usk))
        self.assertEqual(channel.code, 200, channel.json_body)

    def setup_bob(self) -> None:
        channel = self.upload_signing_keys(
            self.signing_body(self.bob_id, self.bob_master, self.bob_ssk, self.bob_usk), token=self.bob
        )
        self.assertEqual(channel.code, 200, channel.json_body)

    def query(self, token: str, *users: str) -> dict[str, Any]:
        channel = self.make_request(
            "POST", f"{V3}/keys/query", {"device_keys": {u: [] for u in users}}, access_token=token
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        body: dict[str, Any] = channel.json_body
        return body

    def upload_signatures(self, body: dict[str, Any], token: str | None = None) -> Any:
        return self.make_request("POST", f"{V3}/keys/signatures/upload", body, access_token=token or self.alice)

    def password_auth(self, session: str, user: str = "alice", password: str = PASSWORD) -> dict[str, Any]:
        return {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                "password": password, "session": session}


class DeviceSigningUploadTests(CrossSigningTestCase):
    def test_first_upload_needs_no_uia_and_is_queryable(self) -> None:
        """The first upload is accepted without UIA; the owner sees all three keys, others no user-signing key."""
        self.setup_alice()
        own = self.query(self.alice, self.alice_id)
        self.assertEqual(own["master_keys"][self.alice_id]["keys"], {self.alice_master.key_id: self.alice_master.public})
        self.assertIn(self.alice_id, own["self_signing_keys"])
        self.assertIn(self.alice_id, own["user_signing_keys"])
        theirs = self.query(self.bob, self.alice_id)
        self.assertIn(self.alice_id, theirs["master_keys"])
        self.assertIn(self.alice_id, theirs["self_signing_keys"])
        self.assertEqual(theirs["user_signing_keys"], {})

    def test_identical_reupload_needs_no_uia(self) -> None:
        """Re-uploading exactly the stored keys is an idempotent 200 without UIA."""
        self.setup_alice()
        again = self.upload_signing_keys(self.signing_body(self.alice_id, self.alice_master, self.alice_ssk,
                                                           self.alice_usk))
        self.assertEqual((again.code, again.json_body), (200, {}))
        master_only = self.upload_signing_keys({"master_key": cs_key(self.alice_id, "master", self.alice_master)})
        self.assertEqual(master_only.code, 200)

    def test_replacing_keys_requires_password_uia(self) -> None:
        """A new master key needs m.login.password UIA: 401 with flows, wrong password refused, then replaced."""
        self.setup_alice()
        new_master, new_ssk, new_usk = Key(21), Key(22), Key(23)
        body = self.signing_body(self.alice_id, new_master, new_ssk, new_usk)
        challenge = self.upload_signing_keys(body)
        self.assertEqual(challenge.code, 401, challenge.json_body)
        self.assertIn({"stages": ["m.login.password"]}, challenge.json_body["flows"])
        session = challenge.json_body["session"]
        wrong = self.upload_signing_keys({**body, "auth": self.password_auth(session, password="wrong-password")})
        self.assertEqual(wrong.code, 401)
        self.assertEqual(self.query(self.alice, self.alice_id)["master_keys"][self.alice_id]["keys"],
                         {self.alice_master.key_id: self.alice_master.public})
        ok = self.upload_signing_keys({**body, "auth": self.password_auth(session)})
        self.assertEqual(ok.code, 200, ok.json_body)
        result = self.query(self.alice, self.alice_id)
        self.assertEqual(result["master_keys"][self.alice_id]["keys"], {new_master.key_id: new_master.public})
        self.assertEqual(result["self_signing_keys"][self.alice_id]["keys"], {new_ssk.key_id: new_ssk.public})

    def test_replacing_only_self_signing_key_requires_uia(self) -> None:
        """A new self-signing key signed by the stored master key also needs UIA."""
        self.setup_alice()
        body = {"self_signing_key": cs_key(self.alice_id, "self_signing", Key(30), self.alice_master)}
        challenge = self.upload_signing_keys(body)
        self.assertEqual(challenge.code, 401)
        ok = self.upload_signing_keys({**body, "auth": self.password_auth(challenge.json_body["session"])})
        self.assertEqual(ok.code, 200, ok.json_body)
        self.assertEqual(self.query(self.alice, self.alice_id)["self_signing_keys"][self.alice_id]["keys"],
                         {Key(30).key_id: Key(30).public})

    def test_unsigned_or_badly_signed_subkeys(self) -> None:
        """Self-signing/user-signing keys not signed by the master key are 400 M_INVALID_SIGNATURE; nothing stored."""
        for field, usage in (("self_signing_key", "self_signing"), ("user_signing_key", "user_signing")):
            for signer in (None, Key(40)):
                body = {"master_key": cs_key(self.alice_id, "master", self.alice_master),
                        field: cs_key(self.alice_id, usage, self.alice_ssk, signer)}
                channel = self.upload_signing_keys(body)
                self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_SIGNATURE"))
        tampered = self.signing_body(self.alice_id, self.alice_master, self.alice_ssk, self.alice_usk)
        tampered["self_signing_key"]["usage"].append("org.extra")
        channel = self.upload_signing_keys(tampered)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_SIGNATURE"))
        self.assertEqual(self.query(self.alice, self.alice_id)["master_keys"], {})

    def test_missing_master_key(self) -> None:
        """Without a stored or uploaded master key, subkeys are 400 M_MISSING_PARAM."""
        channel = self.upload_signing_keys(
            {"self_signing_key": cs_key(self.alice_id, "self_signing", self.alice_ssk, self.alice_master)}
        )
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_MISSING_PARAM"))

    def test_malformed_keys(self) -> None:
        """Another user's key, wrong usage, bad key IDs and wrong types are 400; nothing is stored."""
        master = cs_key(self.alice_id, "master", self.alice_master)
        bad_masters: list[Any] = [
            {**master, "user_id": self.bob_id}, {**master, "usage": ["self_signing"]}, {**master, "usage": "master"},
            {**master, "keys": {}}, {**master, "keys": {"ed25519:abc": "abc"}},
            {**master, "keys": {self.alice_master.key_id: self.alice_master.public, "ed25519:x": "x"}},
            "a string", [master], {**master, "signatures": "sig"},
        ]
        for bad in bad_masters:
            channel = self.upload_signing_keys({"master_key": bad})
            self.assertEqual(channel.code, 400, (bad, channel.json_body))
        not_json = self.upload_signing_keys(b"{nope")  # type: ignore[arg-type]
        self.assertEqual(not_json.code, 400)
        self.assertEqual(self.query(self.alice, self.alice_id)["master_keys"], {})

    def test_public_key_equal_to_device_id_is_forbidden(self) -> None:
        """A cross-signing public key may not equal one of the user's device IDs (403 M_FORBIDDEN)."""
        self.login("alice", device_id=self.alice_master.public)
        channel = self.upload_signing_keys(self.signing_body(self.alice_id, self.alice_master, self.alice_ssk,
                                                             self.alice_usk))
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))

    def test_requires_authentication(self) -> None:
        for path in ("/keys/device_signing/upload", "/keys/signatures/upload"):
            self.assertEqual(self.make_request("POST", f"{V3}{path}", {}).code, 401)

    def test_upload_records_device_list_change(self) -> None:
        """Uploading cross-signing keys is a device-list change for users sharing a room."""
        room = self.make_request("POST", f"{V3}/createRoom", {"invite": [self.bob_id]}, access_token=self.alice)
        room_id = room.json_body["room_id"]
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob).code, 200)
        tracker: Any = self.hs.features.get(DeviceListTracker)
        before = tracker.current_position()
        events = self.hs.rooms.stream_tracker.current()
        self.setup_alice()
        after = tracker.current_position()
        self.assertGreater(after, before)
        changes = self.get_success(tracker.get_changes(self.bob_id, before, after, events, events))
        self.assertIn(self.alice_id, changes.changed)


class SignaturesUploadTests(CrossSigningTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.setup_alice()
        self.setup_bob()

    def own_device_json(self) -> dict[str, Any]:
        return self.query(self.alice, self.alice_id)["device_keys"][self.alice_id][self.alice_device]

    def sign_own_device(self, signer: Key | None = None) -> dict[str, Any]:
        device = self.own_device_json()
        device.pop("unsigned", None)
        return sign_object(device, self.alice_id, (signer or self.alice_ssk).key_id, (signer or self.alice_ssk).private)

    def test_sign_own_device_with_self_signing_key(self) -> None:
        """A device signed by the self-signing key: no failures; everyone sees the signature."""
        channel = self.upload_signatures({self.alice_id: {self.alice_device: self.sign_own_device()}})
        self.assertEqual((channel.code, channel.json_body), (200, {"failures": {}}))
        for token in (self.alice, self.bob):
            device = self.query(token, self.alice_id)["device_keys"][self.alice_id][self.alice_device]
            self.assertIn(self.alice_ssk.key_id, device["signatures"][self.alice_id])
            self.assertIn(f"ed25519:{self.alice_device}", device["signatures"][self.alice_id])

    def test_sign_own_master_with_device(self) -> None:
        """The user's master key signed by their device is stored and shown to others."""
        master = cs_key(self.alice_id, "master", self.alice_master)
        signed = sign_object(master, self.alice_id, f"ed25519:{self.alice_device}", self.alice_dev_key.private)
        channel = self.upload_signatures({self.alice_id: {self.alice_master.public: signed}})
        self.assertEqual(channel.json_body, {"failures": {}})
        seen = self.query(self.bob, self.alice_id)["master_keys"][self.alice_id]
        self.assertIn(f"ed25519:{self.alice_device}", seen["signatures"][self.alice_id])

    def test_sign_other_users_master_with_user_signing_key(self) -> None:
        """Alice's user-signing signature of Bob's master key is shown to Alice only."""
        bob_master = cs_key(self.bob_id, "master", self.bob_master)
        signed = sign_object(bob_master, self.alice_id, self.alice_usk.key_id, self.alice_usk.private)
        channel = self.upload_signatures({self.bob_id: {self.bob_master.public: signed}})
        self.assertEqual(channel.json_body, {"failures": {}})
        alice_view = self.query(self.alice, self.bob_id)["master_keys"][self.bob_id]
        self.assertEqual(alice_view["signatures"][self.alice_id], {self.alice_usk.key_id: signed["signatures"][
            self.alice_id][self.alice_usk.key_id]})
        bob_view = self.query(self.bob, self.bob_id)["master_keys"][self.bob_id]
        self.assertNotIn(self.alice_id, bob_view.get("signatures", {}))
        self.register_user("carol")
        carol = self.login("carol")["access_token"]
        self.assertNotIn(self.alice_id, self.query(carol, self.bob_id)["master_keys"][self.bob_id].get("signatures", {}))

    def test_bad_signature_is_a_failure_and_valid_ones_are_kept(self) -> None:
        """A bad signature is reported per key (M_INVALID_SIGNATURE) while a valid one in the same request is stored."""
        bad_device = self.sign_own_device(signer=Key(50))
        bad_device["signatures"][self.alice_id][self.alice_ssk.key_id] = bad_device["signatures"][self.alice_id].pop(
            Key(50).key_id)
        bob_master = sign_object(cs_key(self.bob_id, "master", self.bob_master), self.alice_id,
                                 self.alice_usk.key_id, self.alice_usk.private)
        channel = self.upload_signatures({self.alice_id: {self.alice_device: bad_device},
                                          self.bob_id: {self.bob_master.public: bob_master}})
        self.assertEqual(channel.code, 200)
        failure = channel.json_body["failures"][self.alice_id][self.alice_device]
        self.assertEqual(failure["errcode"], "M_INVALID_SIGNATURE")
        self.assertNotIn(self.bob_id, channel.json_body["failures"])
        device = self.own_device_json()
        self.assertNotIn(self.alice_ssk.key_id, device["signatures"][self.alice_id])
        self.assertIn(self.alice_id, self.query(self.alice, self.bob_id)["master_keys"][self.bob_id]["signatures"])

    def test_device_signed_by_wrong_own_key(self) -> None:
        """Own devices may only be signed by the self-signing key (the user-signing key is refused)."""
        channel = self.upload_signatures({self.alice_id: {self.alice_device: self.sign_own_device(self.alice_usk)}})
        self.assertEqual(channel.json_body["failures"][self.alice_id][self.alice_device]["errcode"],
                         "M_INVALID_SIGNATURE")

    def test_signing_another_users_device_is_refused(self) -> None:
        """Signing Bob's device (rather than his master key) is a failure and stores nothing."""
        bob_device = self.query(self.alice, self.bob_id)["device_keys"][self.bob_id][self.bob_device]
        bob_device.pop("unsigned", None)
        signed = sign_object(bob_device, self.alice_id, self.alice_usk.key_id, self.alice_usk.private)
        channel = self.upload_signatures({self.bob_id: {self.bob_device: signed}})
        self.assertEqual(channel.json_body["failures"][self.bob_id][self.bob_device]["errcode"], "M_INVALID_SIGNATURE")
        device = self.query(self.alice, self.bob_id)["device_keys"][self.bob_id][self.bob_device]
        self.assertNotIn(self.alice_id, device["signatures"])

    def test_other_users_master_signed_by_wrong_key(self) -> None:
        """Another user's master key signed by the self-signing key (not the user-signing key) fails."""
        signed = sign_object(cs_key(self.bob_id, "master", self.bob_master), self.alice_id,
                             self.alice_ssk.key_id, self.alice_ssk.private)
        channel = self.upload_signatures({self.bob_id: {self.bob_master.public: signed}})
        self.assertEqual(channel.json_body["failures"][self.bob_id][self.bob_master.public]["errcode"],
                         "M_INVALID_SIGNATURE")

    def test_modified_object_is_refused(self) -> None:
        """The signed object must be the stored key apart from signatures."""
        device = self.own_device_json()
        device.pop("unsigned", None)
        device["algorithms"] = ["m.megolm.v1.aes-sha2"]
        signed = sign_object(device, self.alice_id, self.alice_ssk.key_id, self.alice_ssk.private)
        channel = self.upload_signatures({self.alice_id: {self.alice_device: signed}})
        self.assertEqual(channel.json_body["failures"][self.alice_id][self.alice_device]["errcode"],
                         "M_INVALID_SIGNATURE")

    def test_unknown_targets(self) -> None:
        """Unknown devices are M_NOT_FOUND failures; a non-master key of another user fails; no new signature fails."""
        channel = self.upload_signatures({
            self.alice_id: {"NODEVICE": self.sign_own_device()},
            "@nobody:test:8448": {"whatever": {"user_id": "@nobody:test:8448"}},
        })
        failures = channel.json_body["failures"]
        self.assertEqual(failures[self.alice_id]["NODEVICE"]["errcode"], "M_NOT_FOUND")
        self.assertIn("whatever", failures["@nobody:test:8448"])
        unsigned = self.own_device_json()
        unsigned.pop("unsigned", None)
        channel = self.upload_signatures({self.alice_id: {self.alice_device: unsigned}})
        self.assertIn(self.alice_device, channel.json_body["failures"][self.alice_id])

    def test_malformed_bodies(self) -> None:
        """A body that is not a map of user IDs to maps of objects is 400."""
        for body in ({self.alice_id: []}, {self.alice_id: {"DEV": "string"}}, {self.alice_id: 5}):
            channel = self.upload_signatures(body)
            self.assertEqual(channel.code, 400, body)
        too_many = {self.alice_id: {f"D{i}": {} for i in range(1001)}}
        self.assertEqual(self.upload_signatures(too_many).code, 400)

    def test_replacing_self_signing_key_drops_its_signatures(self) -> None:
        """After a new self-signing key, the old key's device signatures are no longer served."""
        self.upload_signatures({self.alice_id: {self.alice_device: self.sign_own_device()}})
        body = {"self_signing_key": cs_key(self.alice_id, "self_signing", Key(60), self.alice_master)}
        challenge = self.upload_signing_keys(body)
        self.upload_signing_keys({**body, "auth": self.password_auth(challenge.json_body["session"])})
        device = self.own_device_json()
        self.assertNotIn(self.alice_ssk.key_id, device["signatures"][self.alice_id])

    def test_deleting_device_drops_signatures(self) -> None:
        """Deleting a device deletes the stored signatures of it."""
        self.upload_signatures({self.alice_id: {self.alice_device: self.sign_own_device()}})
        second = self.login("alice")
        channel = self.make_request("DELETE", f"{V3}/devices/{self.alice_device}",
                                    {"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user",
                                                                                          "user": "alice"},
                                              "password": PASSWORD}}, access_token=second["access_token"])
        self.assertEqual(channel.code, 200, channel.json_body)

        def count_txn(txn: Any) -> int:
            txn.execute("SELECT COUNT(*) FROM e2e_cross_signing_signatures WHERE target_key_id = ?",
                        (self.alice_device,))
            return int(txn.fetchone()[0])

        self.assertEqual(self.get_success(self.hs.pool.run_read("count", count_txn)), 0)

    def test_signature_upload_is_idempotent(self) -> None:
        """Uploading the same signature twice succeeds and stores it once."""
        signed = self.sign_own_device()
        for _ in range(2):
            channel = self.upload_signatures({self.alice_id: {self.alice_device: copy.deepcopy(signed)}})
            self.assertEqual(channel.json_body, {"failures": {}})
        device = self.own_device_json()
        self.assertEqual(len(device["signatures"][self.alice_id]), 2)
