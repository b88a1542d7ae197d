"""Wires dehydrated devices (MSC3814) into a homeserver.

Part of the composition root (``homeserver/app/``). Builds the store and service of
:mod:`homeserver.e2ee.dehydrated`, registers the unstable endpoints, and hooks device deletion so a
deleted device row takes its ``dehydrated_devices`` marker with it.

Requires the device-list tracker and the to-device service of ``feature_e2ee_keys``; provides
:class:`DehydratedDeviceService`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.app.features import Feature, FeatureServices, Provided
from homeserver.e2ee.dehydrated import DehydratedDeviceService, DehydratedDeviceStore
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.to_device import ToDeviceService
from homeserver.rest.client.dehydrated import DehydratedDeviceServlets

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver


async def wire(hs: Homeserver, services: FeatureServices) -> Provided:
    """Builds the dehydrated-device service and registers its endpoints on ``hs``."""
    tracker = services.get(DeviceListTracker)
    to_device = services.get(ToDeviceService)
    service = DehydratedDeviceService(
        hs.pool,
        DehydratedDeviceStore(hs.pool),
        hs.stores.devices,
        hs.stores.e2e_keys,
        hs.stores.to_device,
        tracker.record_change_txn,
        to_device.current_position,
        hs.clock.time_msec,
    )
    hs.stores.devices.on_delete_txn.append(DehydratedDeviceStore.device_deleted_txn)
    DehydratedDeviceServlets(hs.authenticator, service).register(hs.resource)
    return [service]


FEATURE = Feature(
    "dehydrated_devices",
    wire,
    requires=(DeviceListTracker, ToDeviceService),
    provides=(DehydratedDeviceService,),
)
