"""Password change, deactivation and the password policy through the real composition root (both databases)."""

from __future__ import annotations

from typing import Any

from tests.homeserver.server_case import FullHomeserverTestCase
from tests.unittest import override_config

PASSWORD_PATH = "/_matrix/client/v3/account/password"
DEACTIVATE_PATH = "/_matrix/client/v3/account/deactivate"
OLD = "p4ssw0rd-long"
NEW = "n3w-passw0rd"


def password_auth(user: str, password: str, session: str | None = None) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }
    if session is not None:
        auth["session"] = session
    return auth


class PasswordChangeTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.user_id = self.register_user("alice", OLD)
        self.register_user("bob", OLD)
        self.a = self.login("alice")
        self.b = self.login("alice")

    def _change(self, body: Any, token: str | None = None) -> Any:
        return self.make_request("POST", PASSWORD_PATH, body, access_token=token or self.a["access_token"])

    def _login_code(self, user: str, password: str) -> int:
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}
        return self.make_request("POST", "/_matrix/client/v3/login", body).code

    def test_without_auth_returns_uia_challenge(self) -> None:
        """No 'auth': 401 with the password flow and a session; nothing changes."""
        channel = self._change({"new_password": NEW})
        self.assertEqual(channel.code, 401, channel.json_body)
        self.assertEqual(channel.json_body["flows"], [{"stages": ["m.login.password"]}])
        self.assertIsInstance(channel.json_body["session"], str)
        self.assertEqual(self._login_code("alice", OLD), 200)

    def test_wrong_password_changes_nothing(self) -> None:
        """A wrong password in UIA: 401 M_FORBIDDEN with the flows; old password and sessions still work."""
        channel = self._change({"new_password": NEW, "auth": password_auth("alice", "wrong-password")})
        self.assertEqual(channel.code, 401)
        self.assertEqual(channel.json_body["errcode"], "M_FORBIDDEN")
        self.assertIn("flows", channel.json_body)
        self.assertEqual(self.whoami(self.b["access_token"]).code, 200)
        self.assertEqual(self._login_code("alice", NEW), 403)
        self.assertEqual(self._login_code("alice", OLD), 200)

    def test_change_logs_out_other_sessions_but_not_the_caller(self) -> None:
        """Success: the caller's token keeps working, other sessions end, only the new password logs in."""
        channel = self._change({"new_password": NEW, "auth": password_auth("alice", OLD)})
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {})
        self.assertEqual(self.whoami(self.a["access_token"]).code, 200)
        self.assertEqual(self.whoami(self.b["access_token"]).code, 401)
        self.assertEqual(self._login_code("alice", OLD), 403)
        self.assertEqual(self._login_code("alice", NEW), 200)

    def test_logout_devices_false_keeps_other_sessions(self) -> None:
        """logout_devices: false leaves the other sessions alone."""
        body = {"new_password": NEW, "logout_devices": False, "auth": password_auth("alice", OLD)}
        self.assertEqual(self._change(body).code, 200)
        self.assertEqual(self.whoami(self.b["access_token"]).code, 200)
        self.assertEqual(self._login_code("alice", NEW), 200)

    def test_two_step_uia_with_session(self) -> None:
        """The usual client dance: challenge first, then the same request with auth and the session."""
        session = self._change({"new_password": NEW}).json_body["session"]
        channel = self._change({"new_password": NEW, "auth": password_auth("alice", OLD, session)})
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self._login_code("alice", NEW), 200)

    def test_cannot_authenticate_as_another_user(self) -> None:
        """Bob's (right) password does not authorise changing Alice's password."""
        channel = self._change({"new_password": NEW, "auth": password_auth("bob", OLD)})
        self.assertEqual(channel.code, 401)
        self.assertEqual(channel.json_body["errcode"], "M_FORBIDDEN")
        self.assertEqual(self._login_code("alice", OLD), 200)
        self.assertEqual(self._login_code("bob", OLD), 200)

    def test_weak_password_refused_before_auth(self) -> None:
        """The policy is checked before UIA: 400 M_WEAK_PASSWORD, even with valid auth, and no change."""
        self.assertEqual(self._change({"new_password": "short"}).json_body["errcode"], "M_WEAK_PASSWORD")
        channel = self._change({"new_password": "alice-is-me", "auth": password_auth("alice", OLD)})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_WEAK_PASSWORD"))
        self.assertEqual(self._login_code("alice", OLD), 200)

    def test_bad_bodies(self) -> None:
        """Malformed bodies are 400 with the right codes."""
        cases = [
            (b"{nope", "M_NOT_JSON"),
            ([NEW], "M_NOT_JSON"),
            ({}, "M_MISSING_PARAM"),
            ({"new_password": 12345678901}, "M_INVALID_PARAM"),
            ({"new_password": NEW, "logout_devices": "yes"}, "M_INVALID_PARAM"),
            ({"new_password": NEW, "auth": "password"}, "M_BAD_JSON"),
            ({"new_password": "x" * 600}, "M_INVALID_PARAM"),
        ]
        for body, errcode in cases:
            channel = self._change(body)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, errcode), body)
        self.assertEqual(self._login_code("alice", OLD), 200)

    def test_requires_access_token(self) -> None:
        """Without a token: 401 M_MISSING_TOKEN; with a bad one: M_UNKNOWN_TOKEN."""
        body = {"new_password": NEW, "auth": password_auth("alice", OLD)}
        missing = self.make_request("POST", PASSWORD_PATH, body)
        self.assertEqual((missing.code, missing.json_body["errcode"]), (401, "M_MISSING_TOKEN"))
        bad = self.make_request("POST", PASSWORD_PATH, body, access_token="sct_forged")
        self.assertEqual((bad.code, bad.json_body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        self.assertEqual(self._login_code("alice", OLD), 200)

    def test_uia_session_cannot_move_to_another_operation(self) -> None:
        """A session opened for a password change cannot authorise a deactivation."""
        session = self._change({"new_password": NEW}).json_body["session"]
        channel = self.make_request(
            "POST", DEACTIVATE_PATH, {"auth": password_auth("alice", OLD, session)}, access_token=self.a["access_token"]
        )
        self.assertEqual(channel.code, 403)
        self.assertEqual(self.whoami(self.a["access_token"]).code, 200)

    def test_r0_path(self) -> None:
        """The legacy r0 path works too."""
        channel = self.make_request(
            "POST", "/_matrix/client/r0/account/password",
            {"new_password": NEW, "auth": password_auth("alice", OLD)}, access_token=self.a["access_token"],
        )
        self.assertEqual(channel.code, 200)


class DeactivateTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.user_id = self.register_user("alice", OLD)
        self.a = self.login("alice")
        self.b = self.login("alice")

    def _deactivate(self, body: Any) -> Any:
        return self.make_request("POST", DEACTIVATE_PATH, body, access_token=self.a["access_token"])

    def test_without_auth_returns_uia_challenge(self) -> None:
        """An empty body is accepted and answered with the UIA challenge; the account stays active."""
        channel = self._deactivate(None)
        self.assertEqual(channel.code, 401, channel.json_body)
        self.assertEqual(channel.json_body["flows"], [{"stages": ["m.login.password"]}])
        self.assertIn("session", channel.json_body)
        self.assertEqual(self.whoami(self.a["access_token"]).code, 200)

    def test_wrong_password_changes_nothing(self) -> None:
        """Wrong password: 401 M_FORBIDDEN; sessions and login keep working."""
        channel = self._deactivate({"auth": password_auth("alice", "wrong-password")})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (401, "M_FORBIDDEN"))
        self.assertEqual(self.whoami(self.b["access_token"]).code, 200)
        self.login("alice", OLD)

    def test_deactivation_ends_everything(self) -> None:
        """Every session ends, logins fail, the password and profile are gone."""
        self.get_success(self.hs.stores.profiles.set_field(self.user_id, "displayname", "Alice"))
        channel = self._deactivate({"auth": password_auth("alice", OLD)})
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {"id_server_unbind_result": "success"})
        self.assertEqual(self.whoami(self.a["access_token"]).code, 401)
        self.assertEqual(self.whoami(self.b["access_token"]).code, 401)
        login = self.make_request(
            "POST", "/_matrix/client/v3/login",
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": OLD},
        )
        self.assertEqual(login.code, 403)
        user = self.get_success(self.hs.stores.users.get_user(self.user_id))
        self.assertTrue(user.deactivated)
        self.assertIsNone(user.password_hash)
        self.assertEqual(self.get_success(self.hs.stores.devices.get_devices(self.user_id)), [])
        profile = self.get_success(self.hs.stores.profiles.get_profile(self.user_id))
        self.assertIsNone(profile.displayname)

    def test_erase_deletes_account_data(self) -> None:
        """erase: true removes the account data; without it the data stays."""
        store = self.hs.stores.account_data
        self.get_success(store.set_account_data(self.user_id, None, "org.example", {"a": 1}))
        self.assertEqual(self._deactivate({"auth": password_auth("alice", OLD), "erase": True}).code, 200)
        self.assertIsNone(self.get_success(store.get_account_data(self.user_id, None, "org.example")))

    def test_without_erase_account_data_stays(self) -> None:
        """erase defaults to false."""
        store = self.hs.stores.account_data
        self.get_success(store.set_account_data(self.user_id, None, "org.example", {"a": 1}))
        self.assertEqual(self._deactivate({"auth": password_auth("alice", OLD)}).code, 200)
        self.assertEqual(self.get_success(store.get_account_data(self.user_id, None, "org.example")), {"a": 1})

    def test_bad_bodies(self) -> None:
        """Wrong types are 400 and deactivate nothing."""
        for body, errcode in [
            ([1], "M_NOT_JSON"),
            ({"erase": "yes", "auth": password_auth("alice", OLD)}, "M_INVALID_PARAM"),
            ({"id_server": 5, "auth": password_auth("alice", OLD)}, "M_INVALID_PARAM"),
            ({"auth": 5}, "M_BAD_JSON"),
        ]:
            channel = self._deactivate(body)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, errcode), body)
        self.assertEqual(self.whoami(self.a["access_token"]).code, 200)

    def test_requires_access_token(self) -> None:
        """No token: 401 M_MISSING_TOKEN and nothing happens."""
        channel = self.make_request("POST", DEACTIVATE_PATH, {"auth": password_auth("alice", OLD)})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (401, "M_MISSING_TOKEN"))
        self.assertEqual(self.whoami(self.a["access_token"]).code, 200)


class PasswordPolicyTests(FullHomeserverTestCase):
    def test_policy_is_advertised_without_auth(self) -> None:
        """GET /password_policy returns the configured policy (NOTSPEC extension), no token needed."""
        channel = self.make_request("GET", "/_matrix/client/v3/password_policy")
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.json_body["m.minimum_length"], 8)
        self.assertIs(channel.json_body["m.require_digit"], False)

    @override_config({"registration": {"password_policy": {"enabled": False}}})
    def test_disabled_policy_is_empty(self) -> None:
        """A disabled policy advertises nothing."""
        self.assertEqual(self.make_request("GET", "/_matrix/client/v3/password_policy").json_body, {})
