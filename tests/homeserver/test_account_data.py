"""Account data endpoints and store (stream ids) through the real composition root (both databases)."""

from __future__ import annotations

from tests.homeserver.server_case import FullHomeserverTestCase

ROOM = "!room:test:8448"
GLOBAL = "/_matrix/client/v3/user/@alice:test:8448/account_data"
IN_ROOM = f"/_matrix/client/v3/user/@alice:test:8448/rooms/{ROOM}/account_data"


class AccountDataTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")
        self.register_user("bob")
        self.token = self.login("alice")["access_token"]
        self.bob_token = self.login("bob")["access_token"]

    def test_global_put_and_get(self) -> None:
        """PUT stores the object, GET returns it; a second PUT replaces it."""
        put = self.make_request("PUT", f"{GLOBAL}/m.direct", {"@bob:test:8448": ["!a:test:8448"]}, access_token=self.token)
        self.assertEqual((put.code, put.json_body), (200, {}))
        got = self.make_request("GET", f"{GLOBAL}/m.direct", access_token=self.token)
        self.assertEqual((got.code, got.json_body), (200, {"@bob:test:8448": ["!a:test:8448"]}))
        self.make_request("PUT", f"{GLOBAL}/m.direct", {}, access_token=self.token)
        self.assertEqual(self.make_request("GET", f"{GLOBAL}/m.direct", access_token=self.token).json_body, {})

    def test_room_put_and_get_are_separate_from_global(self) -> None:
        """Room account data does not fall back to global account data, nor the other way round."""
        self.make_request("PUT", f"{IN_ROOM}/m.tag", {"tags": {"u.work": {}}}, access_token=self.token)
        got = self.make_request("GET", f"{IN_ROOM}/m.tag", access_token=self.token)
        self.assertEqual(got.json_body, {"tags": {"u.work": {}}})
        self.assertEqual(self.make_request("GET", f"{GLOBAL}/m.tag", access_token=self.token).code, 404)
        self.make_request("PUT", f"{GLOBAL}/org.example", {"g": 1}, access_token=self.token)
        self.assertEqual(self.make_request("GET", f"{IN_ROOM}/org.example", access_token=self.token).code, 404)

    def test_unknown_type_is_404(self) -> None:
        """Nothing stored: 404 M_NOT_FOUND."""
        for path in (f"{GLOBAL}/org.none", f"{IN_ROOM}/org.none"):
            channel = self.make_request("GET", path, access_token=self.token)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))

    def test_other_users_account_data_is_403(self) -> None:
        """Bob can neither read nor write Alice's account data."""
        self.make_request("PUT", f"{GLOBAL}/org.secret", {"x": 1}, access_token=self.token)
        for method, path in (("GET", f"{GLOBAL}/org.secret"), ("PUT", f"{GLOBAL}/org.secret"),
                             ("GET", f"{IN_ROOM}/org.secret"), ("PUT", f"{IN_ROOM}/org.secret")):
            channel = self.make_request(method, path, {"x": 2} if method == "PUT" else None, access_token=self.bob_token)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"), (method, path))
        self.assertEqual(self.make_request("GET", f"{GLOBAL}/org.secret", access_token=self.token).json_body, {"x": 1})

    def test_server_managed_types_are_405(self) -> None:
        """m.fully_read and m.push_rules cannot be set (405 M_BAD_JSON), globally or per room."""
        for base in (GLOBAL, IN_ROOM):
            for data_type in ("m.fully_read", "m.push_rules"):
                channel = self.make_request("PUT", f"{base}/{data_type}", {"event_id": "$x"}, access_token=self.token)
                self.assertEqual((channel.code, channel.json_body["errcode"]), (405, "M_BAD_JSON"))
                self.assertEqual(self.make_request("GET", f"{base}/{data_type}", access_token=self.token).code, 404)

    def test_bad_bodies(self) -> None:
        """Content must be a JSON object."""
        for body in (b"not json", [1, 2], "just a string", b""):
            channel = self.make_request("PUT", f"{GLOBAL}/org.example", body, access_token=self.token)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_NOT_JSON"), body)
        channel = self.make_request("PUT", f"{GLOBAL}/org.example", b'{"a": 1.5}', access_token=self.token)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_BAD_JSON"))

    def test_invalid_room_id_and_oversized_type(self) -> None:
        """A malformed room ID or a type over 255 bytes is 400 M_INVALID_PARAM."""
        channel = self.make_request(
            "PUT", "/_matrix/client/v3/user/@alice:test:8448/rooms/notaroom/account_data/m.tag", {}, access_token=self.token
        )
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        channel = self.make_request("PUT", f"{GLOBAL}/{'x' * 256}", {}, access_token=self.token)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))

    def test_requires_token(self) -> None:
        """No token: 401."""
        self.assertEqual(self.make_request("GET", f"{GLOBAL}/m.direct").code, 401)
        self.assertEqual(self.make_request("PUT", f"{GLOBAL}/m.direct", {}).code, 401)


class AccountDataStreamTests(FullHomeserverTestCase):
    def test_stream_ids_strictly_increase(self) -> None:
        """Every write, by any user, gets a larger stream id; the current position follows."""
        store = self.hs.stores.account_data
        start = self.get_success(store.get_current_stream_id())
        ids = [
            self.get_success(store.set_account_data(user, room, data_type, {"n": i}))
            for i, (user, room, data_type) in enumerate([
                ("@a:test:8448", None, "t1"), ("@b:test:8448", None, "t1"), ("@a:test:8448", "!r:test:8448", "t1"), ("@a:test:8448", None, "t1"),
            ])
        ]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), 4)
        self.assertGreater(ids[0], start)
        self.assertEqual(self.get_success(store.get_current_stream_id()), ids[-1])

    def test_changed_since(self) -> None:
        """Changes after a position come back oldest first, each entry once with its latest content."""
        store = self.hs.stores.account_data
        s1 = self.get_success(store.set_account_data("@a:test:8448", None, "t1", {"v": 1}))
        s2 = self.get_success(store.set_account_data("@a:test:8448", "!r:test:8448", "t2", {"v": 2}))
        self.get_success(store.set_account_data("@b:test:8448", None, "t1", {"v": 9}))
        s4 = self.get_success(store.set_account_data("@a:test:8448", None, "t1", {"v": 3}))
        changes = self.get_success(store.get_changed_since("@a:test:8448", 0))
        self.assertEqual(
            [(c.room_id, c.data_type, c.content, c.stream_id) for c in changes],
            [("!r:test:8448", "t2", {"v": 2}, s2), (None, "t1", {"v": 3}, s4)],
        )
        self.assertEqual(self.get_success(store.get_changed_since("@a:test:8448", s2)), changes[1:])
        self.assertEqual([c.stream_id for c in self.get_success(store.get_changed_since("@a:test:8448", s1, up_to=s2))], [s2])
        self.assertEqual(self.get_success(store.get_changed_since("@a:test:8448", s4)), [])
        self.assertEqual(len(self.get_success(store.get_changed_since("@a:test:8448", 0, limit=1))), 1)

    def test_http_writes_advance_the_stream(self) -> None:
        """Writes through the API allocate stream ids too."""
        self.register_user("alice")
        token = self.login("alice")["access_token"]
        store = self.hs.stores.account_data
        before = self.get_success(store.get_current_stream_id())
        self.make_request("PUT", f"{GLOBAL}/org.example", {"a": 1}, access_token=token)
        self.make_request("PUT", f"{IN_ROOM}/org.example", {"a": 2}, access_token=token)
        self.assertEqual(self.get_success(store.get_current_stream_id()), before + 2)
        self.assertEqual(len(self.get_success(store.get_changed_since("@alice:test:8448", before))), 2)

    def test_lost_counter_row_never_goes_backwards(self) -> None:
        """If the counter row is gone, allocation restarts above every stored stream id."""
        store = self.hs.stores.account_data
        last = 0
        for i in range(3):
            last = self.get_success(store.set_account_data("@a:test:8448", None, f"t{i}", {}))
        self.get_success(self.hs.pool.run_txn("drop_counter", lambda txn: txn.execute("DELETE FROM account_data_stream_id")))
        self.assertEqual(self.get_success(store.get_current_stream_id()), last)
        self.assertEqual(self.get_success(store.set_account_data("@a:test:8448", None, "t9", {})), last + 1)


class ConcurrentStreamIdTests(FullHomeserverTestCase):
    def test_concurrent_writer_waits_then_retries_on_postgres(self) -> None:
        """PostgreSQL: a second writer blocks on the counter row, then fails retryably; its retry gets the next id.

        This is what makes ids strictly increasing in commit order with several writers.
        """
        engine = self.hs.pool.engine
        if engine.name != "postgres":
            self.skipTest("SQLite serialises all writes on one connection")
        import threading

        from homeserver.storage.pool import Txn
        from homeserver.storage.stores.account_data import next_stream_id_txn

        first, second = engine.connect(readonly=False), engine.connect(readonly=False)
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        first_id = next_stream_id_txn(Txn(first.cursor(), engine, "first"))
        outcome: list[object] = []

        def run_second() -> None:
            try:
                outcome.append(next_stream_id_txn(Txn(second.cursor(), engine, "second")))
            except Exception as exc:  # the expected serialization failure
                outcome.append(exc)

        thread = threading.Thread(target=run_second)
        thread.start()
        thread.join(0.3)
        self.assertTrue(thread.is_alive(), "the second writer should wait for the first's row lock")
        first.commit()
        thread.join(10)
        self.assertEqual(len(outcome), 1)
        self.assertTrue(engine.is_retryable(outcome[0]), outcome)  # type: ignore[arg-type]
        second.rollback()
        retried = next_stream_id_txn(Txn(second.cursor(), engine, "second-retry"))
        second.commit()
        self.assertEqual(retried, first_id + 1)
