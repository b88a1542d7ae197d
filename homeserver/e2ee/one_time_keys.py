"""Claiming one-time keys (``/keys/claim``) and the per-device key counts ``/sync`` reports.

Theory of operation: every key of one ``/keys/claim`` request is taken in one transaction. For each
(user, device, algorithm) the oldest one-time key is deleted and returned (``DELETE ... RETURNING``,
see :mod:`homeserver.storage.stores.e2e_keys` for why two concurrent claims can never get the same
key); when the device has none left, its fallback key of that algorithm is returned and marked used
(it stays until the device replaces it). Other servers' users' keys are claimed through the
:class:`~homeserver.api.ports.RemoteKeyQuerier` port, one request per server; a server that fails
is reported under ``failures`` (:mod:`homeserver.e2ee.remote_keys`; without federation: 503).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from homeserver.api.local import LocalOnlyKeyQuerier
from homeserver.api.ports import RemoteKeyQuerier
from homeserver.e2ee.device_keys import with_default_counts
from homeserver.e2ee.remote_keys import ask_each_server, clamp_timeout, users_of
from homeserver.identity import LocalServer, require_user_id
from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.e2e_keys import E2EKeyStore
from sc_proto.errors import Codes, MatrixError

JsonDict = dict[str, Any]

MAX_CLAIMS_PER_REQUEST = 10_000
"""Most (user, device) pairs one ``/keys/claim`` may name (NOTSPEC: the spec sets no limit)."""


class OneTimeKeyService:
    """Claims one-time keys and reports counts.

    Args:
        server_name: our server name (local users).
        pool: the database pool.
        store: the key store.
        remote: claims other servers' users' keys (local-only: they fail).
    """

    def __init__(
        self, server_name: str, pool: DatabasePool, store: E2EKeyStore, *, remote: RemoteKeyQuerier | None = None
    ) -> None:
        self._remote: RemoteKeyQuerier = remote or LocalOnlyKeyQuerier()
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._pool = pool
        self._store = store

    def _parse_claims(
        self, one_time_keys: object
    ) -> tuple[list[tuple[str, str, str]], dict[str, dict[str, dict[str, str]]]]:
        """``(local claims, remote claims by server)`` from a ``one_time_keys`` object."""
        if not isinstance(one_time_keys, Mapping):
            raise MatrixError(400, Codes.BAD_JSON, "one_time_keys must be an object")
        claims: list[tuple[str, str, str]] = []
        remote: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, devices in one_time_keys.items():
            parsed = require_user_id(user_id, "one_time_keys")
            if not isinstance(devices, Mapping) or not all(
                isinstance(d, str) and isinstance(a, str) and a for d, a in devices.items()
            ):
                raise MatrixError(400, Codes.BAD_JSON, "one_time_keys values must map device IDs to algorithms")
            if not self._local.is_mine(parsed):
                remote.setdefault(parsed.domain, {})[user_id] = dict(devices)
                continue
            claims.extend((user_id, device_id, algorithm) for device_id, algorithm in devices.items())
            if len(claims) > MAX_CLAIMS_PER_REQUEST:
                raise MatrixError(400, Codes.INVALID_PARAM, f"At most {MAX_CLAIMS_PER_REQUEST} keys per claim")
        return claims, remote

    async def claim(self, one_time_keys: object, timeout_ms: int | None = None) -> JsonDict:
        """Answers ``/keys/claim`` (``one_time_keys``: user ID -> device ID -> algorithm).

        Args:
            one_time_keys: the request's ``one_time_keys``.
            timeout_ms: the request's ``timeout`` for remote servers (default 10 s).

        Raises:
            MatrixError: 400 for a malformed request.
        """
        claims, remote = self._parse_claims(one_time_keys)

        def claim_txn(txn: Txn) -> JsonDict:
            found: JsonDict = {}
            for user_id, device_id, algorithm in claims:
                claimed = self._store.claim_one_time_key_txn(txn, user_id, device_id, algorithm)
                if claimed is not None:
                    found.setdefault(user_id, {}).setdefault(device_id, {})[claimed[0]] = claimed[1]
            return found

        found = await self._pool.run_txn("claim_one_time_keys", claim_txn) if claims else {}
        timeout = clamp_timeout(timeout_ms)
        answers, failures = await ask_each_server({
            server: partial(self._remote.claim_keys, server, query, timeout)
            for server, query in remote.items()
        })
        for server, answer in answers.items():
            found.update(users_of(answer.get("one_time_keys"), server))
        return {"one_time_keys": found, "failures": failures}

    async def get_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        """Unclaimed one-time keys of a device per algorithm (``signed_curve25519`` always present)."""
        return with_default_counts(await self._store.count_one_time_keys(user_id, device_id))

    async def get_unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        """Algorithms of the device's fallback keys not handed out yet."""
        return await self._store.get_unused_fallback_key_types(user_id, device_id)
