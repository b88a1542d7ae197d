"""Wires end-to-end key distribution and to-device messaging (issue 6, part 1) into a homeserver.

Part of the composition root (``homeserver/app/``). Builds, from the core objects on ``hs``:

* the services over the ``device_lists`` and ``to_device`` stream writers (``hs.streams``, built
  from :mod:`homeserver.streams.registry`);
* the key store and services (``/keys/upload``, ``/keys/query``, ``/keys/claim``, ``/keys/changes``)
  and ``/sendToDevice``;
* the ``dl`` (device lists, one-time key counts, unused fallback key types) and ``td`` (to-device)
  sync sources;
* ``hs.api.device_keys`` (:class:`LocalDeviceKeys`, the ``DeviceKeysAPI`` for federation); remote
  users' keys and to-device messages go through ``hs.ports.keys`` and ``hs.ports.sender``;
* a device-deletion hook on ``hs.stores.devices``: deleting a device deletes its keys and inbox and
  records a device-list change in the same transaction.

Provides (``hs.features``): :class:`DeviceListTracker`, :class:`DeviceKeysService`,
:class:`OneTimeKeyService`, :class:`ToDeviceService` and :class:`KeysQueryExtensions`, the typed
extension point of ``/keys/query`` (the cross-signing feature adds its hook there). The key store is
``hs.stores.e2e_keys``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from homeserver.app.features import Feature, FeatureServices, Provided
from homeserver.e2ee.device_keys import DeviceKeysService, QueryExtension
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.federation_api import LocalDeviceKeys
from homeserver.e2ee.one_time_keys import OneTimeKeyService
from homeserver.e2ee.to_device import ToDeviceService
from homeserver.rest.client.keys import KeyServlets
from homeserver.rest.client.to_device import ToDeviceServlets
from homeserver.storage.pool import Txn
from homeserver.storage.stores.to_device import ToDeviceStore
from homeserver.sync.sources.device_lists import DeviceListsSource
from homeserver.sync.sources.to_device import ToDeviceSource

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver


@dataclass
class KeysQueryExtensions:
    """The ``/keys/query`` extension point: hooks that add to each answer (cross-signing keys)."""

    hooks: list[QueryExtension] = field(default_factory=list)


async def wire(hs: Homeserver, _services: FeatureServices) -> Provided:
    """Builds and registers E2EE key distribution and to-device messaging on ``hs``."""
    pool = hs.pool
    server_name = hs.config.server.server_name
    key_store = hs.stores.e2e_keys
    tracker = DeviceListTracker(pool, hs.stores.device_lists, hs.streams.device_lists)
    device_keys = DeviceKeysService(server_name, pool, key_store, tracker, hs.clock.time_msec, remote=hs.ports.keys)
    extensions = KeysQueryExtensions()
    device_keys.query_extensions = extensions.hooks
    one_time_keys = OneTimeKeyService(server_name, pool, key_store, remote=hs.ports.keys)
    to_device = ToDeviceService(
        server_name, pool, hs.stores.to_device, hs.streams.to_device, hs.clock.time_msec, sender=hs.ports.sender
    )

    def device_deleted_txn(txn: Txn, user_id: str, device_ids: Sequence[str]) -> None:
        for device_id in device_ids:
            ToDeviceStore.delete_device_txn(txn, user_id, device_id)
            if key_store.delete_device_txn(txn, user_id, device_id):
                tracker.record_change_txn(txn, user_id, device_id)

    hs.stores.devices.on_delete_txn.append(device_deleted_txn)

    KeyServlets(hs.authenticator, device_keys, one_time_keys, tracker).register(hs.resource)
    ToDeviceServlets(hs.authenticator, to_device).register(hs.resource)
    hs.sync.registry.register(DeviceListsSource(tracker, one_time_keys))
    hs.sync.registry.register(ToDeviceSource(to_device))
    hs.api.device_keys = LocalDeviceKeys(server_name, device_keys, one_time_keys, hs.stores.devices, tracker)
    return [tracker, device_keys, one_time_keys, to_device, extensions]


FEATURE = Feature(
    "e2ee_keys",
    wire,
    provides=(DeviceListTracker, DeviceKeysService, OneTimeKeyService, ToDeviceService, KeysQueryExtensions),
)
