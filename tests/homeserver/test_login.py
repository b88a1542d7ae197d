"""Login, logout, refresh and whoami through the real composition root (both databases)."""

from __future__ import annotations

from twisted.internet.task import deferLater

from tests.homeserver.server_case import FullHomeserverTestCase
from tests.unittest import override_config

LOGIN = "/_matrix/client/v3/login"


class LoginTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.user_id = self.register_user("alice")

    def test_get_login_flows(self) -> None:
        """GET /login lists the password flow."""
        channel = self.make_request("GET", LOGIN)
        self.assertEqual(channel.code, 200)
        self.assertIn({"type": "m.login.password"}, channel.json_body["flows"])

    def test_password_login_returns_working_token(self) -> None:
        """A password login returns user, device and a token that whoami accepts."""
        body = self.login("alice", initial_device_display_name="Laptop")
        self.assertEqual(body["user_id"], "@alice:test:8448")
        self.assertTrue(body["device_id"])
        channel = self.whoami(body["access_token"])
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.json_body, {"user_id": "@alice:test:8448", "device_id": body["device_id"], "is_guest": False})

    def test_login_by_full_user_id_and_legacy_user_field(self) -> None:
        """Both the full user ID and the deprecated top-level 'user' field work."""
        self.login("@alice:test:8448")
        channel = self.make_request("POST", LOGIN, {"type": "m.login.password", "user": "alice", "password": "p4ssw0rd-long"})
        self.assertEqual(channel.code, 200)

    def test_login_is_case_insensitive_on_user(self) -> None:
        """Logging in as ALICE finds @alice."""
        body = self.login("ALICE")
        self.assertEqual(body["user_id"], "@alice:test:8448")

    def test_wrong_password_and_unknown_user_look_the_same(self) -> None:
        """Wrong password and unknown user both answer 403 M_FORBIDDEN with the same message."""
        wrong = self.make_request("POST", LOGIN, {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "nope-nope"})
        unknown = self.make_request("POST", LOGIN, {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "nope-nope"})
        self.assertEqual((wrong.code, unknown.code), (403, 403))
        self.assertEqual(wrong.json_body, unknown.json_body)
        self.assertEqual(wrong.json_body["errcode"], "M_FORBIDDEN")

    def test_remote_user_cannot_log_in_here(self) -> None:
        """A user ID on another server is refused."""
        channel = self.make_request("POST", LOGIN, {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@alice:elsewhere"}, "password": "p4ssw0rd-long"})
        self.assertEqual(channel.code, 403)

    def test_bad_login_bodies(self) -> None:
        """Malformed bodies get 400 with the spec's codes and create no session."""
        cases = [
            (b"{not json", "M_NOT_JSON"),
            ([1, 2], "M_NOT_JSON"),
            ({"type": 5, "password": "x"}, ("M_BAD_JSON", "M_INVALID_PARAM")),
            ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}}, "M_MISSING_PARAM"),
            ({"type": "m.login.password", "identifier": "alice", "password": "x"}, ("M_BAD_JSON",)),
            ({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email"}, "password": "x"}, "M_UNRECOGNIZED"),
            ({"type": "m.login.magic"}, "M_UNKNOWN"),
        ]
        for body, errcode in cases:
            channel = self.make_request("POST", LOGIN, body)
            self.assertEqual(channel.code, 400, (body, channel.json_body))
            expected = errcode if isinstance(errcode, tuple) else (errcode,)
            self.assertIn(channel.json_body["errcode"], expected, body)
        self.assertEqual(self.get_success(self.hs.stores.devices.get_devices(self.user_id)), [])

    def test_login_with_device_id_replaces_that_devices_tokens(self) -> None:
        """Logging in again with the same device_id ends the device's old token."""
        first = self.login("alice", device_id="PHONE")
        second = self.login("alice", device_id="PHONE")
        self.assertEqual(second["device_id"], "PHONE")
        self.assertEqual(self.whoami(first["access_token"]).code, 401)
        self.assertEqual(self.whoami(second["access_token"]).code, 200)

    def test_deactivated_user_cannot_log_in(self) -> None:
        """Deactivation refuses logins (the password is gone)."""
        self.get_success(self.hs.stores.users.set_deactivated(self.user_id, True))
        channel = self.make_request("POST", LOGIN, {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "p4ssw0rd-long"})
        self.assertEqual(channel.code, 403)


class LogoutTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")
        self.register_user("bob")

    def test_logout_ends_only_the_callers_session(self) -> None:
        """AUTH-3: a token ends only its own session; the user's other sessions keep working."""
        a = self.login("alice")
        b = self.login("alice")
        channel = self.make_request("POST", "/_matrix/client/v3/logout", {}, access_token=b["access_token"])
        self.assertEqual(channel.code, 200)
        self.assertEqual(self.whoami(b["access_token"]).code, 401)
        self.assertEqual(self.whoami(a["access_token"]).code, 200)
        devices = self.get_success(self.hs.stores.devices.get_devices("@alice:test:8448"))
        self.assertEqual([d.device_id for d in devices], [a["device_id"]])

    def test_logout_cannot_name_another_device(self) -> None:
        """AUTH-3: a forged device_id (or user) in the logout body is ignored; only the caller's session ends."""
        a = self.login("alice")
        bob = self.login("bob")
        body = {"device_id": a["device_id"], "user_id": "@alice:test:8448"}
        channel = self.make_request("POST", "/_matrix/client/v3/logout", body, access_token=bob["access_token"])
        self.assertEqual(channel.code, 200)
        self.assertEqual(self.whoami(a["access_token"]).code, 200)
        self.assertEqual(self.whoami(bob["access_token"]).code, 401)

    def test_logout_all(self) -> None:
        """/logout/all ends every session of the caller, and nobody else's."""
        a1, a2, b = self.login("alice"), self.login("alice"), self.login("bob")
        channel = self.make_request("POST", "/_matrix/client/v3/logout/all", {}, access_token=a1["access_token"])
        self.assertEqual(channel.code, 200)
        self.assertEqual(self.whoami(a1["access_token"]).code, 401)
        self.assertEqual(self.whoami(a2["access_token"]).code, 401)
        self.assertEqual(self.whoami(b["access_token"]).code, 200)

    def test_logout_without_or_with_bad_token(self) -> None:
        """Logout needs a valid token: 401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN."""
        missing = self.make_request("POST", "/_matrix/client/v3/logout", {})
        self.assertEqual((missing.code, missing.json_body["errcode"]), (401, "M_MISSING_TOKEN"))
        unknown = self.make_request("POST", "/_matrix/client/v3/logout", {}, access_token="sct_forged")
        self.assertEqual((unknown.code, unknown.json_body["errcode"]), (401, "M_UNKNOWN_TOKEN"))

    def test_tokens_are_stored_hashed(self) -> None:
        """ADR 0002: the raw access token never appears in the database."""
        body = self.login("alice")

        def dump_txn(txn: object) -> list[tuple[object, ...]]:
            txn.execute("SELECT token_hash FROM access_tokens")  # type: ignore[attr-defined]
            return txn.fetchall()  # type: ignore[attr-defined,no-any-return]

        rows = self.get_success(self.hs.pool.run_read("dump", dump_txn))
        self.assertTrue(rows)
        self.assertNotIn(body["access_token"], [r[0] for r in rows])


class RefreshTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")

    def test_refreshable_login_expires_and_refreshes(self) -> None:
        """A refreshable token expires after expires_in_ms (soft logout) and /refresh issues a new pair."""
        body = self.login("alice", refresh_token=True)
        self.assertIn("refresh_token", body)
        self.assertEqual(body["expires_in_ms"], 300_000)
        self.assertEqual(self.whoami(body["access_token"]).code, 200)
        self.reactor.advance(301)
        expired = self.whoami(body["access_token"])
        self.assertEqual(expired.code, 401)
        self.assertEqual(expired.json_body["errcode"], "M_UNKNOWN_TOKEN")
        self.assertIs(expired.json_body["soft_logout"], True)
        channel = self.make_request("POST", "/_matrix/client/v3/refresh", {"refresh_token": body["refresh_token"]})
        self.assertEqual(channel.code, 200, channel.json_body)
        new = channel.json_body
        self.assertNotEqual(new["refresh_token"], body["refresh_token"])
        who = self.whoami(new["access_token"])
        self.assertEqual(who.json_body["device_id"], body["device_id"])

    def test_old_refresh_token_dies_once_successor_is_used(self) -> None:
        """Rotation: refreshing with the new token retires the old one."""
        body = self.login("alice", refresh_token=True)
        r1 = self.make_request("POST", "/_matrix/client/v3/refresh", {"refresh_token": body["refresh_token"]}).json_body
        r2 = self.make_request("POST", "/_matrix/client/v3/refresh", {"refresh_token": r1["refresh_token"]})
        self.assertEqual(r2.code, 200)
        stale = self.make_request("POST", "/_matrix/client/v3/refresh", {"refresh_token": body["refresh_token"]})
        self.assertEqual(stale.code, 401)
        self.assertIs(stale.json_body["soft_logout"], True)

    def test_refresh_retry_replaces_first_answer(self) -> None:
        """A retried refresh (lost response) works and invalidates the pair handed out first."""
        body = self.login("alice", refresh_token=True)
        first = self.make_request("POST", "/_matrix/client/v3/refresh", {"refresh_token": body["refresh_token"]}).json_body
        retry = self.make_request("POST", "/_matrix/client/v3/refresh", {"refresh_token": body["refresh_token"]})
        self.assertEqual(retry.code, 200)
        self.assertEqual(self.whoami(first["access_token"]).code, 401)
        self.assertEqual(self.whoami(retry.json_body["access_token"]).code, 200)

    def test_refresh_bad_inputs(self) -> None:
        """Unknown refresh tokens and malformed bodies are refused."""
        self.assertEqual(self.make_request("POST", "/_matrix/client/v3/refresh", {"refresh_token": "scr_nope"}).code, 401)
        self.assertEqual(self.make_request("POST", "/_matrix/client/v3/refresh", {"refresh_token": 7}).code, 400)
        self.assertEqual(self.make_request("POST", "/_matrix/client/v3/refresh", {}).code, 400)

    @override_config({"auth": {"access_token_lifetime_ms": 1000}})
    def test_non_refreshable_token_lifetime(self) -> None:
        """access_token_lifetime_ms makes plain tokens expire too."""
        body = self.login("alice")
        self.reactor.advance(2)
        self.assertEqual(self.whoami(body["access_token"]).code, 401)


class LockoutTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")

    def _attempt(self, password: str) -> int:
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": password}
        return self.make_request("POST", LOGIN, body).code

    def test_lockout_after_max_failures(self) -> None:
        """AUTH-1: after 5 wrong passwords even the right one is refused (429 with retry_after_ms) until the lock ends."""
        codes = [self._attempt("wrong-password") for _ in range(5)]
        self.assertEqual(codes, [403] * 5)
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "p4ssw0rd-long"}
        locked = self.make_request("POST", LOGIN, body)
        self.assertEqual(locked.code, 429)
        self.assertEqual(locked.json_body["errcode"], "M_LIMIT_EXCEEDED")
        self.assertGreater(locked.json_body["retry_after_ms"], 0)
        self.reactor.advance(901)
        self.assertEqual(self.make_request("POST", LOGIN, body).code, 200)

    @override_config({"auth": {"lockout": {"response": "user_locked"}}})
    def test_lockout_response_user_locked(self) -> None:
        """With response: user_locked a locked account answers M_USER_LOCKED."""
        for _ in range(5):
            self._attempt("wrong-password")
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "p4ssw0rd-long"}
        channel = self.make_request("POST", LOGIN, body)
        self.assertEqual(channel.json_body["errcode"], "M_USER_LOCKED")

    def test_success_resets_the_count(self) -> None:
        """A successful login forgets earlier failures."""
        for _ in range(4):
            self._attempt("wrong-password")
        self.assertEqual(self._attempt("p4ssw0rd-long"), 200)
        self.assertEqual([self._attempt("wrong-password") for _ in range(4)], [403] * 4)
        self.assertEqual(self._attempt("p4ssw0rd-long"), 200)

    def test_failures_outside_window_do_not_count(self) -> None:
        """Failures older than window_s are forgotten."""
        for _ in range(4):
            self._attempt("wrong-password")
        self.reactor.advance(301)
        self.assertEqual([self._attempt("wrong-password") for _ in range(4)], [403] * 4)
        self.assertEqual(self._attempt("p4ssw0rd-long"), 200)

    def test_concurrent_wrong_passwords_never_exceed_the_limit(self) -> None:
        """RACE-5/7: 40 concurrent attempts check at most 5 passwords; the rest are refused unchecked."""
        checked: list[str] = []
        real_verify = self.hs.hasher.verify

        def counting_verify(password_hash: str | None, password: str) -> bool:
            checked.append(password)
            return real_verify(password_hash, password)

        self.hs.hasher.verify = counting_verify  # type: ignore[method-assign]

        def slow_thread(fn, *args):  # type: ignore[no-untyped-def]
            # Hashing "in a thread" that finishes later, so all 40 requests are in flight at once.
            return deferLater(self.reactor, 0.05, fn, *args)

        self.hs.sessions._run_in_thread = slow_thread
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong-password"}
        from tests.unittest import make_request as raw_request

        channels = [raw_request(self.reactor, self.site, "POST", LOGIN, body, await_result=False) for _ in range(40)]
        self.pump(1)
        codes = sorted(c.code for c in channels)
        self.assertEqual(len(checked), 5)
        self.assertEqual(codes.count(403), 5)
        self.assertEqual(codes.count(429), 35)


class ConcurrentCorrectLoginTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")

    def test_burst_of_correct_logins_never_locks_the_account(self) -> None:
        """Checks in flight count toward the limit (429 'retry shortly'), but only failures lock."""
        from tests.unittest import make_request as raw_request

        self.hs.sessions._run_in_thread = lambda fn, *a: deferLater(self.reactor, 0.05, fn, *a)
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "p4ssw0rd-long"}
        channels = [raw_request(self.reactor, self.site, "POST", LOGIN, body, await_result=False) for _ in range(8)]
        self.pump(1)
        codes = sorted(c.code for c in channels)
        self.assertEqual(codes, [200] * 5 + [429] * 3)
        busy = [c.json_body for c in channels if c.code == 429]
        self.assertTrue(all(b["retry_after_ms"] == 1000 for b in busy))
        self.assertEqual(self.make_request("POST", LOGIN, body).code, 200)


class SessionLimitTests(FullHomeserverTestCase):
    @override_config({"auth": {"max_sessions_per_user": 3}})
    def test_oldest_session_evicted(self) -> None:
        """AUTH-4: the fourth login evicts the least recently used session."""
        self.register_user("alice")
        tokens = []
        for _ in range(4):
            tokens.append(self.login("alice")["access_token"])
            self.reactor.advance(1)
        self.assertEqual(self.whoami(tokens[0]).code, 401)
        for token in tokens[1:]:
            self.assertEqual(self.whoami(token).code, 200)
        self.assertEqual(len(self.get_success(self.hs.stores.devices.get_devices("@alice:test:8448"))), 3)


class WhoamiTests(FullHomeserverTestCase):
    def test_whoami_requires_token(self) -> None:
        """No token: 401 M_MISSING_TOKEN; a made-up token: 401 M_UNKNOWN_TOKEN, soft_logout false."""
        self.assertEqual(self.make_request("GET", "/_matrix/client/v3/account/whoami").json_body["errcode"], "M_MISSING_TOKEN")
        channel = self.whoami("sct_made_up")
        self.assertEqual((channel.code, channel.json_body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        self.assertIs(channel.json_body.get("soft_logout", False), False)


class LockedAccountTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")

    def test_locked_account_gets_no_new_tokens(self) -> None:
        """Spec "Account locking": a locked account cannot log in or refresh (401 M_USER_LOCKED, soft_logout)."""
        refreshable = self.login("alice", refresh_token=True)
        self.get_success(self.hs.stores.users.set_admin_lock("@alice:test:8448", True))
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "p4ssw0rd-long"}
        channel = self.make_request("POST", LOGIN, body)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (401, "M_USER_LOCKED"))
        self.assertIs(channel.json_body["soft_logout"], True)
        refresh = self.make_request("POST", "/_matrix/client/v3/refresh", {"refresh_token": refreshable["refresh_token"]})
        self.assertEqual((refresh.code, refresh.json_body["errcode"]), (401, "M_USER_LOCKED"))
        self.get_success(self.hs.stores.users.set_admin_lock("@alice:test:8448", False))
        self.assertEqual(self.make_request("POST", LOGIN, body).code, 200)

    def test_wrong_password_on_locked_account_does_not_reveal_the_lock(self) -> None:
        """Without the right password, a locked account looks like any failed login (403)."""
        self.get_success(self.hs.stores.users.set_admin_lock("@alice:test:8448", True))
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong-one"}
        self.assertEqual(self.make_request("POST", LOGIN, body).code, 403)


class LoginTokenTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")
        self.token = self.login("alice")["access_token"]

    def _get_token(self) -> str:
        path = "/_matrix/client/v1/login/get_token"
        first = self.make_request("POST", path, {}, access_token=self.token)
        self.assertEqual(first.code, 401)  # user-interactive auth first
        auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "p4ssw0rd-long", "session": first.json_body["session"]}
        channel = self.make_request("POST", path, {"auth": auth}, access_token=self.token)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["expires_in_ms"], 120_000)
        token: str = channel.json_body["login_token"]
        return token

    def test_login_token_signs_in_once(self) -> None:
        """m.login.token: a token from get_token logs in exactly once."""
        self.assertIn({"type": "m.login.token", "get_login_token": True}, self.make_request("GET", LOGIN).json_body["flows"])
        token = self._get_token()
        channel = self.make_request("POST", LOGIN, {"type": "m.login.token", "token": token})
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["user_id"], "@alice:test:8448")
        again = self.make_request("POST", LOGIN, {"type": "m.login.token", "token": token})
        self.assertEqual(again.code, 403)

    def test_login_token_expires(self) -> None:
        token = self._get_token()
        self.reactor.advance(121)
        self.assertEqual(self.make_request("POST", LOGIN, {"type": "m.login.token", "token": token}).code, 403)

    def test_bad_login_tokens(self) -> None:
        """Unknown or malformed tokens are refused; get_token needs a valid session and the password."""
        self.assertEqual(self.make_request("POST", LOGIN, {"type": "m.login.token", "token": "scl_nope"}).code, 403)
        self.assertEqual(self.make_request("POST", LOGIN, {"type": "m.login.token", "token": 5}).code, 400)
        self.assertEqual(self.make_request("POST", "/_matrix/client/v1/login/get_token", {}).code, 401)
        first = self.make_request("POST", "/_matrix/client/v1/login/get_token", {}, access_token=self.token)
        auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "wrong-one", "session": first.json_body["session"]}
        wrong = self.make_request("POST", "/_matrix/client/v1/login/get_token", {"auth": auth}, access_token=self.token)
        self.assertEqual((wrong.code, wrong.json_body["errcode"]), (401, "M_FORBIDDEN"))
