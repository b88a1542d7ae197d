"""federation/key_store.py on both engines: merge rules for keys and the latest response."""

from __future__ import annotations

import pytest

from federation.key_store import ServerKeyStore
from sc_proto.crypto.keys import generate_signing_key, get_verify_key
from sc_proto.federation.keys import ServerKeys, ServerVerifyKey
from tests.storage.harness import TestDatabase, get_success

S = "remote.test:8448"
K1 = generate_signing_key("k1")
K1_OTHER = generate_signing_key("k1")


def _keys(received_ts: int, *entries: ServerVerifyKey, marker: int = 0) -> ServerKeys:
    return ServerKeys(
        server_name=S,
        valid_until_ts=received_ts + 10,
        response_valid_until_ts=received_ts + 10,
        received_ts=received_ts,
        keys={e.key_id: e for e in entries},
        response={"server_name": S, "marker": marker, "nested": {"a": [1, "é"]}},
    )


@pytest.fixture
def store(prepared_database: TestDatabase) -> ServerKeyStore:
    return ServerKeyStore(prepared_database.make_pool())


class ServerKeyStoreTests:
    def test_round_trip(self, store: ServerKeyStore) -> None:
        """Stored keys and the response read back (non-ASCII JSON included)."""
        get_success(
            store.store_server_keys(_keys(100, ServerVerifyKey("ed25519:k1", get_verify_key(K1), 500, None)))
        )
        keys = get_success(store.get_server_keys(S))
        assert keys == {"ed25519:k1": ServerVerifyKey("ed25519:k1", get_verify_key(K1), 500, None)}
        stored = get_success(store.get_server_keys_json(S))
        assert stored is not None and stored.response["nested"] == {"a": [1, "é"]}
        assert (stored.valid_until_ts, stored.fetched_ts) == (110, 100)
        assert get_success(store.get_server_keys("other.test")) == {}
        assert get_success(store.get_server_keys_json("other.test")) is None

    def test_validity_only_grows_and_expiry_is_added(self, store: ServerKeyStore) -> None:
        """A later shorter validity keeps the earlier one; a later old-key listing adds expired_ts."""
        vk = get_verify_key(K1)
        get_success(store.store_server_keys(_keys(100, ServerVerifyKey("ed25519:k1", vk, 900, None))))
        get_success(store.store_server_keys(_keys(200, ServerVerifyKey("ed25519:k1", vk, 300, None))))
        assert get_success(store.get_server_keys(S))["ed25519:k1"].valid_until_ts == 900
        get_success(store.store_server_keys(_keys(300, ServerVerifyKey("ed25519:k1", vk, None, 250))))
        assert get_success(store.get_server_keys(S))["ed25519:k1"] == ServerVerifyKey(
            "ed25519:k1", vk, 900, 250
        )

    def test_new_key_under_same_id_replaces(self, store: ServerKeyStore) -> None:
        """A different key under a known key ID replaces it, validity included."""
        get_success(
            store.store_server_keys(_keys(100, ServerVerifyKey("ed25519:k1", get_verify_key(K1), 900, None)))
        )
        get_success(
            store.store_server_keys(
                _keys(200, ServerVerifyKey("ed25519:k1", get_verify_key(K1_OTHER), 300, None))
            )
        )
        assert get_success(store.get_server_keys(S))["ed25519:k1"] == ServerVerifyKey(
            "ed25519:k1", get_verify_key(K1_OTHER), 300, None
        )

    def test_latest_response_kept(self, store: ServerKeyStore) -> None:
        """The response with the latest fetched_ts wins, whatever order they are written in."""
        get_success(store.store_server_keys(_keys(200, marker=2)))
        get_success(store.store_server_keys(_keys(100, marker=1)))
        stored = get_success(store.get_server_keys_json(S))
        assert stored is not None and stored.response["marker"] == 2
        get_success(store.store_server_keys(_keys(300, marker=3)))
        stored = get_success(store.get_server_keys_json(S))
        assert stored is not None and stored.response["marker"] == 3
