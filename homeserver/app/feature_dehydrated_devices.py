"""Wires dehydrated devices (MSC3814) into a homeserver.

Part of the composition root (``homeserver/app/``). Builds the store and service of
:mod:`homeserver.e2ee.dehydrated`, registers the unstable endpoints, and hooks device deletion so a
deleted device row takes its ``dehydrated_devices`` marker with it.

This module is wired before ``feature_e2ee_keys`` (name order), so the device-list tracker and the
to-device stream (``hs.device_lists``, ``hs.to_device``) are looked up when used; without that
feature no device-list change is recorded and no message is readable.

Exposed on ``hs`` for tests: ``hs.dehydrated_devices`` (:class:`DehydratedDeviceService`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.e2ee.dehydrated import DehydratedDeviceService, DehydratedDeviceStore
from homeserver.rest.client.dehydrated import DehydratedDeviceServlets
from homeserver.storage.pool import Txn
from homeserver.storage.stores.e2e_keys import E2EKeyStore
from homeserver.storage.stores.to_device import ToDeviceStore

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver


class _E2EEBridge:
    """Reaches the E2EE keys feature through ``hs`` at call time (it is wired after us)."""

    def __init__(self, hs: Homeserver) -> None:
        self._hs = hs

    def record_change_txn(self, txn: Txn, user_id: str, device_id: str) -> None:
        tracker: Any = getattr(self._hs, "device_lists", None)
        if tracker is not None:
            tracker.record_change_txn(txn, user_id, device_id)

    def to_device_position(self) -> int:
        service: Any = getattr(self._hs, "to_device", None)
        return int(service.current_position()) if service is not None else 0


async def wire(hs: Homeserver) -> None:
    """Builds the dehydrated-device service and registers its endpoints on ``hs``."""
    bridge = _E2EEBridge(hs)
    store = DehydratedDeviceStore(hs.pool)
    service = DehydratedDeviceService(
        hs.pool,
        store,
        hs.stores.devices,
        E2EKeyStore(hs.pool),
        ToDeviceStore(hs.pool),
        bridge.record_change_txn,
        bridge.to_device_position,
        hs.clock.time_msec,
    )
    hs.stores.devices.on_delete_txn.append(DehydratedDeviceStore.device_deleted_txn)
    DehydratedDeviceServlets(hs.authenticator, service).register(hs.resource)
    hs.dehydrated_devices = service  # type: ignore[attr-defined]  # feature services hang off hs
