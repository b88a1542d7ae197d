"""Filter upload and download through the real composition root (both databases)."""

from __future__ import annotations

from typing import Any

from tests.homeserver.server_case import FullHomeserverTestCase

ALICE = "/_matrix/client/v3/user/@alice:test:8448/filter"
BOB = "/_matrix/client/v3/user/@bob:test:8448/filter"

EXAMPLE: dict[str, Any] = {
    "room": {
        "state": {"types": ["m.room.*"], "not_rooms": [], "lazy_load_members": True},
        "timeline": {"limit": 10, "types": ["m.room.message"], "not_senders": []},
        "ephemeral": {"types": ["m.receipt", "m.typing"]},
        "include_leave": False,
    },
    "presence": {"types": ["m.presence"], "not_senders": []},
    "event_format": "client",
    "event_fields": ["type", "content", "sender"],
    "org.example.future": {"kept": True},
}


class FilterTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")
        self.register_user("bob")
        self.token = self.login("alice")["access_token"]
        self.bob_token = self.login("bob")["access_token"]

    def _post(self, body: Any, token: str | None = None, path: str = ALICE) -> Any:
        return self.make_request("POST", path, body, access_token=token or self.token)

    def test_upload_and_download(self) -> None:
        """The filter comes back exactly as uploaded (unknown keys kept); IDs are strings."""
        channel = self._post(EXAMPLE)
        self.assertEqual(channel.code, 200, channel.json_body)
        filter_id = channel.json_body["filter_id"]
        self.assertIsInstance(filter_id, str)
        self.assertFalse(filter_id.startswith("{"))
        got = self.make_request("GET", f"{ALICE}/{filter_id}", access_token=self.token)
        self.assertEqual((got.code, got.json_body), (200, EXAMPLE))

    def test_ids_are_per_user_and_identical_filters_are_shared(self) -> None:
        """Different filters get new IDs; the same filter again gets its old ID; each user counts alone."""
        first = self._post({"room": {"timeline": {"limit": 1}}}).json_body["filter_id"]
        second = self._post({"room": {"timeline": {"limit": 2}}}).json_body["filter_id"]
        again = self._post({"room": {"timeline": {"limit": 1}}}).json_body["filter_id"]
        self.assertNotEqual(first, second)
        self.assertEqual(first, again)
        bobs = self._post({"presence": {"limit": 0}}, self.bob_token, BOB).json_body["filter_id"]
        self.assertEqual(bobs, "0")
        self.assertEqual(self.make_request("GET", f"{BOB}/{bobs}", access_token=self.bob_token).json_body, {"presence": {"limit": 0}})

    def test_empty_filter_and_nulls_are_accepted(self) -> None:
        """{} is a valid filter, and null fields count as absent."""
        self.assertEqual(self._post({}).code, 200)
        self.assertEqual(self._post({"room": None, "presence": {"limit": None}}).code, 200)

    def test_other_users_filters_are_403(self) -> None:
        """Alice can neither upload nor read Bob's filters."""
        bobs = self._post({}, self.bob_token, BOB).json_body["filter_id"]
        post = self._post({}, self.token, BOB)
        self.assertEqual((post.code, post.json_body["errcode"]), (403, "M_FORBIDDEN"))
        get = self.make_request("GET", f"{BOB}/{bobs}", access_token=self.token)
        self.assertEqual((get.code, get.json_body["errcode"]), (403, "M_FORBIDDEN"))

    def test_unknown_filters_are_404(self) -> None:
        """Unknown, non-numeric and absurdly long IDs are 404 M_NOT_FOUND."""
        for filter_id in ("0", "7", "abc", "-1", "1e3", "9" * 30, "%7B%7D"):
            channel = self.make_request("GET", f"{ALICE}/{filter_id}", access_token=self.token)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"), filter_id)

    def test_another_users_filter_id_is_not_visible(self) -> None:
        """Bob's filter 0 is not Alice's filter 0."""
        self._post({"presence": {"limit": 5}}, self.bob_token, BOB)
        self.assertEqual(self.make_request("GET", f"{ALICE}/0", access_token=self.token).code, 404)

    def test_bad_filters(self) -> None:
        """Known fields with the wrong type, or negative limits, are 400 M_BAD_JSON; nothing is stored."""
        cases = [
            {"room": []},
            {"room": {"timeline": {"limit": -1}}},
            {"room": {"timeline": {"limit": "10"}}},
            {"room": {"timeline": {"limit": True}}},
            {"room": {"state": {"types": "m.room.member"}}},
            {"room": {"state": {"types": [1]}}},
            {"room": {"rooms": "!a:test:8448"}},
            {"room": {"include_leave": "yes"}},
            {"room": {"ephemeral": {"lazy_load_members": 1}}},
            {"presence": []},
            {"account_data": {"not_types": [None]}},
            {"event_format": "xml"},
            {"event_fields": [1]},
            {"event_fields": "type"},
        ]
        for body in cases:
            channel = self._post(body)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_BAD_JSON"), body)
        self.assertEqual(self.make_request("GET", f"{ALICE}/0", access_token=self.token).code, 404)

    def test_bad_bodies(self) -> None:
        """Non-JSON and non-object bodies are 400 M_NOT_JSON; floats are M_BAD_JSON."""
        for body in (b"{", [1], b""):
            channel = self._post(body)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_NOT_JSON"), body)
        self.assertEqual(self._post(b'{"room": {"timeline": {"limit": 1.5}}}').json_body["errcode"], "M_BAD_JSON")

    def test_oversized_filter(self) -> None:
        """A filter over 64 KiB is 413 M_TOO_LARGE."""
        channel = self._post({"room": {"rooms": [f"!{i:06d}:test:8448" for i in range(6000)]}})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (413, "M_TOO_LARGE"))
        self.assertIn("Filter", channel.json_body["error"])

    def test_requires_token(self) -> None:
        """No token: 401."""
        self.assertEqual(self.make_request("POST", ALICE, {}).code, 401)
        self.assertEqual(self.make_request("GET", f"{ALICE}/0").code, 401)


class ConcurrentFilterIdTests(FullHomeserverTestCase):
    def test_concurrent_uploads_get_distinct_ids_on_postgres(self) -> None:
        """PostgreSQL: two transactions picking the same filter ID: the later one fails retryably, never silently."""
        engine = self.hs.pool.engine
        if engine.name != "postgres":
            self.skipTest("SQLite serialises all writes on one connection")
        from homeserver.storage.pool import Txn

        first, second = engine.connect(readonly=False), engine.connect(readonly=False)
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        insert = (
            "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, 0, ?)"
            " ON CONFLICT (user_id, filter_id) DO NOTHING"
        )
        t2 = Txn(second.cursor(), engine, "second")
        t2.execute("SELECT COALESCE(MAX(filter_id), -1) + 1 FROM user_filters WHERE user_id = ?", ("@c:test:8448",))
        self.assertEqual(t2.fetchone(), (0,))  # snapshot taken before the first commits
        t1 = Txn(first.cursor(), engine, "first")
        t1.execute(insert, ("@c:test:8448", "{}"))
        first.commit()
        with self.assertRaises(Exception) as caught:
            t2.execute(insert, ("@c:test:8448", '{"a":1}'))
        self.assertTrue(engine.is_retryable(caught.exception))
        second.rollback()
        # The pool's retry then runs add_filter again on a fresh snapshot and takes ID 1.
        self.assertEqual(self.get_success(self.hs.stores.filters.add_filter("@c:test:8448", {"a": 1})), 1)
