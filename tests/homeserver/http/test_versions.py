"""Tests for homeserver.rest.client.versions: /versions, client well-known, /capabilities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from homeserver.http.auth import Authenticator, Requester, TokenInfo
from homeserver.http.server import JsonResource
from homeserver.rest.client.versions import (
    SUPPORTED_SPEC_VERSIONS,
    default_capabilities,
    register_versions_servlets,
)
from tests.unittest import HomeserverTestCase


class Tokens:
    async def lookup(self, token: str) -> TokenInfo | None:
        if token == "user":
            return TokenInfo("@u:test:8448", "D", 1)
        if token == "guest":
            return TokenInfo("@g:test:8448", "G", 2, is_guest=True)
        return None


class VersionsTests(HomeserverTestCase):
    """The discovery endpoints with the default settings."""

    public_baseurl: str | None = "https://matrix.test/"

    def register_servlets(self, resource: JsonResource) -> None:
        self.seen: list[str] = []

        async def provider(requester: Requester) -> Mapping[str, Any]:
            self.seen.append(requester.user_id)
            return {"m.change_password": {"enabled": False}, "com.example.custom": {"x": 1}}

        register_versions_servlets(
            resource,
            server_name="test:8448",
            public_baseurl=self.public_baseurl,
            unstable_features={"org.example.feature": True},
            capabilities_provider=provider,
            authenticator=Authenticator(Tokens(), self.clock.time_msec),
        )

    def test_versions(self) -> None:
        """/versions lists v1.1..v1.16 and the configured unstable features, without auth."""
        channel = self.make_request("GET", "/_matrix/client/versions")
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.json_body["versions"], [f"v1.{i}" for i in range(1, 17)])
        self.assertEqual(channel.json_body["unstable_features"], {"org.example.feature": True})
        self.assertEqual(channel.header("Access-Control-Allow-Origin"), "*")
        self.assertEqual(list(SUPPORTED_SPEC_VERSIONS), channel.json_body["versions"])

    def test_well_known(self) -> None:
        """/.well-known/matrix/client gives the base URL, with CORS headers."""
        channel = self.make_request("GET", "/.well-known/matrix/client")
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.json_body, {"m.homeserver": {"base_url": "https://matrix.test/"}})
        self.assertEqual(channel.header("Access-Control-Allow-Origin"), "*")

    def test_capabilities_requires_auth(self) -> None:
        """/capabilities without a token is 401 M_MISSING_TOKEN."""
        channel = self.make_request("GET", "/_matrix/client/v3/capabilities")
        self.assertEqual(channel.code, 401)
        self.assertEqual(channel.json_body["errcode"], "M_MISSING_TOKEN")
        self.assertEqual(self.seen, [])

    def test_capabilities(self) -> None:
        """Defaults merged with the provider's per-user entries, on both r0 and v3."""
        for version in ("r0", "v3"):
            channel = self.make_request("GET", f"/_matrix/client/{version}/capabilities", access_token="user")
            self.assertEqual(channel.code, 200)
            caps = channel.json_body["capabilities"]
            self.assertEqual(caps["m.change_password"], {"enabled": False})
            self.assertEqual(caps["com.example.custom"], {"x": 1})
            self.assertEqual(caps["m.room_versions"]["default"], "12")
            self.assertEqual(
                caps["m.room_versions"]["available"], {str(i): "stable" for i in range(1, 13)}
            )
            self.assertEqual(caps["m.set_displayname"], {"enabled": True})
            self.assertEqual(caps["m.set_avatar_url"], {"enabled": True})
            self.assertEqual(caps["m.3pid_changes"], {"enabled": False})
            self.assertEqual(caps["m.get_login_token"], {"enabled": True})
        self.assertEqual(self.seen, ["@u:test:8448", "@u:test:8448"])

    def test_capabilities_for_guests(self) -> None:
        """Guests may read capabilities (read-only and harmless)."""
        channel = self.make_request("GET", "/_matrix/client/v3/capabilities", access_token="guest")
        self.assertEqual(channel.code, 200)

    def test_default_capabilities(self) -> None:
        """The default set is built without a provider."""
        caps = default_capabilities("11")
        self.assertEqual(caps["m.room_versions"]["default"], "11")
        self.assertEqual(caps["m.change_password"], {"enabled": True})


class NoBaseUrlTests(VersionsTests):
    """Without a public base URL there is no client well-known."""

    public_baseurl = None

    def test_well_known(self) -> None:
        """/.well-known/matrix/client answers 404 M_NOT_FOUND (clients then IGNORE it)."""
        channel = self.make_request("GET", "/.well-known/matrix/client")
        self.assertEqual(channel.code, 404)
        self.assertEqual(channel.json_body["errcode"], "M_NOT_FOUND")


def test_unknown_default_room_version_rejected() -> None:
    """A default room version we do not know is a configuration error."""
    with pytest.raises(ValueError):
        register_versions_servlets(
            JsonResource(),
            server_name="test:8448",
            public_baseurl=None,
            authenticator=Authenticator(Tokens(), lambda: 0),
            default_room_version="99",
        )
