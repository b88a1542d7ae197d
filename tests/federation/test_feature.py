"""feature_federation: the transport is served on the homeserver's listener resource when enabled."""

from __future__ import annotations

from federation.transport.client import FederationClient
from federation.transport.server import FederationTransport, NoKeysLookup
from sc_proto.crypto.keys import generate_signing_key
from sc_proto.crypto.signing import sign_request
from tests.homeserver.server_case import TEST_SERVER_NAME, FullHomeserverTestCase
from tests.unittest import override_config


class FederationFeatureTests(FullHomeserverTestCase):
    """The wired homeserver serves the federation API next to the client API."""

    def test_version_served(self) -> None:
        """GET /_matrix/federation/v1/version answers on the homeserver's site."""
        channel = self.make_request("GET", "/_matrix/federation/v1/version")
        assert channel.code == 200
        assert channel.json_body["server"]["name"] == "SecureConnect"

    def test_services_provided(self) -> None:
        """The client and the router are provided by type for the other federation features."""
        client = self.hs.features.get(FederationClient)
        assert client.server_name == TEST_SERVER_NAME
        assert isinstance(self.hs.features.get(FederationTransport), FederationTransport)

    def test_placeholder_key_lookup_refuses(self) -> None:
        """Until the keyring is wired, a correctly signed request is refused with 401."""
        transport = self.hs.features.get(FederationTransport)
        assert isinstance(transport._keys, NoKeysLookup)

        async def echo(_request: object) -> tuple[int, dict[str, object]]:
            return 200, {}

        transport.register("GET", "/_matrix/federation/v1/test", echo)
        header = sign_request(method="GET", uri="/_matrix/federation/v1/test", origin="remote.example",
                              destination=TEST_SERVER_NAME, content=None, signing_key=generate_signing_key("x"))
        channel = self.make_request("GET", "/_matrix/federation/v1/test", headers=[("Authorization", header)])
        assert (channel.code, channel.json_body["errcode"]) == (401, "M_UNAUTHORIZED")

    def test_key_lookup_replaced_once(self) -> None:
        """use_key_lookup swaps the placeholder once; a second call is a wiring error."""
        transport = self.hs.features.get(FederationTransport)
        transport.use_key_lookup(NoKeysLookup())
        try:
            transport.use_key_lookup(NoKeysLookup())
        except RuntimeError:
            return
        raise AssertionError("key lookup replaced twice")

    @override_config({"federation": {"enabled": False}})
    def test_disabled(self) -> None:
        """With federation disabled nothing is provided and /_matrix/federation is 404 M_UNRECOGNIZED."""
        assert self.hs.features.find(FederationClient) is None
        channel = self.make_request("GET", "/_matrix/federation/v1/version")
        assert (channel.code, channel.json_body["errcode"]) == (404, "M_UNRECOGNIZED")
