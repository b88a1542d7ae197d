"""Uploading and querying device keys (``/keys/upload``, ``/keys/query``).

Theory of operation: an upload is checked whole before anything is written — the device keys'
owner and device must be the session's, their signature must verify with the device's own Ed25519
key (``sc_proto.e2ee``), and one-time/fallback keys must be well formed — and then written in one
transaction: device keys, one-time keys (a re-used ID with different content aborts everything),
fallback keys, and a device-list change when the identity keys are new or different. The server
never interprets key material beyond these checks.

``/keys/query`` answers for local users from the database and asks other servers for theirs through
the :class:`~homeserver.api.ports.RemoteKeyQuerier` port (:mod:`homeserver.e2ee.remote_keys`); a
server that fails is reported under ``failures`` (without federation: every remote server, 503).
Extension hooks (``query_extensions``) let the cross-signing code add ``master_keys`` and friends and
merge uploaded signatures into the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from homeserver.api.local import LocalOnlyKeyQuerier
from homeserver.api.ports import RemoteKeyQuerier
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.remote_keys import ask_each_server, clamp_timeout, users_of
from homeserver.identity import LocalServer, require_user_id
from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.e2e_keys import E2EKeyStore, OneTimeKeyConflictError, StoredKey
from sc_proto.e2ee.keys import (
    OneTimeKey,
    canonical_key_json,
    parse_device_keys,
    parse_fallback_keys,
    parse_one_time_keys,
    verify_device_keys,
)
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

QueryExtension = Callable[[str, Mapping[str, Sequence[str]], JsonDict], Awaitable[None]]
"""``hook(requester_user_id, local_query, response)`` adds to a ``/keys/query`` response in place."""

DEFAULT_COUNTED_ALGORITHM = "signed_curve25519"
"""Always present in one-time key counts (0 when none): clients treat a missing entry inconsistently."""

REMOTE_KEY_FIELDS = ("device_keys", "master_keys", "self_signing_keys")
"""The per-user objects of a remote ``/user/keys/query`` answer merged into ours."""


def with_default_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """One-time key counts with ``signed_curve25519`` present."""
    out = dict(counts)
    out.setdefault(DEFAULT_COUNTED_ALGORITHM, 0)
    return out


def _stored(keys: Sequence[OneTimeKey]) -> list[StoredKey]:
    return [StoredKey(k.algorithm, k.key_id, canonical_key_json(k.value).decode("utf-8")) for k in keys]




class DeviceKeysService:
    """Device-key upload and query.

    Args:
        server_name: our server name (local users).
        pool: the database pool.
        store: the key store.
        device_lists: records device-list changes.
        time_msec: the clock.
        remote: queries other servers' users' keys (local-only: they fail).
    """

    def __init__(
        self,
        server_name: str,
        pool: DatabasePool,
        store: E2EKeyStore,
        device_lists: DeviceListTracker,
        time_msec: Callable[[], int],
        *,
        remote: RemoteKeyQuerier | None = None,
    ) -> None:
        self._remote: RemoteKeyQuerier = remote or LocalOnlyKeyQuerier()
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._pool = pool
        self._store = store
        self._device_lists = device_lists
        self._now = time_msec
        self.query_extensions: list[QueryExtension] = []
        """Run in order on every ``/keys/query`` response (cross-signing keys, extra signatures)."""

    async def upload(self, user_id: str, device_id: str, body: Mapping[str, Any]) -> dict[str, int]:
        """Stores a ``/keys/upload`` body for the session's device; returns the one-time key counts.

        Raises:
            MatrixError: 400 when anything is malformed, names another user or device, or a one-time
                key ID is re-used with different content; nothing is stored then.
        """
        device_json = None
        raw_device_keys = body.get("device_keys")
        if raw_device_keys is not None:
            parsed = parse_device_keys(raw_device_keys)
            if parsed.user_id != user_id or parsed.device_id != device_id:
                raise MatrixError(
                    400, Codes.INVALID_PARAM, "device_keys.user_id and device_id must match the session's user and device"
                )
            verify_device_keys(parsed)
            device_json = canonical_key_json(dict(parsed.raw)).decode("utf-8")
        raw_otks, raw_fallback = body.get("one_time_keys"), body.get("fallback_keys")
        otks = _stored(parse_one_time_keys(raw_otks)) if raw_otks is not None else []
        fallback = _stored(parse_fallback_keys(raw_fallback)) if raw_fallback is not None else []
        now = self._now()

        def upload_txn(txn: Txn) -> dict[str, int]:
            if device_json is not None and self._store.set_device_keys_txn(txn, user_id, device_id, device_json, now):
                self._device_lists.record_change_txn(txn, user_id, device_id)
            self._store.add_one_time_keys_txn(txn, user_id, device_id, otks)
            self._store.set_fallback_keys_txn(txn, user_id, device_id, fallback)
            return self._store.count_one_time_keys_txn(txn, user_id, device_id)

        try:
            counts = await self._pool.run_txn("upload_keys", upload_txn)
        except OneTimeKeyConflictError as e:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"One-time key {e.full_key_id[:120]} already exists with different content"
            ) from None
        return with_default_counts(counts)

    async def query(
        self, requester_user_id: str, device_keys: Mapping[str, Any], timeout_ms: int | None = None
    ) -> JsonDict:
        """Answers ``/keys/query`` (``device_keys``: user ID -> list of device IDs, empty for all).

        Args:
            requester_user_id: the querying user (cross-signing extensions decide what they see).
            device_keys: the request's ``device_keys``.
            timeout_ms: the request's ``timeout`` for remote servers (default 10 s).

        Raises:
            MatrixError: 400 for a malformed query.
        """
        if not isinstance(device_keys, Mapping):
            raise MatrixError(400, Codes.BAD_JSON, "device_keys must be an object")
        local: dict[str, list[str]] = {}
        remote: dict[str, dict[str, list[str]]] = {}
        for user_id, device_ids in device_keys.items():
            parsed = require_user_id(user_id, "device_keys")
            if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
                raise MatrixError(400, Codes.BAD_JSON, "device_keys values must be lists of device IDs")
            if not self._local.is_mine(parsed):
                remote.setdefault(parsed.domain, {})[user_id] = list(device_ids)
                continue
            local[user_id] = list(device_ids)
        found = await self._store.get_device_keys(local.items())
        response: JsonDict = {
            # Unknown users and devices are left out (spec: no failure is recorded for them).
            "device_keys": {user_id: found[user_id] for user_id in local if user_id in found},
        }
        for extension in self.query_extensions:
            await extension(requester_user_id, local, response)
        response["failures"] = await self._query_remote(remote, clamp_timeout(timeout_ms), response)
        return response

    async def _query_remote(
        self, remote: Mapping[str, Mapping[str, list[str]]], timeout_ms: int, response: JsonDict
    ) -> JsonDict:
        """Asks each server for its users' keys, merges the answers into ``response``; returns failures."""
        answers, failures = await ask_each_server({
            server: partial(self._remote.query_keys, server, query, timeout_ms)
            for server, query in remote.items()
        })
        for server, answer in answers.items():
            for field in REMOTE_KEY_FIELDS:
                entries = users_of(answer.get(field), server)
                if entries or field == "device_keys":
                    response.setdefault(field, {}).update(entries)
        return failures
