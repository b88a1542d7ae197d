"""Profiles through the real composition root (both databases)."""

from __future__ import annotations

from typing import Any

from tests.homeserver.server_case import FullHomeserverTestCase

ALICE = "/_matrix/client/v3/profile/@alice:test:8448"
BOB = "/_matrix/client/v3/profile/@bob:test:8448"


class ProfileTests(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")
        self.register_user("bob")
        self.token = self.login("alice")["access_token"]
        self.bob_token = self.login("bob")["access_token"]

    def _put(self, path: str, body: Any, token: str | None = None) -> Any:
        return self.make_request("PUT", path, body, access_token=token or self.token)

    def test_new_profile_is_empty(self) -> None:
        """A new account has an empty profile; unset fields are 404 M_NOT_FOUND."""
        channel = self.make_request("GET", ALICE)
        self.assertEqual((channel.code, channel.json_body), (200, {}))
        for field in ("displayname", "avatar_url"):
            got = self.make_request("GET", f"{ALICE}/{field}")
            self.assertEqual((got.code, got.json_body["errcode"]), (404, "M_NOT_FOUND"))

    def test_set_and_get(self) -> None:
        """PUT sets each field; GETs (no token needed) show them."""
        self.assertEqual(self._put(f"{ALICE}/displayname", {"displayname": "Alice W"}).code, 200)
        self.assertEqual(self._put(f"{ALICE}/avatar_url", {"avatar_url": "mxc://test:8448/abc_123"}).code, 200)
        self.assertEqual(self.make_request("GET", f"{ALICE}/displayname").json_body, {"displayname": "Alice W"})
        self.assertEqual(self.make_request("GET", f"{ALICE}/avatar_url").json_body, {"avatar_url": "mxc://test:8448/abc_123"})
        self.assertEqual(
            self.make_request("GET", ALICE).json_body, {"displayname": "Alice W", "avatar_url": "mxc://test:8448/abc_123"}
        )
        self.assertEqual(self.make_request("GET", "/_matrix/client/r0/profile/@alice:test:8448").code, 200)

    def test_empty_values_clear(self) -> None:
        """An empty display name or avatar URL clears the field."""
        self._put(f"{ALICE}/displayname", {"displayname": "Alice"})
        self._put(f"{ALICE}/avatar_url", {"avatar_url": "mxc://test:8448/x"})
        self.assertEqual(self._put(f"{ALICE}/displayname", {"displayname": ""}).code, 200)
        self.assertEqual(self._put(f"{ALICE}/avatar_url", {"avatar_url": ""}).code, 200)
        self.assertEqual(self.make_request("GET", ALICE).json_body, {})

    def test_delete_field(self) -> None:
        """DELETE removes a field (spec v1.16)."""
        self._put(f"{ALICE}/displayname", {"displayname": "Alice"})
        channel = self.make_request("DELETE", f"{ALICE}/displayname", access_token=self.token)
        self.assertEqual(channel.code, 200)
        self.assertEqual(self.make_request("GET", f"{ALICE}/displayname").code, 404)

    def test_cannot_change_another_users_profile(self) -> None:
        """PUT/DELETE on someone else's profile: 403 M_FORBIDDEN, no change."""
        self._put(f"{BOB}/displayname", {"displayname": "Bob"}, self.bob_token)
        put = self._put(f"{BOB}/displayname", {"displayname": "Mallory"})
        self.assertEqual((put.code, put.json_body["errcode"]), (403, "M_FORBIDDEN"))
        delete = self.make_request("DELETE", f"{BOB}/displayname", access_token=self.token)
        self.assertEqual((delete.code, delete.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(self.make_request("GET", f"{BOB}/displayname").json_body, {"displayname": "Bob"})

    def test_changes_need_a_token(self) -> None:
        """PUT without a token is 401."""
        channel = self.make_request("PUT", f"{ALICE}/displayname", {"displayname": "x"})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (401, "M_MISSING_TOKEN"))

    def test_unknown_remote_and_invalid_users(self) -> None:
        """Unknown and remote users are 404 M_NOT_FOUND; a malformed user ID is 400."""
        for user in ("@nobody:test:8448", "@alice:elsewhere"):
            for suffix in ("", "/displayname", "/avatar_url"):
                channel = self.make_request("GET", f"/_matrix/client/v3/profile/{user}{suffix}")
                self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"), user + suffix)
        bad = self.make_request("GET", "/_matrix/client/v3/profile/alice")
        self.assertEqual((bad.code, bad.json_body["errcode"]), (400, "M_INVALID_PARAM"))

    def test_bad_values(self) -> None:
        """Wrong types, non-mxc or malformed avatar URLs, oversized names and bad bodies are 400."""
        cases = [
            ("displayname", {"displayname": 5}, "M_INVALID_PARAM"),
            ("displayname", {"displayname": None}, "M_INVALID_PARAM"),
            ("displayname", {"displayname": "x" * 257}, "M_INVALID_PARAM"),
            ("displayname", {"name": "x"}, "M_MISSING_PARAM"),
            ("displayname", b"{bad", "M_NOT_JSON"),
            ("displayname", ["x"], "M_NOT_JSON"),
            ("avatar_url", {"avatar_url": "https://example.org/a.png"}, "M_INVALID_PARAM"),
            ("avatar_url", {"avatar_url": "mxc://test:8448/../etc"}, "M_INVALID_PARAM"),
            ("avatar_url", {"avatar_url": "mxc://"}, "M_INVALID_PARAM"),
            ("avatar_url", {"avatar_url": ["mxc://test:8448/a"]}, "M_INVALID_PARAM"),
            ("avatar_url", {"avatar_url": "mxc://test:8448/" + "a" * 2000}, "M_INVALID_PARAM"),
        ]
        for field, body, errcode in cases:
            channel = self._put(f"{ALICE}/{field}", body)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, errcode), (field, body))
        self.assertEqual(self.make_request("GET", ALICE).json_body, {})

    def test_max_length_displayname_accepted(self) -> None:
        """256 characters is fine."""
        self.assertEqual(self._put(f"{ALICE}/displayname", {"displayname": "é" * 256}).code, 200)

    def test_deactivated_user_has_no_profile(self) -> None:
        """After deactivation the profile is 404."""
        self._put(f"{ALICE}/displayname", {"displayname": "Alice"})
        self.get_success(self.hs.stores.users.set_deactivated("@alice:test:8448", True))
        self.assertEqual(self.make_request("GET", ALICE).code, 404)
