"""The keyring: fetch from the origin, notary fallback, verification, caching, coalescing, persistence.

Every test runs on SQLite and (with ``SC_TEST_POSTGRES``) PostgreSQL, over in-memory federation
(``tests/federation/keys/fakes.py``) and a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task

from federation.key_servlets import KeyServlets
from federation.key_store import ServerKeyStore
from federation.keyring import Keyring
from federation.local_keys import LocalKeys
from homeserver.config.federation import TrustedKeyServer
from homeserver.storage.migrations import prepare_database
from homeserver.storage.pool import DatabasePool
from homeserver.util.clock import Clock
from sc_proto.crypto.keys import encode_verify_key_base64, generate_signing_key, get_verify_key
from sc_proto.crypto.signing import sign_json
from sc_proto.errors import Codes, MatrixError
from sc_proto.federation.keys import MAX_KEY_VALIDITY_MS, build_server_keys_response, notary_sign
from tests.federation.keys.fakes import (
    DAY_MS,
    HOUR_MS,
    NOW_MS,
    FakeFederationHttp,
    FakeOrigin,
    FakeRouter,
    make_clock,
)
from tests.storage.harness import TestDatabase, get_failure, get_success

US = "us.test:8448"
ORIGIN = "origin.test"
NOTARY = "notary.test"


@dataclass
class World:
    """Our keyring and the in-memory federation around it."""

    reactor: task.Clock
    clock: Clock
    http: FakeFederationHttp
    pool: DatabasePool
    origin: FakeOrigin
    local: LocalKeys

    def keyring(self, **kwargs: Any) -> Keyring:
        """A new keyring over our database (a new instance: a restart or another worker)."""
        return Keyring(
            local=self.local, store=ServerKeyStore(self.pool), http=self.http, clock=self.clock, **kwargs
        )

    def advance_ms(self, ms: int) -> None:
        self.reactor.advance(ms / 1000)


@pytest.fixture
def world(prepared_database: TestDatabase) -> World:
    reactor, clock = make_clock()
    http = FakeFederationHttp()
    origin = FakeOrigin(ORIGIN, http, clock)
    local = LocalKeys(US, generate_signing_key("us1"))
    return World(reactor, clock, http, prepared_database.make_pool(), origin, local)


def _notary(world: World, tmp_path: Path) -> tuple[LocalKeys, Keyring]:
    """A real notary (keyring, store on its own SQLite database, servlets) reachable as NOTARY."""
    db = TestDatabase("sqlite", f"sqlite://{tmp_path / 'notary.db'}")
    pool = db.make_pool()
    get_success(prepare_database(pool))
    local = LocalKeys(NOTARY, generate_signing_key("n1"))
    keyring = Keyring(local=local, store=ServerKeyStore(pool), http=world.http, clock=world.clock)
    router = FakeRouter()
    KeyServlets(keyring, local, world.clock, DAY_MS).register(router)
    world.http.routers[NOTARY] = router
    return local, keyring


def _trusted(local: LocalKeys, *, with_keys: bool = True) -> TrustedKeyServer:
    keys = {local.key_id: encode_verify_key_base64(get_verify_key(local.signing_key))} if with_keys else {}
    return TrustedKeyServer(server_name=local.server_name, verify_keys=keys)


def _unauthorized(d: Any) -> MatrixError:
    error = get_failure(d, MatrixError)
    assert isinstance(error, MatrixError)
    assert (error.http_status, error.errcode) == (401, Codes.UNAUTHORIZED)
    return error


class OriginFetchTests:
    def test_fetches_and_verifies_from_origin(self, world: World) -> None:
        """An unknown key is fetched, unsigned, from the origin's /_matrix/key/v2/server."""
        key = get_success(world.keyring().get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
        assert key == get_verify_key(world.origin.signing_key)
        assert world.http.requests == [("GET", ORIGIN, "/_matrix/key/v2/server", False, None)]

    def test_second_lookup_makes_no_request(self, world: World) -> None:
        """A cached key valid at the asked time needs no request."""
        keyring = world.keyring()
        get_success(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
        get_success(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS + HOUR_MS))
        assert world.http.count(ORIGIN) == 1

    def test_persisted_across_keyring_instances(self, world: World) -> None:
        """Keys survive in the database: a new keyring answers with the origin down, no request."""
        get_success(world.keyring().get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
        world.http.down.add(ORIGIN)
        key = get_success(world.keyring().get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
        assert key == get_verify_key(world.origin.signing_key)
        assert world.http.count(ORIGIN) == 1

    def test_refetch_after_expiry(self, world: World) -> None:
        """Once valid_until_ts (+ skew) has passed, a lookup for "now" fetches again; old times do not."""
        world.origin.validity_ms = HOUR_MS
        keyring = world.keyring(clock_skew_s=0)
        get_success(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
        world.advance_ms(2 * HOUR_MS)
        get_success(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS + 30 * 60 * 1000))
        assert world.http.count(ORIGIN) == 1  # a time the cached response covers
        get_success(keyring.get_verify_key(ORIGIN, world.origin.key_id, world.clock.time_msec()))
        assert world.http.count(ORIGIN) == 2

    def test_forged_self_signature_refused(self, world: World) -> None:
        """A response signed by another key under the origin's key ID is refused and not stored."""
        forger = generate_signing_key("k1")
        world.origin.tamper = lambda r: sign_json(
            {k: v for k, v in r.items() if k != "signatures"}, ORIGIN, forger
        )
        _unauthorized(world.keyring().get_verify_key(ORIGIN, "ed25519:k1", NOW_MS))
        assert get_success(ServerKeyStore(world.pool).get_server_keys(ORIGIN)) == {}

    def test_server_name_mismatch_refused(self, world: World) -> None:
        """A validly self-signed response naming another server (replayed) is refused."""
        evil = FakeOrigin("evil.test", world.http, world.clock)
        world.origin.tamper = lambda r: evil.local.server_keys_response(NOW_MS, DAY_MS)
        _unauthorized(world.keyring().get_verify_key(ORIGIN, evil.key_id, NOW_MS))
        assert get_success(ServerKeyStore(world.pool).get_server_keys(ORIGIN)) == {}

    def test_expired_key_refused(self, world: World) -> None:
        """A key whose validity ends before the asked time is not returned, even just fetched."""
        world.origin.validity_ms = HOUR_MS
        _unauthorized(
            world.keyring(clock_skew_s=0).get_verify_key(ORIGIN, world.origin.key_id, NOW_MS + 3 * HOUR_MS)
        )

    def test_validity_capped_at_seven_days(self, world: World) -> None:
        """A response valid for 30 days is trusted for 7 days after receipt only."""
        world.origin.validity_ms = 30 * DAY_MS
        keyring = world.keyring(clock_skew_s=0)
        get_success(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS + 6 * DAY_MS))
        _unauthorized(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS + MAX_KEY_VALIDITY_MS + 1))

    def test_old_key_valid_before_its_expiry(self, world: World) -> None:
        """After a rotation the old key checks signatures made before expired_ts, not after."""
        old = world.origin.signing_key
        world.advance_ms(HOUR_MS)
        world.origin.rotate("k2")
        keyring = world.keyring()
        key = get_success(keyring.get_verify_key(ORIGIN, "ed25519:k1", NOW_MS + 30 * 60 * 1000))
        assert key == get_verify_key(old)
        assert world.http.count(ORIGIN) == 1
        world.http.down.add(ORIGIN)
        _unauthorized(keyring.get_verify_key(ORIGIN, "ed25519:k1", NOW_MS + 2 * HOUR_MS))
        get_success(keyring.get_verify_key(ORIGIN, "ed25519:k2", world.clock.time_msec()))

    def test_old_key_keeps_earlier_validity(self, world: World) -> None:
        """A key first seen as current keeps that validity when later listed as old."""
        keyring = world.keyring(clock_skew_s=0)
        get_success(keyring.get_verify_key(ORIGIN, "ed25519:k1", NOW_MS))
        world.advance_ms(2 * HOUR_MS)
        world.origin.rotate("k2")
        get_success(keyring.get_verify_key(ORIGIN, "ed25519:k2", world.clock.time_msec()))
        stored = get_success(ServerKeyStore(world.pool).get_server_keys(ORIGIN))
        assert stored["ed25519:k1"].expired_ts == NOW_MS + 2 * HOUR_MS
        assert stored["ed25519:k1"].valid_until_ts == NOW_MS + DAY_MS

    def test_malformed_names_refused_without_request(self, world: World) -> None:
        """Unsupported algorithms, malformed key IDs and server names fail at once."""
        keyring = world.keyring()
        for server, key_id in [
            (ORIGIN, "curve25519:k1"),
            (ORIGIN, "ed25519:"),
            (ORIGIN, "x"),
            ("bad name!", "ed25519:k1"),
        ]:
            _unauthorized(keyring.get_verify_key(server, key_id, NOW_MS))
        assert world.http.requests == []

    def test_oversized_response_refused(self, world: World) -> None:
        """A validly signed response padded past 64 KiB is refused and not stored."""
        padded = lambda r: sign_json(  # noqa: E731
            {**{k: v for k, v in r.items() if k != "signatures"}, "junk": "x" * 70_000},
            ORIGIN,
            world.origin.signing_key,
        )
        world.origin.tamper = padded
        _unauthorized(world.keyring().get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
        assert get_success(ServerKeyStore(world.pool).get_server_keys_json(ORIGIN)) is None

    def test_origin_http_error_is_401(self, world: World) -> None:
        """A 404 (or garbage) from the origin is a 401 for the caller, not an exception."""
        world.origin.router.routes.clear()
        _unauthorized(world.keyring().get_verify_key(ORIGIN, "ed25519:k1", NOW_MS))
        world.origin.router.register("GET", "/_matrix/key/v2/server", _garbage, authenticated=False)
        world.advance_ms(120_000)
        _unauthorized(world.keyring().get_verify_key(ORIGIN, "ed25519:k1", NOW_MS))


async def _garbage(request: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"server_name": ORIGIN, "verify_keys": "nope"}


class OwnKeysTests:
    def test_own_keys_need_no_request(self, world: World) -> None:
        """Our own server name is answered from our keys, current and old."""
        old = generate_signing_key("old")
        local = LocalKeys(US, world.local.signing_key, {"ed25519:old": (get_verify_key(old), NOW_MS)})
        keyring = Keyring(local=local, store=ServerKeyStore(world.pool), http=world.http, clock=world.clock)
        assert get_success(keyring.get_verify_key(US, "ed25519:us1", NOW_MS)) == get_verify_key(
            local.signing_key
        )
        assert get_success(keyring.get_verify_key(US, "ed25519:old", NOW_MS - 1)) == get_verify_key(old)
        _unauthorized(keyring.get_verify_key(US, "ed25519:old", NOW_MS))
        _unauthorized(keyring.get_verify_key(US, "ed25519:nope", NOW_MS))
        assert world.http.requests == []


class NotaryFallbackTests:
    def test_notary_used_when_origin_down(self, world: World, tmp_path: Path) -> None:
        """With the origin unreachable, the key comes from a trusted notary's cached copy."""
        notary_local, notary_keyring = _notary(world, tmp_path)
        get_success(notary_keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))  # notary caches it
        world.http.down.add(ORIGIN)
        keyring = world.keyring(trusted_key_servers=[_trusted(notary_local)])
        key = get_success(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
        assert key == get_verify_key(world.origin.signing_key)
        posts = [r for r in world.http.requests if r[0] == "POST"]
        assert len(posts) == 1
        _method, dest, path, signed, body = posts[0]
        assert (dest, path, signed) == (NOTARY, "/_matrix/key/v2/query", False)
        assert body == {"server_keys": {ORIGIN: {world.origin.key_id: {"minimum_valid_until_ts": NOW_MS}}}}

    def test_notary_key_fetched_from_notary_when_not_configured(self, world: World, tmp_path: Path) -> None:
        """A notary configured without keys has its own key fetched from it first."""
        notary_local, notary_keyring = _notary(world, tmp_path)
        get_success(notary_keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
        world.http.down.add(ORIGIN)
        keyring = world.keyring(trusted_key_servers=[_trusted(notary_local, with_keys=False)])
        get_success(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
        assert world.http.count(NOTARY, "/_matrix/key/v2/server") == 1

    def test_notary_answer_without_notary_signature_refused(self, world: World) -> None:
        """A "notary" relaying the origin's response without signing it is not trusted."""
        relayed = world.origin.local.server_keys_response(NOW_MS, DAY_MS)
        router = FakeRouter()

        async def on_query(request: Any) -> tuple[int, dict[str, Any]]:
            return 200, {"server_keys": [relayed]}

        router.register("POST", "/_matrix/key/v2/query", on_query, authenticated=False)
        world.http.routers[NOTARY] = router
        world.http.down.add(ORIGIN)
        notary = TrustedKeyServer(
            server_name=NOTARY,
            verify_keys={"ed25519:n1": encode_verify_key_base64(get_verify_key(generate_signing_key("n1")))},
        )
        _unauthorized(
            world.keyring(trusted_key_servers=[notary]).get_verify_key(ORIGIN, world.origin.key_id, NOW_MS)
        )
        assert world.http.count(NOTARY) == 1

    def test_notary_signed_forgery_refused(self, world: World, tmp_path: Path) -> None:
        """A notary altering the origin's signed key list (its own signature is valid) is refused."""
        notary_local, _ = _notary(world, tmp_path)
        lie = world.origin.local.server_keys_response(NOW_MS, DAY_MS)
        other = generate_signing_key("k1")
        lie["verify_keys"] = {world.origin.key_id: {"key": encode_verify_key_base64(get_verify_key(other))}}
        router = FakeRouter()

        async def on_query(request: Any) -> tuple[int, dict[str, Any]]:
            return 200, {"server_keys": [notary_sign(lie, ORIGIN, NOTARY, notary_local.signing_key)]}

        router.register("POST", "/_matrix/key/v2/query", on_query, authenticated=False)
        world.http.routers[NOTARY] = router
        world.http.down.add(ORIGIN)
        keyring = world.keyring(trusted_key_servers=[_trusted(notary_local)])
        _unauthorized(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))

    def test_notary_down_too(self, world: World, tmp_path: Path) -> None:
        """Origin and notary unreachable: 401, one request each."""
        notary_local, _ = _notary(world, tmp_path)
        world.http.down |= {ORIGIN, NOTARY}
        keyring = world.keyring(trusted_key_servers=[_trusted(notary_local)])
        _unauthorized(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
        assert (world.http.count(ORIGIN), world.http.count(NOTARY)) == (1, 1)


class CoalescingTests:
    def test_concurrent_lookups_share_one_request(self, world: World) -> None:
        """N concurrent lookups for one server send one request and all get the key."""
        keyring = world.keyring()
        world.http.hold()
        pending = [
            defer.ensureDeferred(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
            for _ in range(5)
        ]
        assert not any(d.called for d in pending)
        assert world.http.count(ORIGIN) == 1
        world.http.release()
        results = [get_success(d) for d in pending]
        assert all(r == get_verify_key(world.origin.signing_key) for r in results)
        assert world.http.count(ORIGIN) == 1

    def test_concurrent_failures_share_one_request(self, world: World) -> None:
        """N concurrent lookups of an unreachable server: one request, N 401s."""
        world.http.down.add(ORIGIN)
        keyring = world.keyring()
        world.http.hold()
        pending = [
            defer.ensureDeferred(keyring.get_verify_key(ORIGIN, "ed25519:k1", NOW_MS)) for _ in range(4)
        ]
        world.http.release()
        for d in pending:
            _unauthorized(d)
        assert world.http.count(ORIGIN) == 1

    def test_cancelled_waiter_does_not_break_the_others(self, world: World) -> None:
        """A waiter cancelled (its request timed out) while waiting does not stop the others waking."""
        keyring = world.keyring()
        world.http.hold()
        pending = [
            defer.ensureDeferred(keyring.get_verify_key(ORIGIN, world.origin.key_id, NOW_MS))
            for _ in range(3)
        ]
        pending[1].cancel()
        pending[1].addErrback(lambda f: f.trap(defer.CancelledError))
        world.http.release()
        assert get_success(pending[0]) == get_success(pending[2]) == get_verify_key(world.origin.signing_key)

    def test_waiter_for_another_key_fetches_again(self, world: World) -> None:
        """A lookup that waited on a fetch which did not bring its key fetches once itself."""
        k2 = generate_signing_key("k2")
        answers = [
            lambda r: r,  # the held (first) request: k1 only
            lambda r: build_server_keys_response(ORIGIN, [world.origin.signing_key, k2], {}, NOW_MS + DAY_MS),
        ]
        world.origin.tamper = lambda r: answers.pop(0)(r)
        keyring = world.keyring()
        world.http.hold()
        first = defer.ensureDeferred(keyring.get_verify_key(ORIGIN, "ed25519:k1", NOW_MS))
        second = defer.ensureDeferred(keyring.get_verify_key(ORIGIN, "ed25519:k2", NOW_MS))
        assert world.http.count(ORIGIN) == 1
        world.http.release()
        assert get_success(first) == get_verify_key(world.origin.signing_key)
        assert get_success(second) == get_verify_key(k2)
        assert world.http.count(ORIGIN) == 2


class NegativeCacheTests:
    def test_failure_cached_briefly(self, world: World) -> None:
        """A failed lookup is not retried for failure_cache_s; afterwards it is."""
        world.http.down.add(ORIGIN)
        keyring = world.keyring(failure_cache_s=60)
        _unauthorized(keyring.get_verify_key(ORIGIN, "ed25519:k1", NOW_MS))
        _unauthorized(keyring.get_verify_key(ORIGIN, "ed25519:k1", NOW_MS))
        assert world.http.count(ORIGIN) == 1
        world.http.down.clear()
        world.advance_ms(61_000)
        get_success(keyring.get_verify_key(ORIGIN, "ed25519:k1", NOW_MS))
        assert world.http.count(ORIGIN) == 2

    def test_memory_cache_bounded(self, world: World) -> None:
        """The memory cache holds at most cache_servers servers; evicted ones come from the database."""
        others = [FakeOrigin(f"o{i}.test", world.http, world.clock) for i in range(3)]
        keyring = world.keyring(cache_servers=2)
        for origin in others:
            get_success(keyring.get_verify_key(origin.name, origin.key_id, NOW_MS))
        assert len(keyring._keys) == 2
        get_success(keyring.get_verify_key(others[0].name, others[0].key_id, NOW_MS))
        assert world.http.count(others[0].name) == 1

    def test_eviction_during_concurrent_fetches(self, world: World) -> None:
        """Fetched keys are found even when the memory cache evicted them before the waiter looked."""
        others = [FakeOrigin(f"o{i}.test", world.http, world.clock) for i in range(3)]
        keyring = world.keyring(cache_servers=1)
        world.http.hold()
        pending = [defer.ensureDeferred(keyring.get_verify_key(o.name, o.key_id, NOW_MS)) for o in others]
        world.http.release()
        assert [get_success(d) for d in pending] == [get_verify_key(o.signing_key) for o in others]
        assert len(world.http.requests) == 3


class VerifyJsonTests:
    def test_valid_signature(self, world: World) -> None:
        """An object signed by the origin's current key verifies."""
        signed = sign_json({"a": 1}, ORIGIN, world.origin.signing_key)
        get_success(world.keyring().verify_json_for_server(ORIGIN, signed, NOW_MS))

    def test_bad_signature_refused(self, world: World) -> None:
        """A signature under the origin's key ID by another key fails."""
        signed = sign_json({"a": 1}, ORIGIN, generate_signing_key("k1"))
        _unauthorized(world.keyring().verify_json_for_server(ORIGIN, signed, NOW_MS))

    def test_unknown_key_skipped_but_one_needed(self, world: World) -> None:
        """Signatures by unknown keys are skipped; with only those, the object fails."""
        keyring = world.keyring()
        unknown = sign_json({"a": 1}, ORIGIN, generate_signing_key("zz"))
        _unauthorized(keyring.verify_json_for_server(ORIGIN, unknown, NOW_MS))
        both = sign_json(unknown, ORIGIN, world.origin.signing_key)
        world.advance_ms(61_000)
        get_success(keyring.verify_json_for_server(ORIGIN, both, NOW_MS))

    @pytest.mark.parametrize(
        "obj", [{}, {"signatures": None}, {"signatures": {ORIGIN: "x"}}, {"signatures": {"other": {}}}]
    )
    def test_unsigned_refused(self, world: World, obj: dict[str, Any]) -> None:
        """No signature of the server: 401 without a request."""
        _unauthorized(world.keyring().verify_json_for_server(ORIGIN, obj, NOW_MS))
        assert world.http.requests == []

    def test_own_signature(self, world: World) -> None:
        """Our own signature is checked with our key, without a request."""
        signed = sign_json({"a": 1}, US, world.local.signing_key)
        get_success(world.keyring().verify_json_for_server(US, signed, NOW_MS))
        assert world.http.requests == []
