"""Wires cross-signing and key backup (issue 6, part 2) into a homeserver.

Builds the cross-signing and key-backup stores and services, registers their servlets, and hooks
cross-signing into the device-keys part of E2EE (built by ``feature_e2ee_keys``):

* device-list changes: every cross-signing change calls ``DeviceListTracker.record_change_txn`` inside
  its write transaction (required from ``feature_e2ee_keys``);
* ``/keys/query``: :meth:`CrossSigningService.decorate_query` is added to the
  :class:`KeysQueryExtensions` of ``feature_e2ee_keys``, so answers carry
  ``master_keys``/``self_signing_keys``/``user_signing_keys`` and the signatures each requester may see;
* signature checks read uploaded device keys through ``hs.stores.e2e_keys``;
* deleting a device drops the signatures of and by it (``hs.stores.devices.on_delete_txn``).

Provides :class:`CrossSigningService` and :class:`KeyBackupService`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from homeserver.app.feature_e2ee_keys import KeysQueryExtensions
from homeserver.app.features import Feature, FeatureServices, Provided
from homeserver.e2ee.cross_signing import CrossSigningService, JsonDict
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.key_backup import KeyBackupService
from homeserver.rest.client.cross_signing import CrossSigningServlets
from homeserver.rest.client.room_keys import RoomKeysServlets
from homeserver.storage.pool import Txn
from homeserver.storage.stores.cross_signing import CrossSigningStore

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver

logger = logging.getLogger(__name__)


async def wire(hs: Homeserver, services: FeatureServices) -> Provided:
    """Builds cross-signing and key backup and registers their endpoints on ``hs``."""
    key_store, devices = hs.stores.e2e_keys, hs.stores.devices
    tracker = services.get(DeviceListTracker)

    async def get_device_keys(user_id: str, device_ids: Collection[str] | None) -> dict[str, JsonDict]:
        if device_ids is not None and not device_ids:
            return {}
        found: dict[str, dict[str, JsonDict]] = await key_store.get_device_keys([(user_id, device_ids)])
        return found.get(user_id, {})

    async def get_device_ids(user_id: str) -> list[str]:
        return [device.device_id for device in await devices.get_devices(user_id)]

    def record_change_txn(txn: Txn, user_id: str) -> None:
        tracker.record_change_txn(txn, user_id)

    cross_signing = CrossSigningService(
        hs.stores.cross_signing,
        hs.uia,
        get_device_keys,
        get_device_ids,
        hs.clock.time_msec,
        on_changed_txn=record_change_txn,
    )
    devices.on_delete_txn.append(CrossSigningStore.delete_device_signatures_txn)
    backups = KeyBackupService(hs.stores.key_backup)
    CrossSigningServlets(hs.authenticator, cross_signing).register(hs.resource)
    RoomKeysServlets(hs.authenticator, backups).register(hs.resource)
    services.get(KeysQueryExtensions).hooks.append(cross_signing.decorate_query)
    return [cross_signing, backups]


FEATURE = Feature(
    "e2ee_backup",
    wire,
    requires=(DeviceListTracker, KeysQueryExtensions),
    provides=(CrossSigningService, KeyBackupService),
)
