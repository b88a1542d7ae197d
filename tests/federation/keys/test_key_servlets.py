"""The key API servlets: our keys, the notary GET/POST query, bounds and malformed input (never 500)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from twisted.internet import task

from federation.key_servlets import MAX_QUERY_SERVERS, KeyServlets
from federation.key_store import ServerKeyStore
from federation.keyring import Keyring
from federation.keys_wiring import build_key_services, register_key_servlets
from federation.local_keys import LocalKeys
from homeserver.config.federation import FederationConfig
from sc_proto.crypto.keys import generate_signing_key, get_verify_key
from sc_proto.errors import Codes
from sc_proto.federation.keys import parse_notary_entry, parse_server_keys
from tests.federation.keys.fakes import (
    DAY_MS,
    HOUR_MS,
    NOW_MS,
    FakeFederationHttp,
    FakeOrigin,
    FakeRouter,
    make_clock,
)
from tests.storage.harness import TestDatabase, get_success

US = "us.test:8448"
ORIGIN = "origin.test"


@dataclass
class Notary:
    """Our key servlets on a router, over our keyring."""

    reactor: task.Clock
    http: FakeFederationHttp
    router: FakeRouter
    local: LocalKeys
    keyring: Keyring
    origin: FakeOrigin

    def call(
        self, method: str, path: str, *, query: dict[str, list[str]] | None = None, content: Any = None
    ) -> tuple[int, dict[str, Any]]:
        return get_success(self.router.dispatch(method, path, query=query, content=content))

    def our_keys(self) -> dict[str, Any]:
        return {"ed25519:us1": get_verify_key(self.local.signing_key)}


@pytest.fixture
def notary(prepared_database: TestDatabase) -> Notary:
    reactor, clock = make_clock()
    http = FakeFederationHttp()
    origin = FakeOrigin(ORIGIN, http, clock)
    local = LocalKeys(US, generate_signing_key("us1"))
    keyring = Keyring(
        local=local, store=ServerKeyStore(prepared_database.make_pool()), http=http, clock=clock
    )
    router = FakeRouter()
    KeyServlets(keyring, local, clock, DAY_MS).register(router)
    return Notary(reactor, http, router, local, keyring, origin)


class RegistrationTests:
    def test_routes_unauthenticated(self, notary: Notary) -> None:
        """Three routes, none requiring X-Matrix (the deprecated /server/{keyId} is gone from the spec)."""
        assert notary.router.patterns() == {
            ("GET", "/_matrix/key/v2/server", False),
            ("GET", "/_matrix/key/v2/query/{serverName}", False),
            ("POST", "/_matrix/key/v2/query", False),
        }

    def test_wiring_builds_and_registers(self, prepared_database: TestDatabase, tmp_path: Any) -> None:
        """build_key_services + register_key_servlets give a working keyring and the routes."""
        _reactor, clock = make_clock()
        key = generate_signing_key("w1")
        services = build_key_services(
            pool=prepared_database.make_pool(),
            clock=clock,
            http=FakeFederationHttp(),
            config=FederationConfig(),
            server_name=US,
            signing_key=key,
            signing_key_path=str(tmp_path / "signing.key"),
        )
        router = FakeRouter()
        register_key_servlets(router, services)
        assert len(router.patterns()) == 3
        status, body = get_success(router.dispatch("GET", "/_matrix/key/v2/server"))
        assert status == 200 and body["valid_until_ts"] == NOW_MS + 7 * DAY_MS
        assert get_success(services.keyring.get_verify_key(US, "ed25519:w1", NOW_MS)) == get_verify_key(key)


class OwnKeysTests:
    def test_server_keys_verifiable(self, notary: Notary) -> None:
        """GET /_matrix/key/v2/server is self-signed, names us, valid for the configured period."""
        status, body = notary.call("GET", "/_matrix/key/v2/server")
        assert status == 200
        keys = parse_server_keys(body, expected_server_name=US, received_ts=NOW_MS)
        assert keys.response_valid_until_ts == NOW_MS + DAY_MS
        assert keys.keys["ed25519:us1"].verify_key == get_verify_key(notary.local.signing_key)
        assert body["old_verify_keys"] == {}

    def test_old_keys_published(self, prepared_database: TestDatabase) -> None:
        """Retired keys appear in old_verify_keys with their expired_ts."""
        _reactor, clock = make_clock()
        old = generate_signing_key("old")
        local = LocalKeys(US, generate_signing_key("new"), {"ed25519:old": (get_verify_key(old), NOW_MS - 5)})
        keyring = Keyring(
            local=local,
            store=ServerKeyStore(prepared_database.make_pool()),
            http=FakeFederationHttp(),
            clock=clock,
        )
        router = FakeRouter()
        KeyServlets(keyring, local, clock, DAY_MS).register(router)
        _status, body = get_success(router.dispatch("GET", "/_matrix/key/v2/server"))
        keys = parse_server_keys(body, expected_server_name=US, received_ts=NOW_MS)
        assert keys.keys["ed25519:old"].expired_ts == NOW_MS - 5
        assert set(body["signatures"][US]) == {"ed25519:new"}


class NotaryQueryTests:
    def test_get_query_signed_by_origin_and_us(self, notary: Notary) -> None:
        """GET /query/{serverName} returns the origin's response with our signature added."""
        status, body = notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}")
        assert status == 200 and len(body["server_keys"]) == 1
        keys = parse_notary_entry(
            body["server_keys"][0], expected_server_name=ORIGIN, notary_name=US,
            notary_keys=notary.our_keys(), received_ts=NOW_MS,
        )  # fmt: skip
        assert keys.keys[notary.origin.key_id].verify_key == get_verify_key(notary.origin.signing_key)

    def test_post_query_several_servers(self, notary: Notary) -> None:
        """POST /query answers each reachable server, ourselves included; unreachable ones are omitted."""
        content = {"server_keys": {ORIGIN: {}, US: {"ed25519:us1": {}}, "down.test": {}}}
        status, body = notary.call("POST", "/_matrix/key/v2/query", content=content)
        assert status == 200
        assert sorted(entry["server_name"] for entry in body["server_keys"]) == [ORIGIN, US]

    def test_empty_query(self, notary: Notary) -> None:
        """No servers asked: an empty server_keys list (spec)."""
        assert notary.call("POST", "/_matrix/key/v2/query", content={"server_keys": {}}) == (
            200,
            {"server_keys": []},
        )

    def test_unreachable_server_without_cache(self, notary: Notary) -> None:
        """A server we cannot reach and never cached: 200 with an empty list."""
        notary.http.down.add(ORIGIN)
        assert notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}") == (200, {"server_keys": []})

    def test_cached_within_half_life(self, notary: Notary) -> None:
        """A second query within half the response's lifetime is served from the cache."""
        notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}")
        notary.reactor.advance(11 * 3600)
        notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}")
        assert notary.http.count(ORIGIN) == 1
        notary.reactor.advance(2 * 3600)  # past half of the 24 h lifetime
        notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}")
        assert notary.http.count(ORIGIN) == 2

    def test_stale_response_served_when_origin_down(self, notary: Notary) -> None:
        """After the origin goes down, the last response is still served (spec: old events stay checkable)."""
        notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}")
        notary.http.down.add(ORIGIN)
        notary.reactor.advance(2 * 86400)
        status, body = notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}")
        assert status == 200 and len(body["server_keys"]) == 1
        assert notary.http.count(ORIGIN) == 2

    def test_minimum_valid_until_ts_forces_refetch(self, notary: Notary) -> None:
        """Asking for keys valid beyond the cached response's validity refetches, at most once a minute."""
        notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}")
        notary.reactor.advance(61)
        later = str(NOW_MS + 2 * DAY_MS)
        status, body = notary.call(
            "GET", f"/_matrix/key/v2/query/{ORIGIN}", query={"minimum_valid_until_ts": [later]}
        )
        assert notary.http.count(ORIGIN) == 2
        assert status == 200 and len(body["server_keys"]) == 1  # the best we have, though short of the wish
        for _ in range(5):  # the origin never satisfies it: no request flood
            notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}", query={"minimum_valid_until_ts": [later]})
        assert notary.http.count(ORIGIN) == 2
        content = {
            "server_keys": {ORIGIN: {notary.origin.key_id: {"minimum_valid_until_ts": NOW_MS + HOUR_MS}}}
        }
        notary.reactor.advance(61)
        notary.call("POST", "/_matrix/key/v2/query", content=content)
        assert notary.http.count(ORIGIN) == 2  # the cached response covers that

    def test_long_validity_refetched_after_half_of_seven_days(self, notary: Notary) -> None:
        """A response valid for a year is cached for half of the 7-day cap, not half a year."""
        notary.origin.validity_ms = 365 * DAY_MS
        notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}")
        notary.reactor.advance(3 * 86400)
        notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}")
        assert notary.http.count(ORIGIN) == 1
        notary.reactor.advance(86400)
        notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}")
        assert notary.http.count(ORIGIN) == 2

    def test_forged_origin_not_served(self, notary: Notary) -> None:
        """A response failing verification is never stored or served."""
        notary.origin.tamper = lambda r: {**r, "valid_until_ts": r["valid_until_ts"] + 1}
        assert notary.call("GET", f"/_matrix/key/v2/query/{ORIGIN}") == (200, {"server_keys": []})


def _error(result: tuple[int, dict[str, Any]]) -> tuple[int, str]:
    status, body = result
    return status, body.get("errcode", "")


class MalformedInputTests:
    @pytest.mark.parametrize(
        "content, errcode",
        [
            (None, Codes.NOT_JSON),
            ([], Codes.BAD_JSON),
            ({}, Codes.BAD_JSON),
            ({"server_keys": []}, Codes.BAD_JSON),
            ({"server_keys": {ORIGIN: "all"}}, Codes.BAD_JSON),
            ({"server_keys": {ORIGIN: {"ed25519:k1": []}}}, Codes.BAD_JSON),
            (
                {"server_keys": {ORIGIN: {"ed25519:k1": {"minimum_valid_until_ts": "soon"}}}},
                Codes.INVALID_PARAM,
            ),
            ({"server_keys": {ORIGIN: {"ed25519:k1": {"minimum_valid_until_ts": 1.5}}}}, Codes.INVALID_PARAM),
            ({"server_keys": {ORIGIN: {"no-colon": {}}}}, Codes.INVALID_PARAM),
            ({"server_keys": {"bad/server": {}}}, Codes.INVALID_PARAM),
            ({"server_keys": {"a" * 300: {}}}, Codes.INVALID_PARAM),
        ],
    )
    def test_malformed_post_is_400(self, notary: Notary, content: Any, errcode: Codes) -> None:
        """Malformed POST bodies are 400 with the right Matrix error and send no request."""
        assert _error(notary.call("POST", "/_matrix/key/v2/query", content=content)) == (400, errcode.value)
        assert notary.http.requests == []

    def test_huge_post_is_400(self, notary: Notary) -> None:
        """Too many servers, or too many key IDs for one server: 400 M_TOO_LARGE, nothing fetched."""
        servers = {f"s{i}.test": {} for i in range(MAX_QUERY_SERVERS + 1)}
        result = notary.call("POST", "/_matrix/key/v2/query", content={"server_keys": servers})
        assert _error(result) == (400, Codes.TOO_LARGE.value)
        keys = {f"ed25519:k{i}": {} for i in range(10_000)}
        result = notary.call("POST", "/_matrix/key/v2/query", content={"server_keys": {ORIGIN: keys}})
        assert _error(result) == (400, Codes.TOO_LARGE.value)
        assert notary.http.requests == []

    def test_max_servers_accepted(self, notary: Notary) -> None:
        """Exactly the limit is fine (unreachable servers are simply omitted)."""
        servers = {f"s{i}.test": {} for i in range(MAX_QUERY_SERVERS)}
        status, body = notary.call("POST", "/_matrix/key/v2/query", content={"server_keys": servers})
        assert (status, body) == (200, {"server_keys": []})

    @pytest.mark.parametrize("values", [["abc"], ["-1"], ["1e5"], ["1", "2"], [""], ["9" * 20]])
    def test_bad_minimum_valid_until_ts(self, notary: Notary, values: list[str]) -> None:
        """A malformed minimum_valid_until_ts query parameter is 400 M_INVALID_PARAM."""
        result = notary.call(
            "GET", f"/_matrix/key/v2/query/{ORIGIN}", query={"minimum_valid_until_ts": values}
        )
        assert _error(result) == (400, Codes.INVALID_PARAM.value)

    @pytest.mark.parametrize("name", ["bad%2Fname", "a%20b", "%5B%3A%3A1", "x" * 300])
    def test_bad_server_name(self, notary: Notary, name: str) -> None:
        """An invalid serverName path segment is 400 M_INVALID_PARAM."""
        assert _error(notary.call("GET", f"/_matrix/key/v2/query/{name}")) == (400, Codes.INVALID_PARAM.value)

    def test_ipv6_server_name_accepted(self, notary: Notary) -> None:
        """IPv6-literal server names with ports are valid (unreachable here: empty list)."""
        assert notary.call("GET", "/_matrix/key/v2/query/%5B%3A%3A1%5D%3A8448") == (200, {"server_keys": []})
