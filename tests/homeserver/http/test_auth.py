"""Tests for homeserver.http.auth: access-token extraction and the error for each failure."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from twisted.web.server import Request

from homeserver.http.auth import Authenticator, Requester, TokenInfo
from homeserver.http.server import JsonResource
from tests.unittest import HomeserverTestCase

ALICE = TokenInfo(user_id="@alice:test:8448", device_id="DEV", token_id=7, is_admin=True)


class FakeTokenLookup:
    """In-memory TokenLookup."""

    def __init__(self) -> None:
        self.tokens: dict[str, TokenInfo] = {}
        self.looked_up: list[str] = []

    async def lookup(self, token: str) -> TokenInfo | None:
        self.looked_up.append(token)
        return self.tokens.get(token)


class AuthenticatorTests(HomeserverTestCase):
    """Authentication through real requests."""

    allow_query_token = False

    def register_servlets(self, resource: JsonResource) -> None:
        self.lookup = FakeTokenLookup()
        self.lookup.tokens = {
            "alice_token": ALICE,
            "guest_token": TokenInfo("@guest:test:8448", "G", 8, is_guest=True),
            "expiring": TokenInfo("@bob:test:8448", "B", 9, expires_at_ms=int(self.clock.time_msec()) + 1000),
            "deactivated": TokenInfo("@gone:test:8448", "X", 10, deactivated=True),
            "locked": TokenInfo("@locked:test:8448", "L", 11, locked=True),
            "suspended": TokenInfo("@sus:test:8448", "S", 12, suspended=True),
        }
        self.auth = Authenticator(self.lookup, self.clock.time_msec, allow_query_token=self.allow_query_token)

        def as_json(requester: Requester | None) -> dict[str, Any]:
            return {"requester": dataclasses.asdict(requester) if requester else None}

        async def protected(request: Request) -> tuple[int, dict[str, Any]]:
            return 200, as_json(await self.auth.get_requester(request))

        async def guest_ok(request: Request) -> tuple[int, dict[str, Any]]:
            return 200, as_json(await self.auth.get_requester(request, allow_guest=True))

        async def logout(request: Request) -> tuple[int, dict[str, Any]]:
            return 200, as_json(await self.auth.get_requester(request, allow_locked=True))

        async def optional(request: Request) -> tuple[int, dict[str, Any]]:
            return 200, as_json(await self.auth.get_optional_requester(request))

        resource.register("GET", "/protected", protected)
        resource.register("GET", "/guest_ok", guest_ok)
        resource.register("POST", "/logout", logout)
        resource.register("GET", "/optional", optional)

    def assert_error(self, channel: Any, status: int, errcode: str, **extra: Any) -> None:
        self.assertEqual(channel.code, status, channel.json_body)
        self.assertEqual(channel.json_body["errcode"], errcode)
        for key, value in extra.items():
            self.assertEqual(channel.json_body[key], value)

    def test_bearer_header(self) -> None:
        """A valid Bearer token yields the requester, with IP and user agent."""
        channel = self.make_request(
            "GET", "/protected", access_token="alice_token", headers=[("User-Agent", "Test/1.0")]
        )
        self.assertEqual(channel.code, 200)
        self.assertEqual(
            channel.json_body["requester"],
            {
                "user_id": "@alice:test:8448",
                "device_id": "DEV",
                "access_token_id": 7,
                "is_guest": False,
                "is_admin": True,
                "ip": "127.0.0.1",
                "user_agent": "Test/1.0",
                "is_suspended": False,
            },
        )

    def test_scheme_is_case_insensitive(self) -> None:
        """``bearer`` works as well as ``Bearer``."""
        channel = self.make_request("GET", "/protected", headers=[("Authorization", "bearer alice_token")])
        self.assertEqual(channel.code, 200)

    def test_missing_token(self) -> None:
        """No token: 401 M_MISSING_TOKEN."""
        self.assert_error(self.make_request("GET", "/protected"), 401, "M_MISSING_TOKEN")

    def test_malformed_authorization_header(self) -> None:
        """A non-Bearer or empty Authorization header counts as no usable token."""
        for value in ("Basic abc", "Bearer", "Bearer ", "alice_token"):
            with self.subTest(value=value):
                channel = self.make_request("GET", "/protected", headers=[("Authorization", value)])
                self.assert_error(channel, 401, "M_MISSING_TOKEN")

    def test_repeated_authorization_header(self) -> None:
        """Two Authorization headers are refused rather than guessed between."""
        channel = self.make_request(
            "GET",
            "/protected",
            headers=[("Authorization", "Bearer alice_token"), ("Authorization", "Bearer other")],
        )
        self.assert_error(channel, 401, "M_MISSING_TOKEN")

    def test_non_ascii_token(self) -> None:
        """A token that is not ASCII cannot be valid."""
        channel = self.make_request("GET", "/protected", headers=[("Authorization", "Bearer é".encode())])
        self.assert_error(channel, 401, "M_UNKNOWN_TOKEN", soft_logout=False)

    def test_unknown_token(self) -> None:
        """An unknown token: 401 M_UNKNOWN_TOKEN with soft_logout false."""
        channel = self.make_request("GET", "/protected", access_token="nope")
        self.assert_error(channel, 401, "M_UNKNOWN_TOKEN", soft_logout=False)

    def test_expired_token_is_soft_logout(self) -> None:
        """Once expired (by the fake clock), a token gets M_UNKNOWN_TOKEN with soft_logout true."""
        self.assertEqual(self.make_request("GET", "/protected", access_token="expiring").code, 200)
        self.reactor.advance(1.0)
        channel = self.make_request("GET", "/protected", access_token="expiring")
        self.assert_error(channel, 401, "M_UNKNOWN_TOKEN", soft_logout=True)

    def test_deactivated_user(self) -> None:
        """A deactivated user's token is treated as unknown (hard logout)."""
        channel = self.make_request("GET", "/protected", access_token="deactivated")
        self.assert_error(channel, 401, "M_UNKNOWN_TOKEN", soft_logout=False)

    def test_locked_account(self) -> None:
        """A locked account gets 401 M_USER_LOCKED with soft_logout, except on logout."""
        channel = self.make_request("GET", "/protected", access_token="locked")
        self.assert_error(channel, 401, "M_USER_LOCKED", soft_logout=True)
        self.assertEqual(self.make_request("POST", "/logout", {}, access_token="locked").code, 200)

    def test_suspended_account_is_flagged(self) -> None:
        """Suspension does not block authentication; the requester carries the flag."""
        channel = self.make_request("GET", "/protected", access_token="suspended")
        self.assertTrue(channel.json_body["requester"]["is_suspended"])

    def test_guest_rules(self) -> None:
        """Guests get 403 M_GUEST_ACCESS_FORBIDDEN unless the endpoint allows guests."""
        channel = self.make_request("GET", "/protected", access_token="guest_token")
        self.assert_error(channel, 403, "M_GUEST_ACCESS_FORBIDDEN")
        channel = self.make_request("GET", "/guest_ok", access_token="guest_token")
        self.assertTrue(channel.json_body["requester"]["is_guest"])

    def test_query_token_refused_by_default(self) -> None:
        """The access_token query parameter is not read unless enabled (removed in spec v1.20)."""
        channel = self.make_request("GET", "/protected?access_token=alice_token")
        self.assert_error(channel, 401, "M_MISSING_TOKEN")
        self.assertIn("Authorization header", channel.json_body["error"])
        self.assertEqual(self.lookup.looked_up, [])

    def test_optional_requester(self) -> None:
        """get_optional_requester: None without a token, still an error for a bad one."""
        self.assertIsNone(self.make_request("GET", "/optional").json_body["requester"])
        channel = self.make_request("GET", "/optional", access_token="alice_token")
        self.assertEqual(channel.json_body["requester"]["user_id"], "@alice:test:8448")
        self.assert_error(self.make_request("GET", "/optional", access_token="bad"), 401, "M_UNKNOWN_TOKEN")

    def test_has_access_token(self) -> None:
        """has_access_token reports presence without validating."""
        request = self.make_request("GET", "/protected", access_token="whatever").request
        self.assertTrue(self.auth.has_access_token(request))
        request = self.make_request("GET", "/protected").request
        self.assertFalse(self.auth.has_access_token(request))

    def test_token_never_logged(self) -> None:
        """Neither the access log nor error logs contain the token."""
        with self.assertLogs(level=logging.DEBUG) as logs:
            self.make_request("GET", "/protected", access_token="alice_token")
            self.make_request("GET", "/protected", access_token="nope_secret")
        self.assertNotIn("alice_token", "\n".join(logs.output))
        self.assertNotIn("nope_secret", "\n".join(logs.output))

    def test_access_log_names_the_user(self) -> None:
        """Authenticated requests are attributed to their user in the access log."""
        with self.assertLogs("homeserver.http.access", logging.INFO) as logs:
            self.make_request("GET", "/protected", access_token="alice_token")
        self.assertIn("@alice:test:8448", "\n".join(logs.output))


class QueryTokenTests(AuthenticatorTests):
    """The same rules with the legacy query parameter enabled."""

    allow_query_token = True

    def test_query_token_refused_by_default(self) -> None:
        """Overridden: with the option on, the query parameter authenticates."""
        channel = self.make_request("GET", "/protected?access_token=alice_token")
        self.assertEqual(channel.json_body["requester"]["user_id"], "@alice:test:8448")

    def test_header_and_query_must_agree(self) -> None:
        """The same token in both places is fine; different tokens are a 400."""
        channel = self.make_request("GET", "/protected?access_token=alice_token", access_token="alice_token")
        self.assertEqual(channel.code, 200)
        channel = self.make_request("GET", "/protected?access_token=guest_token", access_token="alice_token")
        self.assert_error(channel, 400, "M_INVALID_PARAM")

    def test_non_ascii_query_token(self) -> None:
        """A non-ASCII query token is unknown."""
        channel = self.make_request("GET", "/protected?access_token=%C3%A9")
        self.assert_error(channel, 401, "M_UNKNOWN_TOKEN")

    def test_has_access_token_from_query(self) -> None:
        """has_access_token sees the query parameter when it is enabled."""
        request = self.make_request("GET", "/protected?access_token=x").request
        self.assertTrue(self.auth.has_access_token(request))
