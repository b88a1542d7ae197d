"""Wires cross-signing and key backup (issue 6, part 2) into a homeserver.

Builds the cross-signing and key-backup stores and services, registers their servlets, and hooks
cross-signing into the device-keys part of E2EE (built by ``feature_e2ee_keys``):

* device-list changes: every cross-signing change calls ``DeviceListTracker.record_change_txn`` inside
  its write transaction (``hs.device_lists``);
* ``/keys/query``: :meth:`CrossSigningService.decorate_query` is appended to the keys service's
  ``query_extensions`` list, so answers carry ``master_keys``/``self_signing_keys``/``user_signing_keys``
  and the signatures each requester may see (the list is shared through ``hs.keys_query_decorators``,
  whichever feature is wired first creates it);
* signature checks read uploaded device keys through ``hs.e2e_keys``;
* deleting a device drops the signatures of and by it (``hs.stores.devices.on_delete_txn``).

``hs.e2e_keys`` and ``hs.device_lists`` are looked up when used, since this module is wired before
``feature_e2ee_keys`` (name order); without that feature, cross-signing still works but no device
keys can be signed and no device-list change is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from homeserver.app.composition import Homeserver
from homeserver.e2ee.cross_signing import CrossSigningService, JsonDict
from homeserver.e2ee.key_backup import KeyBackupService
from homeserver.rest.client.cross_signing import CrossSigningServlets
from homeserver.rest.client.room_keys import RoomKeysServlets
from homeserver.storage.pool import Txn
from homeserver.storage.stores.cross_signing import CrossSigningStore
from homeserver.storage.stores.key_backup import KeyBackupStore

logger = logging.getLogger(__name__)


class _DeviceKeysBridge:
    """Reaches the device-keys feature through ``hs`` at call time (it may be wired after us)."""

    def __init__(self, hs: Homeserver) -> None:
        self._hs = hs

    async def get_device_keys(self, user_id: str, device_ids: Collection[str] | None) -> dict[str, JsonDict]:
        store = getattr(self._hs, "e2e_keys", None)
        if store is None:
            return {}
        if device_ids is not None and not device_ids:
            return {}
        found: dict[str, dict[str, JsonDict]] = await store.get_device_keys([(user_id, device_ids)])
        return found.get(user_id, {})

    async def get_device_ids(self, user_id: str) -> list[str]:
        return [device.device_id for device in await self._hs.stores.devices.get_devices(user_id)]

    def record_change_txn(self, txn: Txn, user_id: str) -> None:
        tracker: Any = getattr(self._hs, "device_lists", None)
        if tracker is not None:
            tracker.record_change_txn(txn, user_id)


async def wire(hs: Homeserver) -> None:
    """Builds cross-signing and key backup and registers their endpoints on ``hs``."""
    bridge = _DeviceKeysBridge(hs)
    cross_signing = CrossSigningService(
        CrossSigningStore(hs.pool),
        hs.uia,
        bridge.get_device_keys,
        bridge.get_device_ids,
        hs.clock.time_msec,
        on_changed_txn=bridge.record_change_txn,
    )
    hs.stores.devices.on_delete_txn.append(CrossSigningStore.delete_device_signatures_txn)
    backups = KeyBackupService(KeyBackupStore(hs.pool))
    CrossSigningServlets(hs.authenticator, cross_signing).register(hs.resource)
    RoomKeysServlets(hs.authenticator, backups).register(hs.resource)
    hs.cross_signing = cross_signing  # type: ignore[attr-defined]  # feature services hang off hs
    hs.key_backups = backups  # type: ignore[attr-defined]  # feature services hang off hs
    decorators: list[Any] = hs.__dict__.setdefault("keys_query_decorators", [])
    decorators.append(cross_signing.decorate_query)
