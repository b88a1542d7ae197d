"""Wires end-to-end key distribution and to-device messaging (issue 6, part 1) into a homeserver.

Part of the composition root (``homeserver/app/``). Builds, from the core objects on ``hs``:

* the ``device_lists`` and ``to_device`` streams (ids allocated in the writing transaction, wake-ups
  through ``hs.rooms.notifier``);
* the key store and services (``/keys/upload``, ``/keys/query``, ``/keys/claim``, ``/keys/changes``)
  and ``/sendToDevice``;
* the ``dl`` (device lists, one-time key counts, unused fallback key types) and ``td`` (to-device)
  sync sources;
* ``hs.api.device_keys`` (:class:`LocalDeviceKeys`, the ``DeviceKeysAPI`` for federation); remote
  users' keys and to-device messages go through ``hs.ports.keys`` and ``hs.ports.sender``;
* a device-deletion hook on ``hs.stores.devices``: deleting a device deletes its keys and inbox and
  records a device-list change in the same transaction.

Exposed on ``hs`` for tests and the cross-signing feature: ``hs.e2e_keys`` (:class:`E2EKeyStore`),
``hs.device_lists`` (:class:`DeviceListTracker`), ``hs.device_keys``, ``hs.one_time_keys``,
``hs.to_device``. ``/keys/query`` runs the hooks in ``hs.keys_query_decorators`` (a list shared with
the cross-signing feature, whichever is wired first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from homeserver.e2ee.device_keys import DeviceKeysService
from homeserver.e2ee.device_lists import STREAM as DEVICE_LISTS_STREAM
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.federation_api import LocalDeviceKeys
from homeserver.e2ee.one_time_keys import OneTimeKeyService
from homeserver.e2ee.streams import LocalStream
from homeserver.e2ee.to_device import STREAM as TO_DEVICE_STREAM
from homeserver.e2ee.to_device import ToDeviceService
from homeserver.rest.client.keys import KeyServlets
from homeserver.rest.client.to_device import ToDeviceServlets
from homeserver.storage.ids import IdAllocator
from homeserver.storage.pool import Txn
from homeserver.storage.stores.e2e_keys import DeviceListStore, E2EKeyStore
from homeserver.storage.stores.to_device import ToDeviceStore
from homeserver.sync.sources.device_lists import DeviceListsSource
from homeserver.sync.sources.to_device import ToDeviceSource

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver


async def wire(hs: Homeserver) -> None:
    """Builds and registers E2EE key distribution and to-device messaging on ``hs``."""
    pool, notifier = hs.pool, hs.rooms.notifier
    server_name = hs.config.server.server_name
    key_store = E2EKeyStore(pool)
    list_store = DeviceListStore(pool)
    inbox_store = ToDeviceStore(pool)

    list_ids = IdAllocator(pool.engine, "device_lists_stream", "stream_id", "device_lists_stream_seq")
    list_stream = LocalStream(DEVICE_LISTS_STREAM, list_ids, await list_store.get_max_stream_id(), notifier)
    inbox_ids = IdAllocator(pool.engine, "to_device_stream_hwm", "stream_id", "to_device_stream_seq")
    inbox_stream = LocalStream(TO_DEVICE_STREAM, inbox_ids, await inbox_store.get_max_stream_id(), notifier)

    tracker = DeviceListTracker(pool, list_store, list_stream)
    device_keys = DeviceKeysService(server_name, pool, key_store, tracker, hs.clock.time_msec, remote=hs.ports.keys)
    decorators: list[Any] = hs.__dict__.setdefault("keys_query_decorators", [])
    device_keys.query_extensions = decorators
    one_time_keys = OneTimeKeyService(server_name, pool, key_store, remote=hs.ports.keys)
    to_device = ToDeviceService(
        server_name, pool, inbox_store, inbox_stream, hs.clock.time_msec, sender=hs.ports.sender
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
    hs.e2e_keys = key_store  # type: ignore[attr-defined]  # feature services hang off hs
    hs.device_lists = tracker  # type: ignore[attr-defined]  # feature services hang off hs
    hs.device_keys = device_keys  # type: ignore[attr-defined]  # feature services hang off hs
    hs.one_time_keys = one_time_keys  # type: ignore[attr-defined]  # feature services hang off hs
    hs.to_device = to_device  # type: ignore[attr-defined]  # feature services hang off hs
