"""feature_federation: the adapter is built around the core and served on the homeserver's resource."""

from __future__ import annotations

from typing import Any

from federation.transport.client import FederationClient
from federation.transport.server import FederationTransport
from homeserver.app.federation_wiring import FederationServices
from sc_proto.crypto.keys import generate_signing_key
from sc_proto.crypto.signing import sign_request
from sc_proto.federation.keys import parse_server_keys
from tests.homeserver.server_case import TEST_SERVER_NAME, TEST_SIGNING_KEY, FullHomeserverTestCase
from tests.unittest import override_config


class FederationFeatureTests(FullHomeserverTestCase):
    """With ``federation.enabled`` the wired homeserver serves the federation API next to the client API."""

    def default_config(self) -> dict[str, Any]:
        config = super().default_config()
        config["federation"] = {"enabled": True}
        return config

    def _services(self) -> FederationServices:
        return self.hs.features.get(FederationServices)

    def test_version_served(self) -> None:
        """GET /_matrix/federation/v1/version answers on the homeserver's site."""
        channel = self.make_request("GET", "/_matrix/federation/v1/version")
        assert channel.code == 200
        assert channel.json_body["server"]["name"] == "SecureConnect"

    def test_services_provided(self) -> None:
        """The network client, the transport on hs.resource and the keyring as its key lookup."""
        services = self._services()
        assert isinstance(services.http, FederationClient)
        assert services.http.server_name == TEST_SERVER_NAME
        assert isinstance(services.router, FederationTransport)
        assert services.router._keys is services.keys.keyring
        assert services.key_lookup is services.keys.keyring

    def test_core_connected(self) -> None:
        """The core's ports are the adapter's: membership bound, sender and queriers in place, fetcher set."""
        services = self._services()
        assert self.hs.ports.sender is services.outbound.sender
        assert self.hs.ports.directory is services.outbound.directory
        assert self.hs.ports.profiles is services.outbound.profiles
        assert self.hs.ports.membership._target is services.membership  # type: ignore[attr-defined]  # LateBoundMembership
        assert self.hs.rooms.room_input._fetcher is services.inbound.fetcher

    def test_server_keys_served(self) -> None:
        """GET /_matrix/key/v2/server returns our key, self-signed and verifiable."""
        channel = self.make_request("GET", "/_matrix/key/v2/server")
        assert channel.code == 200, channel.json_body
        parsed = parse_server_keys(channel.json_body, expected_server_name=TEST_SERVER_NAME, received_ts=self.clock.time_msec())
        assert set(parsed.keys) == {f"ed25519:{TEST_SIGNING_KEY.version}"}

    def _signed_get(self, path: str, key: Any) -> Any:
        header = sign_request(method="GET", uri=path, origin=TEST_SERVER_NAME, destination=TEST_SERVER_NAME,
                              content=None, signing_key=key)
        return self.make_request("GET", path, headers=[("Authorization", header)])

    def test_requests_checked_by_the_keyring(self) -> None:
        """X-Matrix is verified with the keyring: our own key passes, another key under our name is 401."""
        async def echo(_request: object) -> tuple[int, dict[str, object]]:
            return 200, {"ok": True}

        self._services().router.register("GET", "/_matrix/federation/v1/test_echo", echo)
        assert self._signed_get("/_matrix/federation/v1/test_echo", TEST_SIGNING_KEY).code == 200
        forged = self._signed_get("/_matrix/federation/v1/test_echo", generate_signing_key(TEST_SIGNING_KEY.version))
        assert (forged.code, forged.json_body["errcode"]) == (401, "M_UNAUTHORIZED")
        unsigned = self.make_request("GET", "/_matrix/federation/v1/test_echo")
        assert (unsigned.code, unsigned.json_body["errcode"]) == (401, "M_UNAUTHORIZED")

    @override_config({"federation": {"enabled": False}})
    def test_disabled(self) -> None:
        """With federation disabled nothing is provided and /_matrix/federation is 404 M_UNRECOGNIZED."""
        assert self.hs.features.find(FederationServices) is None
        assert self.hs.federation is None
        for path in ("/_matrix/federation/v1/version", "/_matrix/key/v2/server"):
            channel = self.make_request("GET", path)
            assert (channel.code, channel.json_body["errcode"]) == (404, "M_UNRECOGNIZED")
