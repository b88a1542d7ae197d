"""Cross-signing: uploading keys and signatures, and adding them to ``/keys/query`` answers.

Theory of operation:

* ``POST /keys/device_signing/upload`` stores a user's master, self-signing and user-signing keys.
  Each key must name the uploader and carry its usage; the self-signing and user-signing keys must be
  signed by the master key uploaded with them (or the stored one). User-interactive auth is asked for
  unless the user has no master key yet or the request repeats the stored keys exactly (the spec's
  idempotent retry), in which case nothing is written.
* ``POST /keys/signatures/upload`` accepts, per target key: signatures of the uploader's own devices by
  their self-signing key, of their own master key by their devices, and of other users' master keys
  by their user-signing key. Each signature is checked (the signed object must be the stored key
  apart from ``signatures``) and stored apart from the key; failures are reported per key in
  ``failures`` and valid signatures in the same request are still stored.
* ``/keys/query`` answers are decorated with ``master_keys`` and ``self_signing_keys`` for every
  queried user that has them, ``user_signing_keys`` only for the requester's own user, and the
  stored signatures each requester may see (spec "Key and signature security": a user-signing key's
  signatures are only shown to their owner).
* Every change records a device-list change for the affected user (``on_changed_txn``), inside the
  write transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from homeserver.auth.uia import PASSWORD, InteractiveAuth
from homeserver.storage.stores.cross_signing import ChangedHook, CrossSigningStore, StoredSignature
from sc_proto.e2ee.cross_signing import (
    MASTER,
    SELF_SIGNING,
    USER_SIGNING,
    CrossSigningError,
    CrossSigningKey,
    check_same_object,
    device_ed25519_key,
    new_signatures,
    parse_cross_signing_key,
    verify_signature,
)
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

DeviceKeysLookup = Callable[[str, Collection[str] | None], Awaitable[dict[str, JsonDict]]]
"""``lookup(user_id, device_ids or None for all)`` -> ``{device_id: device_keys_json}`` (uploaded keys)."""

DeviceIdsLookup = Callable[[str], Awaitable[Collection[str]]]
"""``lookup(user_id)`` -> the user's device IDs."""

BODY_FIELDS = {MASTER: "master_key", SELF_SIGNING: "self_signing_key", USER_SIGNING: "user_signing_key"}
"""Key usage -> its field in the device_signing/upload body."""

MAX_SIGNATURE_TARGETS = 1000
"""Most keys one ``/keys/signatures/upload`` request may sign."""


def _failure(error: MatrixError) -> JsonDict:
    return {"errcode": error.errcode.value, "error": error.message}


class CrossSigningService:
    """Cross-signing keys and signatures.

    Args:
        store: the cross-signing store.
        uia: user-interactive auth (a key replacement needs the password).
        get_device_keys: reads users' uploaded device keys.
        get_device_ids: reads a user's device IDs (cross-signing public keys may not equal one).
        time_msec: the clock.
        on_changed_txn: records a device-list change inside the write transaction.
    """

    def __init__(
        self,
        store: CrossSigningStore,
        uia: InteractiveAuth,
        get_device_keys: DeviceKeysLookup,
        get_device_ids: DeviceIdsLookup,
        time_msec: Callable[[], int],
        on_changed_txn: ChangedHook | None = None,
    ) -> None:
        self._store = store
        self._uia = uia
        self._get_device_keys = get_device_keys
        self._get_device_ids = get_device_ids
        self._now = time_msec
        self.on_changed_txn = on_changed_txn

    # ------------------------------------------------------------------ device_signing/upload

    async def upload_keys(self, user_id: str, body: Mapping[str, Any]) -> None:
        """Handles ``POST /keys/device_signing/upload`` for ``user_id``.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM``/``M_INVALID_SIGNATURE``/``M_MISSING_PARAM`` for bad keys,
                403 ``M_FORBIDDEN`` when a public key equals a device ID, 401 for UIA.
        """
        uploaded: dict[str, CrossSigningKey] = {}
        for usage, field in BODY_FIELDS.items():
            if body.get(field) is not None:
                try:
                    uploaded[usage] = parse_cross_signing_key(body[field], usage, user_id=user_id)
                except CrossSigningError as e:
                    raise MatrixError(400, e.errcode, f"{field}: {e.message}") from None
        stored = (await self._store.get_keys([user_id])).get(user_id, {})
        master = uploaded.get(MASTER)
        if master is None and MASTER in stored:
            master = parse_cross_signing_key(stored[MASTER], MASTER)
        if master is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "No master key available")
        for usage in (SELF_SIGNING, USER_SIGNING):
            if usage in uploaded:
                try:
                    verify_signature(uploaded[usage].json, user_id, master.key_id, master.public_key)
                except CrossSigningError as e:
                    raise MatrixError(400, Codes.INVALID_SIGNATURE, f"{BODY_FIELDS[usage]}: {e.message}") from None
        changed = {u: k for u, k in uploaded.items() if stored.get(u) != dict(k.json)}
        if not changed:
            return  # no new keys: an idempotent retry, no UIA and nothing to write
        device_ids = set(await self._get_device_ids(user_id))
        if any(key.public_key in device_ids for key in changed.values()):
            raise MatrixError(403, Codes.FORBIDDEN, "Key ID in use")
        if MASTER in stored:
            await self._uia.authenticate(
                "POST /keys/device_signing/upload", body, [[PASSWORD]], user_id=user_id
            )
        await self._store.set_keys(
            user_id, {u: (k.public_key, k.json) for u, k in changed.items()}, self._now(), self.on_changed_txn
        )
        logger.info("cross-signing keys uploaded: %s", ",".join(sorted(changed)), extra={"user_id": user_id})

    # ------------------------------------------------------------------ signatures/upload

    async def upload_signatures(self, user_id: str, body: Mapping[str, Any]) -> JsonDict:
        """Handles ``POST /keys/signatures/upload``; returns ``{"failures": {...}}``.

        Raises:
            MatrixError: 400 when the body is not a map of user IDs to maps of objects, or too large.
        """
        items = self._check_signatures_body(body)
        failures: dict[str, dict[str, JsonDict]] = {}
        verified: list[StoredSignature] = []
        own_keys = (await self._store.get_keys([user_id])).get(user_id, {})
        others = [u for u in items if u != user_id]
        others_keys = await self._store.get_keys(others) if others else {}
        own_devices = await self._get_device_keys(user_id, None) if user_id in items else {}
        for target_user, targets in items.items():
            for key_id, signed in targets.items():
                try:
                    if target_user == user_id:
                        found = self._check_own(user_id, key_id, signed, own_keys, own_devices)
                    else:
                        master = others_keys.get(target_user, {}).get(MASTER)
                        found = self._check_other(user_id, target_user, key_id, signed, own_keys, master)
                except MatrixError as e:
                    failures.setdefault(target_user, {})[key_id] = _failure(e)
                    continue
                verified.extend(found)
        await self._store.add_signatures(verified, self.on_changed_txn)
        if verified:
            logger.info("%d cross-signing signature(s) stored", len(verified), extra={"user_id": user_id})
        return {"failures": failures}

    @staticmethod
    def _check_signatures_body(body: Mapping[str, Any]) -> dict[str, dict[str, Mapping[str, Any]]]:
        items: dict[str, dict[str, Mapping[str, Any]]] = {}
        total = 0
        for target_user, targets in body.items():
            if not isinstance(targets, Mapping) or not all(isinstance(v, Mapping) for v in targets.values()):
                raise MatrixError(400, Codes.BAD_JSON, "Expected a map of user IDs to maps of key IDs to objects")
            total += len(targets)
            items[target_user] = dict(targets)
        if total > MAX_SIGNATURE_TARGETS:
            raise MatrixError(400, Codes.TOO_LARGE, f"At most {MAX_SIGNATURE_TARGETS} keys per request")
        return items

    def _check_own(
        self,
        user_id: str,
        key_id: str,
        signed: Mapping[str, Any],
        own_keys: Mapping[str, JsonDict],
        own_devices: Mapping[str, JsonDict],
    ) -> list[StoredSignature]:
        """Signatures of the uploader's own master key (by devices) or devices (by self-signing key)."""
        master = own_keys.get(MASTER)
        if master is not None and key_id == _public_key_of(master):
            found = []
            for signer_key_id, signature in self._new(signed, master, user_id).items():
                signer = signer_key_id.partition(":")[2]
                device = own_devices.get(signer)
                if signer == key_id:  # the master key's own signature
                    public_key = key_id
                elif signer_key_id.startswith("ed25519:") and device is not None:
                    public_key = device_ed25519_key(device, signer)
                else:
                    raise CrossSigningError("Unknown signing device", Codes.NOT_FOUND)
                verify_signature(master, user_id, signer_key_id, public_key, signature=signature)
                found.append(StoredSignature(user_id, signer_key_id, user_id, key_id, signature))
            return found
        device = own_devices.get(key_id)
        if device is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown device or key")
        self_signing = own_keys.get(SELF_SIGNING)
        if self_signing is None:
            raise CrossSigningError("No self-signing key", Codes.MISSING_PARAM)
        ssk_id = "ed25519:" + _public_key_of(self_signing)
        return self._by_one_key(signed, device, user_id, ssk_id, _public_key_of(self_signing), user_id, key_id,
                                "Devices can only be signed by the self-signing key")

    def _check_other(
        self,
        user_id: str,
        target_user: str,
        key_id: str,
        signed: Mapping[str, Any],
        own_keys: Mapping[str, JsonDict],
        master: JsonDict | None,
    ) -> list[StoredSignature]:
        """A signature of another user's master key by the uploader's user-signing key."""
        if master is None or key_id != _public_key_of(master):
            raise CrossSigningError("Only other users' master keys can be signed", Codes.INVALID_SIGNATURE)
        user_signing = own_keys.get(USER_SIGNING)
        if user_signing is None:
            raise CrossSigningError("No user-signing key", Codes.MISSING_PARAM)
        usk_id = "ed25519:" + _public_key_of(user_signing)
        return self._by_one_key(signed, master, user_id, usk_id, _public_key_of(user_signing), target_user, key_id,
                                "Other users' keys can only be signed by the user-signing key")

    def _by_one_key(
        self,
        signed: Mapping[str, Any],
        stored: Mapping[str, Any],
        user_id: str,
        signer_key_id: str,
        signer_public_key: str,
        target_user: str,
        target_key_id: str,
        wrong_signer: str,
    ) -> list[StoredSignature]:
        found = []
        for key_id, signature in self._new(signed, stored, user_id).items():
            if key_id != signer_key_id:
                raise CrossSigningError(wrong_signer, Codes.INVALID_SIGNATURE)
            verify_signature(stored, user_id, signer_key_id, signer_public_key, signature=signature)
            found.append(StoredSignature(user_id, signer_key_id, target_user, target_key_id, signature))
        return found

    @staticmethod
    def _new(signed: Mapping[str, Any], stored: Mapping[str, Any], user_id: str) -> dict[str, str]:
        check_same_object(signed, stored)
        found = new_signatures(signed, stored, user_id)
        if not found:
            raise CrossSigningError("No new signature by the uploader", Codes.INVALID_SIGNATURE)
        return found

    # ------------------------------------------------------------------ /keys/query

    async def decorate_query(self, requester_user_id: str, user_ids: Collection[str], result: JsonDict) -> None:
        """Adds cross-signing keys and visible signatures to a ``/keys/query`` response, in place.

        Args:
            requester_user_id: who queries.
            user_ids: the (local) users queried.
            result: the response, with ``device_keys`` filled in; gets ``master_keys``,
                ``self_signing_keys`` and ``user_signing_keys`` (each present, possibly empty).
        """
        users = list(dict.fromkeys(user_ids))
        keys = await self._store.get_keys(users) if users else {}
        signatures = await self._store.get_signatures_for(users) if users else []
        masters: dict[str, JsonDict] = result.setdefault("master_keys", {})
        self_signing: dict[str, JsonDict] = result.setdefault("self_signing_keys", {})
        user_signing: dict[str, JsonDict] = result.setdefault("user_signing_keys", {})
        for user_id, user_keys in keys.items():
            if MASTER in user_keys:
                masters[user_id] = user_keys[MASTER]
            if SELF_SIGNING in user_keys:
                self_signing[user_id] = user_keys[SELF_SIGNING]
            if USER_SIGNING in user_keys and user_id == requester_user_id:
                user_signing[user_id] = user_keys[USER_SIGNING]
        device_keys = result.get("device_keys") or {}
        for sig in signatures:
            # Visible: signatures by the key owner (self-signing key on devices, devices on the master
            # key), and the requester's own user-signing key's signatures of others' master keys.
            if sig.signer_user_id not in (sig.target_user_id, requester_user_id):
                continue
            master = masters.get(sig.target_user_id)
            target: JsonDict | None
            if master is not None and _public_key_of(master) == sig.target_key_id:
                target = master
            else:
                target = (device_keys.get(sig.target_user_id) or {}).get(sig.target_key_id)
                if not isinstance(target, dict) or sig.signer_user_id != sig.target_user_id:
                    continue
            target.setdefault("signatures", {}).setdefault(sig.signer_user_id, {})[sig.signer_key_id] = sig.signature


def _public_key_of(key_json: Mapping[str, Any]) -> str:
    keys = key_json.get("keys")
    if isinstance(keys, Mapping) and len(keys) == 1:
        (value,) = keys.values()
        if isinstance(value, str):
            return value
    # Stored keys were validated on upload; this means the row was edited by hand.
    raise MatrixError(500, Codes.UNKNOWN, "Stored cross-signing key is malformed: " + json.dumps(sorted(key_json)))
