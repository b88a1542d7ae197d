"""The core's :class:`~homeserver.api.services.DeviceKeysAPI`: our users' keys, for other servers' queries.

The federation adapter answers ``/user/keys/query``, ``/user/keys/claim`` and ``/user/devices`` with
this object. Only local users are answered (a query naming another server's users leaves them out:
servers answer for their own users only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from homeserver.e2ee.device_keys import DeviceKeysService
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.one_time_keys import OneTimeKeyService
from homeserver.identity import LocalServer
from homeserver.storage.stores.devices import DeviceStore

JsonDict = dict[str, Any]

FEDERATION_REQUESTER = ""
"""The requester passed to ``/keys/query`` extensions for a server's query: no local user."""


class LocalDeviceKeys:
    """Our users' device keys and one-time keys for other servers (satisfies ``DeviceKeysAPI``).

    Args:
        server_name: our server name.
        device_keys: the ``/keys/query`` service.
        one_time_keys: the ``/keys/claim`` service.
        devices: the device store (display names for ``/user/devices``).
        device_lists: the device-list tracker (``stream_id`` for ``/user/devices``).
    """

    def __init__(
        self,
        server_name: str,
        device_keys: DeviceKeysService,
        one_time_keys: OneTimeKeyService,
        devices: DeviceStore,
        device_lists: DeviceListTracker,
    ) -> None:
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._device_keys = device_keys
        self._one_time_keys = one_time_keys
        self._devices = devices
        self._device_lists = device_lists

    def _is_local(self, user_id: object) -> bool:
        return isinstance(user_id, str) and self._local.is_mine(user_id)

    async def query_local_keys(self, device_keys: Mapping[str, Sequence[str]]) -> JsonDict:
        """``/user/keys/query`` body: ``device_keys`` and cross-signing keys of our users."""
        local = {u: list(d) for u, d in device_keys.items() if self._is_local(u)}
        response = await self._device_keys.query(FEDERATION_REQUESTER, local)
        response.pop("failures", None)
        return response

    async def claim_local_keys(self, one_time_keys: Mapping[str, Mapping[str, str]]) -> JsonDict:
        """``/user/keys/claim`` body for our users (each claim atomic)."""
        local = {u: dict(d) for u, d in one_time_keys.items() if self._is_local(u)}
        response = await self._one_time_keys.claim(local)
        return {"one_time_keys": response["one_time_keys"]}

    async def get_user_devices(self, user_id: str) -> JsonDict:
        """``/user/devices/{userId}`` body for one of our users (no devices for others)."""
        body: JsonDict = {"user_id": user_id, "stream_id": self._device_lists.current_position(), "devices": []}
        if not self._is_local(user_id):
            return body
        keys = await self.query_local_keys({user_id: []})
        device_keys = keys.get("device_keys", {}).get(user_id, {})
        for device in await self._devices.get_devices(user_id):
            entry: JsonDict = {"device_id": device.device_id}
            if device.device_id in device_keys:
                entry["keys"] = device_keys[device.device_id]
            if device.display_name is not None:
                entry["device_display_name"] = device.display_name
            body["devices"].append(entry)
        for field, key in (("master_keys", "master_key"), ("self_signing_keys", "self_signing_key")):
            found = keys.get(field, {}).get(user_id)
            if found is not None:
                body[key] = found
        return body
