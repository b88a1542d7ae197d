"""The remote server-key tables (``server_signing_keys``, ``server_keys_json``; delta 0008/10).

Invariants kept by :meth:`ServerKeyStore.store_server_keys` (one transaction per verified response):

* a key's ``valid_until_ts`` only grows: a later response with a shorter validity does not make
  events signed under an earlier, longer statement unverifiable (the server signed both);
* a key's ``expired_ts`` is taken from the latest response that lists it in ``old_verify_keys``;
* ``server_keys_json`` holds the most recently received response (by ``fetched_ts``), whatever its
  validity: it is what a notary serves and what "the last response" means when the server is down.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn
from sc_proto.crypto.keys import decode_base64, decode_verify_key_bytes, encode_verify_key_base64
from sc_proto.federation.keys import ServerKeys, ServerVerifyKey


@dataclass(frozen=True)
class StoredResponse:
    """A ``server_keys_json`` row.

    Attributes:
        response: the signed response as received.
        valid_until_ts: its ``valid_until_ts`` as the server wrote it (ms).
        fetched_ts: when it was received (ms).
    """

    response: dict[str, Any]
    valid_until_ts: int
    fetched_ts: int


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class ServerKeyStore:
    """Reads and writes remote servers' verify keys and their latest key responses."""

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    async def get_server_keys(self, server_name: str) -> dict[str, ServerVerifyKey]:
        """Every stored key of ``server_name``, key ID -> key (with its merged validity)."""
        return await self._pool.run_read("get_server_keys", self._get_server_keys_txn, server_name)

    @staticmethod
    def _get_server_keys_txn(txn: Txn, server_name: str) -> dict[str, ServerVerifyKey]:
        txn.execute(
            "SELECT key_id, verify_key, valid_until_ts, expired_ts FROM server_signing_keys WHERE server_name = ?",
            (server_name,),
        )
        keys: dict[str, ServerVerifyKey] = {}
        for key_id, key_b64, valid_until_ts, expired_ts in txn.fetchall():
            verify_key = decode_verify_key_bytes(key_id, decode_base64(key_b64))
            keys[key_id] = ServerVerifyKey(key_id, verify_key, valid_until_ts, expired_ts)
        return keys

    async def store_server_keys(self, keys: ServerKeys) -> None:
        """Records a verified response: merges its keys and keeps it as the latest response."""
        await self._pool.run_txn("store_server_keys", self._store_server_keys_txn, keys)

    @staticmethod
    def _store_server_keys_txn(txn: Txn, keys: ServerKeys) -> None:
        txn.execute(
            "SELECT key_id, verify_key, valid_until_ts, expired_ts FROM server_signing_keys WHERE server_name = ?",
            (keys.server_name,),
        )
        existing: dict[str, tuple[str, int | None, int | None]] = {
            row[0]: (row[1], row[2], row[3]) for row in txn.fetchall()
        }
        for key_id, key in keys.keys.items():
            key_b64 = encode_verify_key_base64(key.verify_key)
            valid_until_ts, expired_ts = key.valid_until_ts, key.expired_ts
            before = existing.get(key_id)
            if before is not None and before[0] == key_b64:
                valid_until_ts = _max(valid_until_ts, before[1])
                expired_ts = expired_ts if expired_ts is not None else before[2]
            # A different key under a known key ID replaces the old one (the server re-used an ID;
            # the newest signed statement wins).
            txn.execute(
                "INSERT INTO server_signing_keys"
                " (server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (server_name, key_id) DO UPDATE SET"
                " verify_key = EXCLUDED.verify_key, valid_until_ts = EXCLUDED.valid_until_ts,"
                " expired_ts = EXCLUDED.expired_ts, fetched_ts = EXCLUDED.fetched_ts",
                (keys.server_name, key_id, key_b64, valid_until_ts, expired_ts, keys.received_ts),
            )
        txn.execute(
            "INSERT INTO server_keys_json (server_name, key_json, valid_until_ts, fetched_ts) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (server_name) DO UPDATE SET key_json = EXCLUDED.key_json,"
            " valid_until_ts = EXCLUDED.valid_until_ts, fetched_ts = EXCLUDED.fetched_ts"
            " WHERE server_keys_json.fetched_ts <= EXCLUDED.fetched_ts",
            (
                keys.server_name,
                json.dumps(_plain(keys.response), ensure_ascii=False, separators=(",", ":")),
                keys.response_valid_until_ts,
                keys.received_ts,
            ),
        )

    async def get_server_keys_json(self, server_name: str) -> StoredResponse | None:
        """The latest verified response of ``server_name``, or None."""
        return await self._pool.run_read("get_server_keys_json", self._get_server_keys_json_txn, server_name)

    @staticmethod
    def _get_server_keys_json_txn(txn: Txn, server_name: str) -> StoredResponse | None:
        txn.execute(
            "SELECT key_json, valid_until_ts, fetched_ts FROM server_keys_json WHERE server_name = ?",
            (server_name,),
        )
        row = txn.fetchone()
        if row is None:
            return None
        return StoredResponse(json.loads(row[0]), row[1], row[2])


def _plain(value: Any) -> Any:
    """A JSON-encodable copy (mappings become dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
