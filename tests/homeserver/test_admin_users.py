"""The user admin API (``/_synapse/admin``, issue 3) through the real composition root (both databases)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.homeserver.server_case import FullHomeserverTestCase
from tests.unittest import FakeChannel, override_config

ADMIN = "/_synapse/admin"
LOGIN = "/_matrix/client/v3/login"
PASSWORD = "p4ssw0rd-long"


def user_path(user_id: str, suffix: str = "") -> str:
    return f"{ADMIN}/v2/users/{quote(user_id)}{suffix}"


class AdminTestCase(FullHomeserverTestCase):
    """Creates an admin (``self.admin_token``) and a plain user alice (``self.alice_token``)."""

    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.admin_id = self.register_user("root", admin=True)
        self.admin_token = self.login("root")["access_token"]
        self.alice_id = self.register_user("alice")
        self.alice = self.login("alice", initial_device_display_name="Alice phone")
        self.alice_token = self.alice["access_token"]

    def admin_request(self, method: str, path: str, content: Any = None) -> FakeChannel:
        return self.make_request(method, path, content, access_token=self.admin_token)

    def login_code(self, localpart: str, password: str) -> int:
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
                "password": password}
        return self.make_request("POST", LOGIN, body).code


# Every admin endpoint, with a body good enough to get past parsing.
ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", f"{ADMIN}/v2/users", None),
    ("GET", user_path("@alice:test:8448"), None),
    ("PUT", user_path("@alice:test:8448"), {"displayname": "x"}),
    ("PUT", user_path("@newbie:test:8448"), {"password": "whatever-long"}),
    ("POST", f"{ADMIN}/v1/deactivate/{quote('@alice:test:8448')}", {}),
    ("POST", f"{ADMIN}/v1/reset_password/{quote('@alice:test:8448')}", {"new_password": "another-long"}),
    ("GET", user_path("@alice:test:8448", "/devices"), None),
    ("GET", user_path("@alice:test:8448", "/devices/DEV"), None),
    ("DELETE", user_path("@alice:test:8448", "/devices/DEV"), None),
    ("POST", user_path("@alice:test:8448", "/delete_devices"), {"devices": ["DEV"]}),
    ("GET", f"{ADMIN}/v1/whois/{quote('@root:test:8448')}", None),
    ("GET", f"/_matrix/client/v1/admin/lock/{quote('@alice:test:8448')}", None),
    ("PUT", f"/_matrix/client/v1/admin/lock/{quote('@alice:test:8448')}", {"locked": True}),
    ("GET", user_path("@ghost:test:8448"), None),
]


class AccessTests(AdminTestCase):
    def test_no_token_is_401(self) -> None:
        """Every admin endpoint needs an access token."""
        for method, path, body in ENDPOINTS:
            channel = self.make_request(method, path, body)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (401, "M_MISSING_TOKEN"), path)

    def test_non_admin_is_403_everywhere(self) -> None:
        """A non-admin gets 403 M_FORBIDDEN on every endpoint and nothing changes."""
        for method, path, body in ENDPOINTS:
            channel = self.make_request(method, path, body, access_token=self.alice_token)
            self.assertEqual(channel.code, 403, (method, path, channel.json_body))
            self.assertEqual(channel.json_body["errcode"], "M_FORBIDDEN")
            if path.startswith(ADMIN):
                self.assertEqual(channel.json_body["error"], "You are not a server admin")
        self.assertIsNone(self.get_success(self.hs.stores.users.get_user("@newbie:test:8448")))
        user = self.get_success(self.hs.stores.users.get_user(self.alice_id))
        self.assertFalse(user.deactivated or user.locked)
        self.assertEqual(self.whoami(self.alice_token).code, 200)

    def test_bad_token_is_401(self) -> None:
        """A made-up token is 401 M_UNKNOWN_TOKEN, not 403."""
        channel = self.make_request("GET", f"{ADMIN}/v2/users", access_token="sct_nope")
        self.assertEqual((channel.code, channel.json_body["errcode"]), (401, "M_UNKNOWN_TOKEN"))


class ListUsersTests(AdminTestCase):
    def test_list_shape(self) -> None:
        """Each user carries Synapse's fields; creation_ts is in milliseconds."""
        self.get_success(self.hs.stores.profiles.set_field(self.alice_id, "displayname", "Alice A"))
        channel = self.admin_request("GET", f"{ADMIN}/v2/users")
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["total"], 2)
        self.assertNotIn("next_token", channel.json_body)
        users = {u["name"]: u for u in channel.json_body["users"]}
        alice = users["@alice:test:8448"]
        self.assertEqual(alice["displayname"], "Alice A")
        self.assertIsNone(alice["avatar_url"])
        for key in ("is_guest", "admin", "deactivated", "locked"):
            self.assertIs(alice[key], False, key)
        self.assertIs(users["@root:test:8448"]["admin"], True)
        self.assertEqual(alice["creation_ts"], self.clock.time_msec())

    def test_pagination(self) -> None:
        """from/limit page through the users in name order; next_token appears while more remain."""
        for i in range(5):
            self.register_user(f"user{i}")
        seen: list[str] = []
        token: str | None = "0"
        pages = 0
        while token is not None:
            channel = self.admin_request("GET", f"{ADMIN}/v2/users?from={token}&limit=3")
            self.assertEqual(channel.code, 200)
            self.assertEqual(channel.json_body["total"], 7)
            seen += [u["name"] for u in channel.json_body["users"]]
            token = channel.json_body.get("next_token")
            pages += 1
        self.assertEqual(pages, 3)
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(len(set(seen)), 7)

    def test_limit_is_clamped_and_zero_allowed(self) -> None:
        """A huge limit is clamped (not an error); limit=0 returns no users but the total."""
        channel = self.admin_request("GET", f"{ADMIN}/v2/users?limit=99999999")
        self.assertEqual((channel.code, len(channel.json_body["users"])), (200, 2))
        channel = self.admin_request("GET", f"{ADMIN}/v2/users?limit=0")
        self.assertEqual((channel.json_body["users"], channel.json_body["total"]), ([], 2))
        self.assertNotIn("next_token", channel.json_body)

    def test_name_filter(self) -> None:
        """name matches localparts and display names case-insensitively, never the server name."""
        self.register_user("bob")
        self.get_success(self.hs.stores.profiles.set_field("@bob:test:8448", "displayname", "Bobby Tables"))
        self.register_user("under_score")

        def names(query: str) -> list[str]:
            channel = self.admin_request("GET", f"{ADMIN}/v2/users?{query}")
            self.assertEqual(channel.code, 200, channel.json_body)
            return [u["name"] for u in channel.json_body["users"]]

        self.assertEqual(names("name=ALI"), ["@alice:test:8448"])
        self.assertEqual(names("name=tables"), ["@bob:test:8448"])
        self.assertEqual(names("name=test"), [])
        self.assertEqual(names("name=_"), ["@under_score:test:8448"])  # LIKE wildcards are literal
        self.assertEqual(names("name=%25"), [])
        self.assertEqual(names("user_id=%40bo"), ["@bob:test:8448"])

    def test_flag_filters(self) -> None:
        """deactivated/guests/admins/locked filters follow Synapse's defaults."""
        self.register_user("gone")
        self.get_success(self.hs.stores.users.set_deactivated("@gone:test:8448", True))
        self.get_success(self.hs.stores.users.create_user("@guest1:test:8448", None, 0, is_guest=True))
        self.register_user("held")
        self.get_success(self.hs.stores.users.set_admin_lock("@held:test:8448", True))

        def names(query: str) -> set[str]:
            channel = self.admin_request("GET", f"{ADMIN}/v2/users?{query}")
            self.assertEqual(channel.code, 200, channel.json_body)
            return {u["name"] for u in channel.json_body["users"]}

        base = {"@root:test:8448", "@alice:test:8448", "@guest1:test:8448"}
        self.assertEqual(names(""), base)
        self.assertEqual(names("deactivated=true"), base | {"@gone:test:8448"})
        self.assertEqual(names("guests=false"), base - {"@guest1:test:8448"})
        self.assertEqual(names("admins=true"), {"@root:test:8448"})
        self.assertEqual(names("admins=false"), base - {"@root:test:8448"})
        self.assertEqual(names("locked=true"), base | {"@held:test:8448"})

    def test_order(self) -> None:
        """order_by and dir sort the list."""
        self.reactor.advance(1)
        self.register_user("aaron")
        channel = self.admin_request("GET", f"{ADMIN}/v2/users?order_by=creation_ts&dir=b")
        self.assertEqual(channel.json_body["users"][0]["name"], "@aaron:test:8448")
        channel = self.admin_request("GET", f"{ADMIN}/v2/users?dir=b")
        self.assertEqual([u["name"] for u in channel.json_body["users"]], ["@root:test:8448", "@alice:test:8448", "@aaron:test:8448"])

    def test_bad_query_parameters(self) -> None:
        """Malformed or oversized parameters are 400 M_INVALID_PARAM."""
        for query in ("from=-1", "from=abc", "limit=-5", "limit=1.5", "guests=yes", "deactivated=1",
                      "admins=maybe", "order_by=password_hash", "dir=up", "name=" + "x" * 300):
            channel = self.admin_request("GET", f"{ADMIN}/v2/users?{query}")
            self.assertEqual(channel.code, 400, query)
            self.assertEqual(channel.json_body["errcode"], "M_INVALID_PARAM", query)


class GetUserTests(AdminTestCase):
    def test_get_user(self) -> None:
        """One user in Synapse's shape, including locked."""
        channel = self.admin_request("GET", user_path(self.alice_id))
        self.assertEqual(channel.code, 200)
        body = channel.json_body
        self.assertEqual(body["name"], "@alice:test:8448")
        self.assertIs(body["locked"], False)
        self.assertEqual(body["threepids"], [])
        self.assertNotIn("password_hash", body)

    def test_unknown_remote_and_malformed(self) -> None:
        """Unknown local user 404; a remote or malformed user ID 400."""
        channel = self.admin_request("GET", user_path("@nobody:test:8448"))
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))
        for bad in ("@alice:elsewhere", "alice", "@:"):
            channel = self.admin_request("GET", user_path(bad))
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"), bad)


class PutUserTests(AdminTestCase):
    def test_create_user(self) -> None:
        """PUT on a new ID creates it (201) with password, profile and flags; the user can log in."""
        body = {"password": "short", "displayname": "Newbie", "avatar_url": "mxc://test:8448/abc", "admin": True}
        channel = self.admin_request("PUT", user_path("@newbie:test:8448"), body)
        self.assertEqual(channel.code, 201, channel.json_body)
        self.assertEqual(channel.json_body["displayname"], "Newbie")
        self.assertEqual(channel.json_body["avatar_url"], "mxc://test:8448/abc")
        self.assertIs(channel.json_body["admin"], True)
        # The password policy does not bind admins (as in Synapse): "short" works.
        self.assertEqual(self.login_code("newbie", "short"), 200)

    def test_create_without_password_cannot_log_in(self) -> None:
        """An account created without a password exists but has no password login."""
        channel = self.admin_request("PUT", user_path("@nopass:test:8448"), {})
        self.assertEqual(channel.code, 201)
        self.assertEqual(self.login_code("nopass", ""), 403)

    def test_create_locked_or_deactivated(self) -> None:
        """Flags given at creation apply."""
        channel = self.admin_request("PUT", user_path("@held:test:8448"), {"password": PASSWORD, "locked": True})
        self.assertIs(channel.json_body["locked"], True)
        channel = self.admin_request("PUT", user_path("@dead:test:8448"), {"password": PASSWORD, "deactivated": True})
        self.assertIs(channel.json_body["deactivated"], True)
        self.assertEqual(self.login_code("dead", PASSWORD), 403)

    def test_create_invalid_or_taken_localpart(self) -> None:
        """New IDs must fit the current grammar; another case of an existing ID is taken."""
        channel = self.admin_request("PUT", user_path("@Bad Name:test:8448"), {"password": PASSWORD})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_USERNAME"))
        channel = self.admin_request("PUT", user_path("@ALICE:test:8448"), {"password": PASSWORD})
        self.assertEqual(channel.code, 400)
        self.assertIn(channel.json_body["errcode"], ("M_INVALID_USERNAME", "M_USER_IN_USE"))

    def test_modify_profile_and_admin(self) -> None:
        """PUT on an existing user changes only what the body names (200)."""
        channel = self.admin_request("PUT", user_path(self.alice_id), {"displayname": "Al", "admin": True})
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["displayname"], "Al")
        self.assertIs(channel.json_body["admin"], True)
        self.assertEqual(self.whoami(self.alice_token).code, 200)
        channel = self.admin_request("PUT", user_path(self.alice_id), {"avatar_url": "mxc://test:8448/x"})
        self.assertEqual((channel.json_body["displayname"], channel.json_body["avatar_url"]), ("Al", "mxc://test:8448/x"))

    def test_password_change_logs_out_by_default(self) -> None:
        """A new password ends every session unless logout_devices is false."""
        channel = self.admin_request("PUT", user_path(self.alice_id), {"password": "new-password-1"})
        self.assertEqual(channel.code, 200)
        self.assertEqual(self.whoami(self.alice_token).code, 401)
        self.assertEqual(self.login_code("alice", PASSWORD), 403)
        token = self.login("alice", "new-password-1")["access_token"]
        self.admin_request("PUT", user_path(self.alice_id), {"password": "new-password-2", "logout_devices": False})
        self.assertEqual(self.whoami(token).code, 200)
        self.assertEqual(self.login_code("alice", "new-password-2"), 200)

    def test_admin_cannot_demote_or_lock_self(self) -> None:
        """An admin cannot remove their own admin flag or lock themselves out."""
        for body in ({"admin": False}, {"locked": True}):
            channel = self.admin_request("PUT", user_path(self.admin_id), body)
            self.assertEqual(channel.code, 400, body)
        self.assertEqual(self.admin_request("GET", f"{ADMIN}/v2/users").code, 200)

    def test_deactivate_and_reactivate(self) -> None:
        """deactivated: true ends sessions and blocks login; re-activation needs a password."""
        channel = self.admin_request("PUT", user_path(self.alice_id), {"deactivated": True})
        self.assertIs(channel.json_body["deactivated"], True)
        self.assertEqual(self.whoami(self.alice_token).code, 401)
        self.assertEqual(self.get_success(self.hs.stores.devices.get_devices(self.alice_id)), [])
        self.assertEqual(self.login_code("alice", PASSWORD), 403)
        channel = self.admin_request("PUT", user_path(self.alice_id), {"deactivated": False})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_MISSING_PARAM"))
        channel = self.admin_request("PUT", user_path(self.alice_id), {"deactivated": False, "password": "back-again"})
        self.assertEqual(channel.code, 200)
        self.assertIs(channel.json_body["deactivated"], False)
        self.assertEqual(self.login_code("alice", "back-again"), 200)

    def test_lock_and_unlock(self) -> None:
        """locked: true makes existing tokens answer 401 M_USER_LOCKED (soft logout) except /logout."""
        channel = self.admin_request("PUT", user_path(self.alice_id), {"locked": True})
        self.assertIs(channel.json_body["locked"], True)
        who = self.whoami(self.alice_token)
        self.assertEqual((who.code, who.json_body["errcode"]), (401, "M_USER_LOCKED"))
        self.assertIs(who.json_body["soft_logout"], True)
        # Sessions are kept (spec: servers SHOULD NOT invalidate tokens of locked accounts)...
        self.assertEqual(len(self.get_success(self.hs.stores.devices.get_devices(self.alice_id))), 1)
        # ...and no new token can be obtained while locked (spec "Account locking").
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "p4ssw0rd-long"}
        refused = self.make_request("POST", "/_matrix/client/v3/login", body)
        self.assertEqual((refused.code, refused.json_body["errcode"]), (401, "M_USER_LOCKED"))
        self.admin_request("PUT", user_path(self.alice_id), {"locked": False})
        self.assertEqual(self.whoami(self.alice_token).code, 200)
        self.admin_request("PUT", user_path(self.alice_id), {"locked": True})
        logout = self.make_request("POST", "/_matrix/client/v3/logout", {}, access_token=self.alice_token)
        self.assertEqual(logout.code, 200)

    def test_bad_bodies(self) -> None:
        """Wrong types, oversized values and non-objects are 400 and change nothing."""
        cases: list[Any] = [
            {"password": 5}, {"admin": "yes"}, {"deactivated": 1}, {"locked": "true"},
            {"displayname": ["x"]}, {"displayname": "x" * 257}, {"avatar_url": {}}, {"logout_devices": "no"},
            {"password": "x" * 513}, [1], "str", b"{nope",
        ]
        for body in cases:
            channel = self.admin_request("PUT", user_path(self.alice_id), body)
            self.assertEqual(channel.code, 400, body)
        channel = self.admin_request("PUT", user_path("@alice:elsewhere"), {"admin": True})
        self.assertEqual(channel.code, 400)
        self.assertEqual(self.whoami(self.alice_token).code, 200)
        self.assertIs(self.admin_request("GET", user_path(self.alice_id)).json_body["admin"], False)


class DeactivateTests(AdminTestCase):
    def test_deactivate_ends_sessions_and_blocks_login(self) -> None:
        """POST deactivate answers Synapse's body, ends every session and refuses logins."""
        self.login("alice")
        channel = self.admin_request("POST", f"{ADMIN}/v1/deactivate/{quote(self.alice_id)}", {"erase": False})
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.json_body, {"id_server_unbind_result": "success"})
        self.assertEqual(self.whoami(self.alice_token).code, 401)
        self.assertEqual(self.get_success(self.hs.stores.devices.get_devices(self.alice_id)), [])
        self.assertEqual(self.login_code("alice", PASSWORD), 403)

    def test_empty_body_and_erase(self) -> None:
        """The body is optional; erase clears the profile."""
        self.get_success(self.hs.stores.profiles.set_field(self.alice_id, "displayname", "Alice"))
        path = f"{ADMIN}/v1/deactivate/{quote(self.alice_id)}"
        self.assertEqual(self.admin_request("POST", path).code, 200)
        self.assertEqual(self.admin_request("POST", path, {"erase": True}).code, 200)
        profile = self.get_success(self.hs.stores.profiles.get_profile(self.alice_id))
        self.assertIsNone(profile.displayname)

    def test_bad_requests(self) -> None:
        """Unknown user 404; bad erase 400; remote 400."""
        base = f"{ADMIN}/v1/deactivate/"
        self.assertEqual(self.admin_request("POST", base + quote("@ghost:test:8448"), {}).code, 404)
        self.assertEqual(self.admin_request("POST", base + quote(self.alice_id), {"erase": "x"}).code, 400)
        self.assertEqual(self.admin_request("POST", base + quote("@a:remote"), {}).code, 400)
        self.assertEqual(self.whoami(self.alice_token).code, 200)


class ResetPasswordTests(AdminTestCase):
    def path(self, user_id: str) -> str:
        return f"{ADMIN}/v1/reset_password/{quote(user_id)}"

    def test_reset_changes_password_and_logs_out(self) -> None:
        """The old password stops working, the new one works, existing sessions end."""
        channel = self.admin_request("POST", self.path(self.alice_id), {"new_password": "reset-pass-1"})
        self.assertEqual((channel.code, channel.json_body), (200, {}))
        self.assertEqual(self.whoami(self.alice_token).code, 401)
        self.assertEqual(self.login_code("alice", PASSWORD), 403)
        self.assertEqual(self.login_code("alice", "reset-pass-1"), 200)

    def test_reset_without_logout(self) -> None:
        """logout_devices: false keeps sessions."""
        channel = self.admin_request(
            "POST", self.path(self.alice_id), {"new_password": "reset-pass-2", "logout_devices": False}
        )
        self.assertEqual(channel.code, 200)
        self.assertEqual(self.whoami(self.alice_token).code, 200)

    def test_own_reset_keeps_current_session(self) -> None:
        """An admin resetting their own password keeps the session making the request."""
        other = self.login("root")["access_token"]
        self.assertEqual(self.admin_request("POST", self.path(self.admin_id), {"new_password": "root-new-1"}).code, 200)
        self.assertEqual(self.whoami(self.admin_token).code, 200)
        self.assertEqual(self.whoami(other).code, 401)

    def test_bad_requests(self) -> None:
        """Missing/mistyped/oversized password 400, unknown user 404, deactivated 400."""
        for body in ({}, {"new_password": 1}, {"new_password": "x" * 513},
                     {"new_password": "ok-ok-ok", "logout_devices": "yes"}):
            self.assertEqual(self.admin_request("POST", self.path(self.alice_id), body).code, 400, body)
        self.assertEqual(self.admin_request("POST", self.path("@ghost:test:8448"), {"new_password": "x"}).code, 404)
        self.get_success(self.hs.stores.users.set_deactivated(self.alice_id, True))
        self.assertEqual(self.admin_request("POST", self.path(self.alice_id), {"new_password": "x"}).code, 400)


class DeviceTests(AdminTestCase):
    def test_list_devices_with_last_seen(self) -> None:
        """Devices carry last_seen_ip/ts/user_agent (audit AUTH-6) and a total."""
        channel = self.admin_request("GET", user_path(self.alice_id, "/devices"))
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.json_body["total"], 1)
        device = channel.json_body["devices"][0]
        self.assertEqual(device["device_id"], self.alice["device_id"])
        self.assertEqual(device["display_name"], "Alice phone")
        self.assertEqual(device["last_seen_ip"], "127.0.0.1")
        self.assertIsInstance(device["last_seen_ts"], int)
        self.assertIn("last_seen_user_agent", device)
        self.assertEqual(device["user_id"], self.alice_id)

    def test_get_one_device(self) -> None:
        """A single device by ID; unknown device 404."""
        channel = self.admin_request("GET", user_path(self.alice_id, f"/devices/{self.alice['device_id']}"))
        self.assertEqual((channel.code, channel.json_body["device_id"]), (200, self.alice["device_id"]))
        channel = self.admin_request("GET", user_path(self.alice_id, "/devices/NOPE"))
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))

    def test_delete_device_ends_its_session_only(self) -> None:
        """DELETE ends that device's session; the user's others keep working."""
        second = self.login("alice")
        channel = self.admin_request("DELETE", user_path(self.alice_id, f"/devices/{self.alice['device_id']}"))
        self.assertEqual((channel.code, channel.json_body), (200, {}))
        self.assertEqual(self.whoami(self.alice_token).code, 401)
        self.assertEqual(self.whoami(second["access_token"]).code, 200)
        # Deleting an unknown device is not an error (Synapse does the same).
        self.assertEqual(self.admin_request("DELETE", user_path(self.alice_id, "/devices/NOPE")).code, 200)

    def test_delete_devices(self) -> None:
        """POST delete_devices ends the listed sessions; a bad body is 400."""
        second = self.login("alice")
        body = {"devices": [self.alice["device_id"], second["device_id"]]}
        self.assertEqual(self.admin_request("POST", user_path(self.alice_id, "/delete_devices"), body).code, 200)
        self.assertEqual(self.whoami(second["access_token"]).code, 401)
        for bad in ({}, {"devices": "x"}, {"devices": [1]}, {"devices": ["d"] * 1001}):
            self.assertEqual(self.admin_request("POST", user_path(self.alice_id, "/delete_devices"), bad).code, 400)

    def test_unknown_user(self) -> None:
        """Device endpoints answer 404 for an unknown user."""
        for method, suffix in (("GET", "/devices"), ("GET", "/devices/D"), ("DELETE", "/devices/D")):
            channel = self.admin_request(method, user_path("@ghost:test:8448", suffix))
            self.assertEqual(channel.code, 404, suffix)


class WhoisTests(AdminTestCase):
    def test_whois_shape(self) -> None:
        """Sessions per device, with the last connection's ip, time and user agent."""
        self.make_request("GET", "/_matrix/client/v3/account/whoami", access_token=self.alice_token,
                          headers=[("User-Agent", "TestClient/1.0")])
        channel = self.admin_request("GET", f"{ADMIN}/v1/whois/{quote(self.alice_id)}")
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["user_id"], self.alice_id)
        devices = channel.json_body["devices"]
        self.assertEqual(list(devices), [self.alice["device_id"]])
        connection = devices[self.alice["device_id"]]["sessions"][0]["connections"][0]
        self.assertEqual(connection["ip"], "127.0.0.1")
        self.assertIsInstance(connection["last_seen"], int)

    def test_user_may_look_up_self_on_spec_path(self) -> None:
        """The spec path works, and a non-admin may look only themselves up."""
        own = self.make_request("GET", f"/_matrix/client/v3/admin/whois/{quote(self.alice_id)}",
                                access_token=self.alice_token)
        self.assertEqual(own.code, 200)
        other = self.make_request("GET", f"/_matrix/client/v3/admin/whois/{quote(self.admin_id)}",
                                  access_token=self.alice_token)
        self.assertEqual((other.code, other.json_body["errcode"]), (403, "M_FORBIDDEN"))

    def test_unknown_user(self) -> None:
        """Whois of an unknown user is 404."""
        self.assertEqual(self.admin_request("GET", f"{ADMIN}/v1/whois/{quote('@ghost:test:8448')}").code, 404)


class SpecLockTests(AdminTestCase):
    def path(self, user_id: str) -> str:
        return f"/_matrix/client/v1/admin/lock/{quote(user_id)}"

    def test_get_and_put_lock(self) -> None:
        """PUT locks/unlocks, GET reports it, tokens follow."""
        self.assertEqual(self.admin_request("GET", self.path(self.alice_id)).json_body, {"locked": False})
        channel = self.admin_request("PUT", self.path(self.alice_id), {"locked": True})
        self.assertEqual((channel.code, channel.json_body), (200, {"locked": True}))
        self.assertEqual(self.admin_request("GET", self.path(self.alice_id)).json_body, {"locked": True})
        self.assertEqual(self.whoami(self.alice_token).json_body["errcode"], "M_USER_LOCKED")
        self.admin_request("PUT", self.path(self.alice_id), {"locked": False})
        self.assertEqual(self.whoami(self.alice_token).code, 200)

    def test_refusals(self) -> None:
        """Self or another admin 403, unknown or deactivated 404, remote 400, bad body 400."""
        self.register_user("root2", admin=True)
        self.assertEqual(self.admin_request("PUT", self.path(self.admin_id), {"locked": True}).code, 403)
        self.assertEqual(self.admin_request("PUT", self.path("@root2:test:8448"), {"locked": True}).code, 403)
        self.assertEqual(self.admin_request("GET", self.path("@ghost:test:8448")).code, 404)
        self.get_success(self.hs.stores.users.set_deactivated(self.alice_id, True))
        self.assertEqual(self.admin_request("GET", self.path(self.alice_id)).code, 404)
        remote = self.admin_request("GET", self.path("@x:remote"))
        self.assertEqual((remote.code, remote.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        self.register_user("carol")
        for bad in ({}, {"locked": "yes"}, [True]):
            self.assertEqual(self.admin_request("PUT", self.path("@carol:test:8448"), bad).code, 400, bad)


class LockSeparationTests(AdminTestCase):
    def test_failed_logins_never_lock_existing_sessions(self) -> None:
        """The failed-login lockout refuses new logins only: existing sessions keep working.

        Otherwise an attacker could lock anyone out of their own sessions by failing logins for them.
        """
        for _ in range(6):
            self.login_code("alice", "wrong-password")
        self.assertEqual(self.login_code("alice", PASSWORD), 429)  # the lockout is active...
        self.assertEqual(self.whoami(self.alice_token).code, 200)  # ...but the session is not locked
        view = self.admin_request("GET", user_path(self.alice_id)).json_body
        self.assertIs(view["locked"], False)

    def test_admin_lock_leaves_failed_login_state_alone(self) -> None:
        """Locking and unlocking via the admin API touches users.locked only."""
        self.admin_request("PUT", user_path(self.alice_id), {"locked": True})
        user = self.get_success(self.hs.stores.users.get_user(self.alice_id))
        self.assertEqual((user.locked, user.locked_until_ts), (True, 0))


class AuditLogTests(AdminTestCase):
    def test_actions_logged_without_passwords(self) -> None:
        """Admin actions log admin and target IDs at INFO; the password never appears."""
        with self.assertLogs("homeserver.rest.admin.users", "INFO") as logs:
            self.admin_request("PUT", user_path(self.alice_id), {"password": "secret-pass-9", "locked": True})
            self.admin_request("POST", f"{ADMIN}/v1/reset_password/{quote(self.alice_id)}",
                               {"new_password": "secret-pass-10"})
        self.assertTrue(logs.records)
        for record in logs.records:
            self.assertEqual(record.admin_user_id, self.admin_id)  # type: ignore[attr-defined]
            self.assertEqual(record.target_user_id, self.alice_id)  # type: ignore[attr-defined]
            flat = repr(record.__dict__)
            self.assertNotIn("secret-pass", flat)
        self.assertIn("admin set password", [r.getMessage() for r in logs.records])


TOKENS = f"{ADMIN}/v1/registration_tokens"


class RegistrationTokenTests(AdminTestCase):
    def test_create_get_list_update_delete(self) -> None:
        """The whole life of a named token, in Synapse's shapes."""
        expiry = self.clock.time_msec() + 60_000
        channel = self.admin_request("POST", f"{TOKENS}/new", {"token": "abc.DEF_1~-", "uses_allowed": 2,
                                                               "expiry_time": expiry})
        self.assertEqual(channel.code, 200, channel.json_body)
        expected = {"token": "abc.DEF_1~-", "uses_allowed": 2, "pending": 0, "completed": 0, "expiry_time": expiry}
        self.assertEqual(channel.json_body, expected)
        self.assertEqual(self.admin_request("GET", f"{TOKENS}/abc.DEF_1~-").json_body, expected)
        self.assertEqual(self.admin_request("GET", TOKENS).json_body, {"registration_tokens": [expected]})
        channel = self.admin_request("PUT", f"{TOKENS}/abc.DEF_1~-", {"uses_allowed": None, "expiry_time": None})
        self.assertEqual(channel.code, 200)
        self.assertEqual((channel.json_body["uses_allowed"], channel.json_body["expiry_time"]), (None, None))
        channel = self.admin_request("PUT", f"{TOKENS}/abc.DEF_1~-", {})
        self.assertEqual((channel.code, channel.json_body["token"]), (200, "abc.DEF_1~-"))
        self.assertEqual(self.admin_request("DELETE", f"{TOKENS}/abc.DEF_1~-").json_body, {})
        self.assertEqual(self.admin_request("GET", f"{TOKENS}/abc.DEF_1~-").code, 404)
        self.assertEqual(self.admin_request("DELETE", f"{TOKENS}/abc.DEF_1~-").code, 404)

    def test_generated_token(self) -> None:
        """Without a name a random token of 'length' (default 16) characters is generated."""
        first = self.admin_request("POST", f"{TOKENS}/new", {}).json_body["token"]
        second = self.admin_request("POST", f"{TOKENS}/new").json_body["token"]
        self.assertEqual(len(first), 16)
        self.assertNotEqual(first, second)
        self.assertEqual(len(self.admin_request("POST", f"{TOKENS}/new", {"length": 40}).json_body["token"]), 40)

    def test_valid_filter(self) -> None:
        """valid=true lists usable tokens; valid=false lists used-up and expired ones."""
        now = self.clock.time_msec()
        self.admin_request("POST", f"{TOKENS}/new", {"token": "good"})
        self.admin_request("POST", f"{TOKENS}/new", {"token": "none", "uses_allowed": 0})
        self.admin_request("POST", f"{TOKENS}/new", {"token": "soon", "expiry_time": now + 1000})
        self.reactor.advance(2)

        def names(query: str) -> list[str]:
            return [t["token"] for t in self.admin_request("GET", f"{TOKENS}{query}").json_body["registration_tokens"]]

        self.assertEqual(names("?valid=true"), ["good"])
        self.assertEqual(names("?valid=false"), ["none", "soon"])
        self.assertEqual(names(""), ["good", "none", "soon"])
        self.assertEqual(self.admin_request("GET", f"{TOKENS}?valid=maybe").code, 400)

    @override_config({"registration": {"mode": "token"}})
    def test_created_token_works_for_registration(self) -> None:
        """A token made here is one registration accepts; deleting it withdraws it."""
        path = "/_matrix/client/v1/register/m.login.registration_token/validity?token=letmein"
        self.assertEqual(self.make_request("GET", path).json_body, {"valid": False})
        self.admin_request("POST", f"{TOKENS}/new", {"token": "letmein"})
        self.assertEqual(self.make_request("GET", path).json_body, {"valid": True})
        self.admin_request("DELETE", f"{TOKENS}/letmein")
        self.assertEqual(self.make_request("GET", path).json_body, {"valid": False})

    def test_bad_requests(self) -> None:
        """Malformed names, lengths, counts and expiries are 400; duplicates are 400."""
        self.admin_request("POST", f"{TOKENS}/new", {"token": "taken"})
        past = self.clock.time_msec() - 1
        for body in ({"token": "has space"}, {"token": "x" * 65}, {"token": ""}, {"token": 5},
                     {"length": 0}, {"length": 65}, {"length": "8"}, {"token": "a", "length": 3},
                     {"uses_allowed": -1}, {"uses_allowed": "1"}, {"expiry_time": past},
                     {"expiry_time": True}, {"token": "taken"}, [1]):
            channel = self.admin_request("POST", f"{TOKENS}/new", body)
            self.assertEqual(channel.code, 400, body)
        for body in ({"uses_allowed": -2}, {"expiry_time": past}, {"uses_allowed": 1.5}):
            self.assertEqual(self.admin_request("PUT", f"{TOKENS}/taken", body).code, 400, body)
        self.assertEqual(self.admin_request("PUT", f"{TOKENS}/missing", {"uses_allowed": 1}).code, 404)
        self.assertEqual(self.admin_request("GET", f"{TOKENS}/{'x' * 100}").code, 404)

    def test_non_admin_forbidden(self) -> None:
        """Every token endpoint is 403 for non-admins and 401 without a token."""
        for method, path, body in (("GET", TOKENS, None), ("POST", f"{TOKENS}/new", {}), ("GET", f"{TOKENS}/t", None),
                                   ("PUT", f"{TOKENS}/t", {}), ("DELETE", f"{TOKENS}/t", None)):
            self.assertEqual(self.make_request(method, path, body, access_token=self.alice_token).code, 403, path)
            self.assertEqual(self.make_request(method, path, body).code, 401, path)
        self.assertEqual(self.get_success(self.hs.stores.ui_auth.list_registration_tokens(None, 0)), [])
