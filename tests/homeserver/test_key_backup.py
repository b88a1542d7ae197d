"""Server-side key backups: /room_keys/version and /room_keys/keys (both databases)."""

from __future__ import annotations

from typing import Any

from homeserver.e2ee.key_backup import should_replace
from homeserver.storage.stores.key_backup import RoomKey
from tests.homeserver.server_case import FullHomeserverTestCase

V3 = "/_matrix/client/v3"
ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:test:8448"
ROOM2 = "!other:test:8448"


def key_data(fmi: int = 0, fc: int = 0, verified: bool = False, marker: str = "a") -> dict[str, Any]:
    return {
        "first_message_index": fmi,
        "forwarded_count": fc,
        "is_verified": verified,
        "session_data": {"ephemeral": "e", "ciphertext": marker, "mac": "m"},
    }


class ReplacementRuleTests(FullHomeserverTestCase):
    def test_rule_order(self) -> None:
        """is_verified wins first, then the lower first_message_index, then the lower forwarded_count; ties keep."""
        def k(v: bool, fmi: int, fc: int) -> RoomKey:
            return RoomKey(fmi, fc, v, {})

        self.assertTrue(should_replace(k(False, 0, 0), k(True, 9, 9)))
        self.assertFalse(should_replace(k(True, 9, 9), k(False, 0, 0)))
        self.assertTrue(should_replace(k(False, 5, 0), k(False, 4, 9)))
        self.assertFalse(should_replace(k(False, 4, 0), k(False, 5, 0)))
        self.assertTrue(should_replace(k(True, 4, 3), k(True, 4, 2)))
        self.assertFalse(should_replace(k(True, 4, 2), k(True, 4, 3)))
        self.assertFalse(should_replace(k(True, 4, 2), k(True, 4, 2)))


class KeyBackupTestCase(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")
        self.register_user("bob")
        self.alice = self.login("alice")["access_token"]
        self.bob = self.login("bob")["access_token"]

    def create_version(self, token: str | None = None, public_key: str = "pk") -> str:
        channel = self.make_request(
            "POST", f"{V3}/room_keys/version", {"algorithm": ALGORITHM, "auth_data": {"public_key": public_key}},
            access_token=token or self.alice,
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        version: str = channel.json_body["version"]
        return version

    def put_session(self, version: str, session: str, data: dict[str, Any], room: str = ROOM,
                    token: str | None = None) -> Any:
        return self.make_request(
            "PUT", f"{V3}/room_keys/keys/{room}/{session}?version={version}", data, access_token=token or self.alice
        )

    def get_version(self, version: str | None = None, token: str | None = None) -> Any:
        path = f"{V3}/room_keys/version" + (f"/{version}" if version is not None else "")
        return self.make_request("GET", path, access_token=token or self.alice)


class VersionTests(KeyBackupTestCase):
    def test_no_backup_is_404(self) -> None:
        """Before any backup, GET /room_keys/version is 404 M_NOT_FOUND."""
        channel = self.get_version()
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))

    def test_create_and_get(self) -> None:
        """A created version is the current one, with count 0 and an etag; versions increase."""
        v1 = self.create_version()
        got = self.get_version()
        self.assertEqual(got.code, 200)
        self.assertEqual(got.json_body["version"], v1)
        self.assertEqual(got.json_body["algorithm"], ALGORITHM)
        self.assertEqual(got.json_body["auth_data"], {"public_key": "pk"})
        self.assertEqual(got.json_body["count"], 0)
        self.assertIsInstance(got.json_body["etag"], str)
        v2 = self.create_version(public_key="pk2")
        self.assertGreater(int(v2), int(v1))
        self.assertEqual(self.get_version().json_body["version"], v2)
        self.assertEqual(self.get_version(v1).json_body["auth_data"], {"public_key": "pk"})

    def test_backups_are_per_user(self) -> None:
        """Bob sees neither Alice's current backup nor her version by number."""
        v1 = self.create_version()
        self.assertEqual(self.get_version(token=self.bob).code, 404)
        self.assertEqual(self.get_version(v1, token=self.bob).code, 404)
        self.assertEqual(self.make_request("DELETE", f"{V3}/room_keys/version/{v1}", access_token=self.bob).code, 404)
        self.assertEqual(self.get_version(v1).code, 200)

    def test_update_auth_data(self) -> None:
        """PUT replaces auth_data; a different algorithm or body version is 400; unknown version 404."""
        v1 = self.create_version()
        path = f"{V3}/room_keys/version/{v1}"
        ok = self.make_request("PUT", path, {"algorithm": ALGORITHM, "auth_data": {"public_key": "new"},
                                             "version": v1}, access_token=self.alice)
        self.assertEqual((ok.code, ok.json_body), (200, {}))
        self.assertEqual(self.get_version(v1).json_body["auth_data"], {"public_key": "new"})
        other_alg = self.make_request("PUT", path, {"algorithm": "org.other", "auth_data": {}}, access_token=self.alice)
        self.assertEqual((other_alg.code, other_alg.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        wrong_version = self.make_request("PUT", path, {"algorithm": ALGORITHM, "auth_data": {"public_key": "x"},
                                                        "version": "999"}, access_token=self.alice)
        self.assertEqual((wrong_version.code, wrong_version.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        unknown = self.make_request("PUT", f"{V3}/room_keys/version/77",
                                    {"algorithm": ALGORITHM, "auth_data": {"public_key": "x"}}, access_token=self.alice)
        self.assertEqual((unknown.code, unknown.json_body["errcode"]), (404, "M_NOT_FOUND"))

    def test_delete_version(self) -> None:
        """DELETE removes the version and its keys; again is 200; never-existing is 404; the previous becomes current."""
        v1 = self.create_version()
        v2 = self.create_version()
        self.assertEqual(self.put_session(v2, "s1", key_data()).code, 200)
        deleted = self.make_request("DELETE", f"{V3}/room_keys/version/{v2}", access_token=self.alice)
        self.assertEqual((deleted.code, deleted.json_body), (200, {}))
        self.assertEqual(self.get_version(v2).code, 404)
        again = self.make_request("DELETE", f"{V3}/room_keys/version/{v2}", access_token=self.alice)
        self.assertEqual(again.code, 200)
        for bad in ("99", "abc"):
            never = self.make_request("DELETE", f"{V3}/room_keys/version/{bad}", access_token=self.alice)
            self.assertEqual((never.code, never.json_body["errcode"]), (404, "M_NOT_FOUND"))
        self.assertEqual(self.get_version().json_body["version"], v1)
        v3 = self.create_version()
        self.assertGreater(int(v3), int(v2))  # deleted numbers are never reused

    def test_bad_create_bodies(self) -> None:
        """Missing or mistyped algorithm/auth_data are 400 and create nothing."""
        bodies: list[Any] = [
            {}, {"algorithm": ALGORITHM}, {"auth_data": {}}, {"algorithm": 5, "auth_data": {}},
            {"algorithm": "", "auth_data": {}}, {"algorithm": ALGORITHM, "auth_data": []},
            {"algorithm": ALGORITHM, "auth_data": {}}, {"algorithm": "x" * 300, "auth_data": {}},
        ]
        for body in bodies:
            channel = self.make_request("POST", f"{V3}/room_keys/version", body, access_token=self.alice)
            self.assertEqual(channel.code, 400, (body, channel.json_body))
            self.assertIn(channel.json_body["errcode"], ("M_MISSING_PARAM", "M_INVALID_PARAM"))
        not_json = self.make_request("POST", f"{V3}/room_keys/version", b"[1]", access_token=self.alice)
        self.assertEqual(not_json.code, 400)
        self.assertEqual(self.get_version().code, 404)

    def test_requires_authentication(self) -> None:
        """Every key backup endpoint needs an access token."""
        for method, path in (("GET", "/room_keys/version"), ("POST", "/room_keys/version"),
                             ("GET", "/room_keys/keys?version=1"), ("PUT", "/room_keys/keys?version=1")):
            channel = self.make_request(method, f"{V3}{path}", {} if method != "GET" else None)
            self.assertEqual(channel.code, 401, path)


class KeysTests(KeyBackupTestCase):
    def test_put_get_single_session(self) -> None:
        """A stored key reads back exactly; count and etag are returned and match the version info."""
        v = self.create_version()
        put = self.put_session(v, "s1", key_data(fmi=3))
        self.assertEqual(put.code, 200, put.json_body)
        self.assertEqual(put.json_body["count"], 1)
        got = self.make_request("GET", f"{V3}/room_keys/keys/{ROOM}/s1?version={v}", access_token=self.alice)
        self.assertEqual((got.code, got.json_body), (200, key_data(fmi=3)))
        info = self.get_version(v).json_body
        self.assertEqual((info["count"], info["etag"]), (1, put.json_body["etag"]))

    def test_bulk_and_room_forms(self) -> None:
        """PUT /room_keys/keys and /room_keys/keys/{room} store several; GETs return the spec shapes."""
        v = self.create_version()
        bulk = self.make_request(
            "PUT", f"{V3}/room_keys/keys?version={v}",
            {"rooms": {ROOM: {"sessions": {"s1": key_data(), "s2": key_data()}}}}, access_token=self.alice,
        )
        self.assertEqual((bulk.code, bulk.json_body["count"]), (200, 2))
        room = self.make_request("PUT", f"{V3}/room_keys/keys/{ROOM2}?version={v}",
                                 {"sessions": {"s3": key_data()}}, access_token=self.alice)
        self.assertEqual(room.json_body["count"], 3)
        everything = self.make_request("GET", f"{V3}/room_keys/keys?version={v}", access_token=self.alice)
        self.assertEqual(everything.json_body, {"rooms": {
            ROOM: {"sessions": {"s1": key_data(), "s2": key_data()}},
            ROOM2: {"sessions": {"s3": key_data()}},
        }})
        one_room = self.make_request("GET", f"{V3}/room_keys/keys/{ROOM2}?version={v}", access_token=self.alice)
        self.assertEqual(one_room.json_body, {"sessions": {"s3": key_data()}})
        empty = self.make_request("GET", f"{V3}/room_keys/keys/!none:test:8448?version={v}", access_token=self.alice)
        self.assertEqual((empty.code, empty.json_body), (200, {"sessions": {}}))
        missing = self.make_request("GET", f"{V3}/room_keys/keys/{ROOM}/nope?version={v}", access_token=self.alice)
        self.assertEqual((missing.code, missing.json_body["errcode"]), (404, "M_NOT_FOUND"))

    def test_replacement_rules_and_etag(self) -> None:
        """A worse key is ignored (etag unchanged); a better one replaces the stored key (etag changes)."""
        v = self.create_version()
        first = self.put_session(v, "s1", key_data(fmi=5, fc=1, marker="first")).json_body
        worse = self.put_session(v, "s1", key_data(fmi=6, fc=0, marker="worse")).json_body
        self.assertEqual(worse, first)
        same = self.put_session(v, "s1", key_data(fmi=5, fc=1, marker="same")).json_body
        self.assertEqual(same, first)
        better = self.put_session(v, "s1", key_data(fmi=5, fc=0, marker="fc")).json_body
        self.assertNotEqual(better["etag"], first["etag"])
        self.assertEqual(better["count"], 1)
        verified = self.put_session(v, "s1", key_data(fmi=90, fc=9, verified=True, marker="verified")).json_body
        self.assertNotEqual(verified["etag"], better["etag"])
        unverified = self.put_session(v, "s1", key_data(fmi=0, fc=0, marker="unverified")).json_body
        self.assertEqual(unverified["etag"], verified["etag"])
        got = self.make_request("GET", f"{V3}/room_keys/keys/{ROOM}/s1?version={v}", access_token=self.alice)
        self.assertEqual(got.json_body["session_data"]["ciphertext"], "verified")

    def test_wrong_version_is_403_with_current(self) -> None:
        """Writing to an old (or unknown) version is 403 M_WRONG_ROOM_KEYS_VERSION naming the current version."""
        v1 = self.create_version()
        v2 = self.create_version()
        for stale in (v1, "12345", "notanumber"):
            channel = self.put_session(stale, "s1", key_data())
            self.assertEqual(channel.code, 403, channel.json_body)
            self.assertEqual(channel.json_body["errcode"], "M_WRONG_ROOM_KEYS_VERSION")
            self.assertEqual(channel.json_body["current_version"], v2)
        self.assertEqual(self.get_version(v1).json_body["count"], 0)
        self.assertEqual(self.get_version(v2).json_body["count"], 0)

    def test_put_without_backup_is_404(self) -> None:
        """With no backup at all, storing keys is 404 M_NOT_FOUND."""
        channel = self.put_session("1", "s1", key_data())
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))

    def test_version_param_required(self) -> None:
        """The version query parameter is required on every /room_keys/keys endpoint."""
        self.create_version()
        for method in ("GET", "PUT", "DELETE"):
            body = {"rooms": {}} if method == "PUT" else None
            channel = self.make_request(method, f"{V3}/room_keys/keys", body, access_token=self.alice)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_MISSING_PARAM"), method)

    def test_get_unknown_version_is_404(self) -> None:
        """Reading keys of a version that does not exist (or was deleted) is 404."""
        v = self.create_version()
        self.put_session(v, "s1", key_data())
        self.make_request("DELETE", f"{V3}/room_keys/version/{v}", access_token=self.alice)
        for version in (v, "42", "x"):
            channel = self.make_request("GET", f"{V3}/room_keys/keys?version={version}", access_token=self.alice)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))

    def test_delete_keys(self) -> None:
        """DELETE by session, room and all removes keys, updating count and etag."""
        v = self.create_version()
        self.make_request(
            "PUT", f"{V3}/room_keys/keys?version={v}",
            {"rooms": {ROOM: {"sessions": {"s1": key_data(), "s2": key_data()}},
                       ROOM2: {"sessions": {"s3": key_data()}}}}, access_token=self.alice,
        )
        before = self.get_version(v).json_body["etag"]
        one = self.make_request("DELETE", f"{V3}/room_keys/keys/{ROOM}/s1?version={v}", access_token=self.alice)
        self.assertEqual((one.code, one.json_body["count"]), (200, 2))
        self.assertNotEqual(one.json_body["etag"], before)
        nothing = self.make_request("DELETE", f"{V3}/room_keys/keys/{ROOM}/s1?version={v}", access_token=self.alice)
        self.assertEqual(nothing.json_body, one.json_body)
        room = self.make_request("DELETE", f"{V3}/room_keys/keys/{ROOM2}?version={v}", access_token=self.alice)
        self.assertEqual(room.json_body["count"], 1)
        everything = self.make_request("DELETE", f"{V3}/room_keys/keys?version={v}", access_token=self.alice)
        self.assertEqual(everything.json_body["count"], 0)
        self.assertEqual(self.make_request("GET", f"{V3}/room_keys/keys?version={v}",
                                           access_token=self.alice).json_body, {"rooms": {}})
        unknown = self.make_request("DELETE", f"{V3}/room_keys/keys?version=99", access_token=self.alice)
        self.assertEqual(unknown.code, 404)

    def test_keys_are_per_user(self) -> None:
        """Bob cannot read or delete Alice's keys by naming her version; his own version is separate."""
        v = self.create_version()
        self.put_session(v, "s1", key_data())
        read = self.make_request("GET", f"{V3}/room_keys/keys?version={v}", access_token=self.bob)
        self.assertEqual(read.code, 404)
        bob_v = self.create_version(token=self.bob)
        self.assertEqual(self.make_request("GET", f"{V3}/room_keys/keys?version={bob_v}",
                                           access_token=self.bob).json_body, {"rooms": {}})
        self.make_request("DELETE", f"{V3}/room_keys/keys?version={bob_v}", access_token=self.bob)
        self.assertEqual(self.get_version(v).json_body["count"], 1)

    def test_bad_key_data(self) -> None:
        """Malformed key data, room IDs and session IDs are 400 and store nothing."""
        v = self.create_version()
        good = key_data()
        bad_bodies: list[Any] = [
            {k: val for k, val in good.items() if k != "session_data"},
            {**good, "first_message_index": -1}, {**good, "first_message_index": "1"},
            {**good, "forwarded_count": 1.5}, {**good, "is_verified": "yes"}, {**good, "is_verified": None},
            {**good, "session_data": "opaque"}, {**good, "first_message_index": True},
        ]
        for body in bad_bodies:
            channel = self.put_session(v, "s1", body)
            self.assertEqual(channel.code, 400, (body, channel.json_body))
        bad_room = self.put_session(v, "s1", good, room="not-a-room")
        self.assertEqual((bad_room.code, bad_room.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        long_session = self.put_session(v, "s" * 300, good)
        self.assertEqual(long_session.code, 400)
        for body in ({"rooms": []}, {"rooms": {"bad": {"sessions": {}}}}, {"rooms": {ROOM: {"sessions": []}}},
                     {"rooms": {ROOM: {}}}, {}):
            channel = self.make_request("PUT", f"{V3}/room_keys/keys?version={v}", body, access_token=self.alice)
            self.assertEqual(channel.code, 400, (body, channel.json_body))
        partial = self.make_request(
            "PUT", f"{V3}/room_keys/keys?version={v}",
            {"rooms": {ROOM: {"sessions": {"ok": good, "bad": {**good, "is_verified": 1}}}}}, access_token=self.alice,
        )
        self.assertEqual(partial.code, 400)
        self.assertEqual(self.get_version(v).json_body["count"], 0)
