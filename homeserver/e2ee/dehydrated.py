"""Dehydrated devices (MSC3814): a device kept in the account to receive room keys while the user
has no client running.

Theory of operation:

* **The device is an ordinary device.** ``PUT /dehydrated_device`` creates a row in ``devices`` (no
  access token), its device keys, one-time and fallback keys, and a ``dehydrated_devices`` row holding
  the client's opaque ``device_data`` (the encrypted pickle; never logged, never interpreted), all in
  one transaction. Other users' clients find it through ``/keys/query`` and ``/keys/claim`` and send
  it room keys with ``/sendToDevice`` like to any device; device-list changes are recorded as for any
  key upload.
* **One per user.** The same transaction deletes the previous dehydrated device through
  :meth:`DeviceStore.delete_devices_txn`, whose hooks delete its keys and inbox and record a
  device-list change. A device ID naming one of the user's live devices, or equal to one of their
  cross-signing public keys, is refused: a dehydrated device must never take over a session.
* **Rehydration** reads the inbox with ``POST /dehydrated_device/{device_id}/events``: at most
  :data:`MAX_EVENTS_PER_BATCH` messages after the ``next_batch`` position, oldest first. Unlike
  ``/sync`` nothing is deleted (MSC3814: an aborted rehydration can start again); the messages go
  with the device when it is replaced or deleted.
* **Deleting** the device row any other way (``DELETE /devices/{id}``, the session limit, account
  deactivation) drops the ``dehydrated_devices`` row through a device-deletion hook, so the two
  never disagree.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.devices import DeviceStore
from homeserver.storage.stores.e2e_keys import E2EKeyStore, OneTimeKeyConflictError, StoredKey
from homeserver.storage.stores.to_device import ToDeviceStore
from sc_proto.e2ee.keys import (
    OneTimeKey,
    canonical_key_json,
    parse_device_keys,
    parse_fallback_keys,
    parse_one_time_keys,
    verify_device_keys,
)
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import validate_device_id

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

MAX_DEVICE_DATA_BYTES = 256 * 1024
"""Largest ``device_data`` (canonical JSON). NOTSPEC: MSC3814 sets no limit; a pickle with a hundred
one-time keys is under 20 KiB."""

MAX_DISPLAY_NAME = 256
"""Longest ``initial_device_display_name`` (as for ``PUT /devices/{deviceId}``)."""

MAX_EVENTS_PER_BATCH = 100
"""Most to-device messages one ``/events`` call returns (the ``/sync`` recommendation)."""

_TOKEN_RE = re.compile(r"[0-9]{1,18}")

RecordChangeTxn = Callable[[Txn, str, str], object]
"""``record(txn, user_id, device_id)``: records a device-list change inside the transaction."""


@dataclass(frozen=True)
class DehydratedDevice:
    """A user's dehydrated device: its ID and the client's opaque ``device_data``."""

    device_id: str
    device_data: JsonDict


@dataclass(frozen=True)
class DehydratedUpload:
    """A checked ``PUT /dehydrated_device`` body."""

    device_id: str
    device_data_json: str
    display_name: str | None
    device_keys_json: str
    one_time_keys: list[StoredKey]
    fallback_keys: list[StoredKey]


def _stored(keys: Sequence[OneTimeKey]) -> list[StoredKey]:
    return [StoredKey(k.algorithm, k.key_id, canonical_key_json(k.value).decode("utf-8")) for k in keys]


def parse_upload(user_id: str, body: Mapping[str, Any]) -> DehydratedUpload:
    """Checks a ``PUT /dehydrated_device`` body whole (nothing is stored on failure).

    ``device_id`` is the device's Curve25519 identity key (the client's choice; MSC3814 requires it),
    ``device_data`` an object with a string ``algorithm``, ``device_keys`` the device's signed keys,
    ``one_time_keys`` and ``fallback_keys`` as for ``/keys/upload``.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM``/``M_INVALID_PARAM``/``M_BAD_JSON`` for a missing or
            malformed field, keys of another user or device, or a bad signature; 413 ``M_TOO_LARGE``
            when ``device_data`` is over :data:`MAX_DEVICE_DATA_BYTES`.
    """
    for key in ("device_id", "device_data", "device_keys"):
        if body.get(key) is None:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing {key}")
    try:
        device_id = validate_device_id(body["device_id"])
    except InvalidIdentifierError:
        raise MatrixError(400, Codes.INVALID_PARAM, "device_id is not a valid device ID") from None
    device_data = body["device_data"]
    if not isinstance(device_data, Mapping) or not isinstance(device_data.get("algorithm"), str):
        raise MatrixError(400, Codes.INVALID_PARAM, "device_data must be an object with a string algorithm")
    device_data_json = canonical_key_json(dict(device_data)).decode("utf-8")
    if len(device_data_json.encode("utf-8")) > MAX_DEVICE_DATA_BYTES:
        raise MatrixError(413, Codes.TOO_LARGE, f"device_data is larger than {MAX_DEVICE_DATA_BYTES} bytes")
    display_name = body.get("initial_device_display_name")
    if display_name is not None and (not isinstance(display_name, str) or len(display_name) > MAX_DISPLAY_NAME):
        raise MatrixError(
            400, Codes.INVALID_PARAM, f"initial_device_display_name must be a string of at most {MAX_DISPLAY_NAME} characters"
        )
    parsed = parse_device_keys(body["device_keys"])
    if parsed.user_id != user_id or parsed.device_id != device_id:
        raise MatrixError(400, Codes.INVALID_PARAM, "device_keys.user_id and device_id must be yours and device_id")
    verify_device_keys(parsed)
    raw_otks, raw_fallback = body.get("one_time_keys"), body.get("fallback_keys")
    return DehydratedUpload(
        device_id=device_id,
        device_data_json=device_data_json,
        display_name=display_name,
        device_keys_json=canonical_key_json(dict(parsed.raw)).decode("utf-8"),
        one_time_keys=_stored(parse_one_time_keys(raw_otks)) if raw_otks is not None else [],
        fallback_keys=_stored(parse_fallback_keys(raw_fallback)) if raw_fallback is not None else [],
    )


def parse_batch_token(token: object) -> int:
    """Reads a ``next_batch`` token (``None``: from the start).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when it is not a token this server issued.
    """
    if token is None:
        return 0
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise MatrixError(400, Codes.INVALID_PARAM, "next_batch is not a valid token")
    return int(token)


class DehydratedDeviceStore:
    """Reads and writes ``dehydrated_devices`` (the marker row; the device is in ``devices``).

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    @staticmethod
    def get_txn(txn: Txn, user_id: str) -> tuple[str, str] | None:
        """``(device_id, device_data_json)`` of the user's dehydrated device, if any."""
        txn.execute("SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = ?", (user_id,))
        row = txn.fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    async def get(self, user_id: str) -> tuple[str, str] | None:
        """``(device_id, device_data_json)`` of the user's dehydrated device, if any."""
        return await self._pool.run_read("get_dehydrated_device", self.get_txn, user_id)

    @staticmethod
    def insert_txn(txn: Txn, user_id: str, device_id: str, device_data_json: str, now_ms: int) -> None:
        """Marks ``device_id`` as the user's dehydrated device (the previous row must be gone)."""
        txn.execute(
            "INSERT INTO dehydrated_devices (user_id, device_id, device_data, created_ts) VALUES (?, ?, ?, ?)",
            (user_id, device_id, device_data_json, now_ms),
        )

    @staticmethod
    def device_deleted_txn(txn: Txn, user_id: str, device_ids: Sequence[str]) -> None:
        """Device-deletion hook: forgets the dehydrated device when its device row goes."""
        for device_id in device_ids:
            txn.execute("DELETE FROM dehydrated_devices WHERE user_id = ? AND device_id = ?", (user_id, device_id))

    @staticmethod
    def device_exists_txn(txn: Txn, user_id: str, device_id: str) -> bool:
        """Whether the user has a device (of any kind) with this ID."""
        txn.execute("SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id))
        return txn.fetchone() is not None

    @staticmethod
    def is_cross_signing_key_txn(txn: Txn, user_id: str, public_key: str) -> bool:
        """Whether ``public_key`` is one of the user's cross-signing public keys (device IDs may not
        equal one: signatures name both the same way)."""
        txn.execute(
            "SELECT 1 FROM e2e_cross_signing_keys WHERE user_id = ? AND public_key = ?", (user_id, public_key)
        )
        return txn.fetchone() is not None

    @staticmethod
    def add_device_txn(txn: Txn, user_id: str, device_id: str, display_name: str | None, now_ms: int) -> None:
        """Creates the device row of a dehydrated device: no token, never seen."""
        txn.execute(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES (?, ?, ?, ?)",
            (user_id, device_id, display_name, now_ms),
        )


class DehydratedDeviceService:
    """Stores, replaces, deletes and rehydrates dehydrated devices.

    Args:
        pool: the database pool.
        store: the dehydrated-device store.
        devices: the device store (deletes run its hooks: keys, inboxes, device lists).
        key_store: the E2E key store.
        inbox: the to-device store.
        record_change_txn: records a device-list change (a no-op without the E2EE keys feature).
        to_device_position: the to-device stream position below which every message is readable.
        time_msec: the clock.
    """

    def __init__(
        self,
        pool: DatabasePool,
        store: DehydratedDeviceStore,
        devices: DeviceStore,
        key_store: E2EKeyStore,
        inbox: ToDeviceStore,
        record_change_txn: RecordChangeTxn,
        to_device_position: Callable[[], int],
        time_msec: Callable[[], int],
    ) -> None:
        self._pool = pool
        self._store = store
        self._devices = devices
        self._keys = key_store
        self._inbox = inbox
        self._record_change_txn = record_change_txn
        self._to_device_position = to_device_position
        self._now = time_msec

    async def put(self, user_id: str, body: Mapping[str, Any]) -> str:
        """Replaces the user's dehydrated device with the uploaded one; returns its device ID.

        Raises:
            MatrixError: see :func:`parse_upload`; 400 ``M_INVALID_PARAM`` when the device ID is one
                of the user's other devices or cross-signing keys, or a one-time key ID repeats.
        """
        upload = parse_upload(user_id, body)
        now = self._now()

        def put_txn(txn: Txn) -> None:
            # Serialise a user's uploads on their users row (as logins do): two racing PUTs must not
            # both see "no previous device" and leave two.
            txn.execute("UPDATE users SET user_id = user_id WHERE user_id = ?", (user_id,))
            previous = self._store.get_txn(txn, user_id)
            if previous is not None:
                self._devices.delete_devices_txn(txn, user_id, [previous[0]])
            if self._store.device_exists_txn(txn, user_id, upload.device_id):
                raise MatrixError(400, Codes.INVALID_PARAM, "device_id is one of your existing devices")
            if self._store.is_cross_signing_key_txn(txn, user_id, upload.device_id):
                raise MatrixError(400, Codes.INVALID_PARAM, "device_id equals one of your cross-signing keys")
            self._store.add_device_txn(txn, user_id, upload.device_id, upload.display_name, now)
            self._store.insert_txn(txn, user_id, upload.device_id, upload.device_data_json, now)
            if self._keys.set_device_keys_txn(txn, user_id, upload.device_id, upload.device_keys_json, now):
                self._record_change_txn(txn, user_id, upload.device_id)
            self._keys.add_one_time_keys_txn(txn, user_id, upload.device_id, upload.one_time_keys)
            self._keys.set_fallback_keys_txn(txn, user_id, upload.device_id, upload.fallback_keys)

        try:
            await self._pool.run_txn("put_dehydrated_device", put_txn)
        except OneTimeKeyConflictError as e:
            raise MatrixError(400, Codes.INVALID_PARAM, f"One-time key {e.full_key_id[:120]} is repeated") from None
        logger.info("stored a dehydrated device", extra={"user_id": user_id})
        return upload.device_id

    async def get(self, user_id: str) -> DehydratedDevice | None:
        """The user's dehydrated device, or None."""
        found = await self._store.get(user_id)
        if found is None:
            return None
        device_data = _load_object(found[1])
        return DehydratedDevice(found[0], device_data)

    async def delete(self, user_id: str) -> str | None:
        """Deletes the user's dehydrated device with its keys and messages; returns its ID (None if
        there was none)."""

        def delete_txn(txn: Txn) -> str | None:
            found = self._store.get_txn(txn, user_id)
            if found is None:
                return None
            self._devices.delete_devices_txn(txn, user_id, [found[0]])
            return found[0]

        return await self._pool.run_txn("delete_dehydrated_device", delete_txn)

    async def get_events(self, user_id: str, device_id: str, next_batch: object) -> tuple[list[JsonDict], str]:
        """One batch of the dehydrated device's to-device messages after ``next_batch``.

        Returns:
            ``(events, next_batch)``: with no events left, ``next_batch`` is the token given.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` when ``device_id`` is not the user's dehydrated device;
                400 ``M_INVALID_PARAM`` for a bad token.
        """
        after = parse_batch_token(next_batch)
        found = await self._store.get(user_id)
        if found is None or found[0] != device_id:
            raise MatrixError(403, Codes.FORBIDDEN, "That is not your dehydrated device")
        rows = await self._inbox.get_messages(
            user_id, device_id, after, self._to_device_position(), MAX_EVENTS_PER_BATCH
        )
        if not rows:
            return [], str(after)
        return [message for _, message in rows], str(rows[-1][0])


def _load_object(text: str) -> JsonDict:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
