"""Device management (spec client-server-api modules, "Device Management") and device activity.

* ``GET /_matrix/client/v3/devices``
* ``GET/PUT/DELETE /_matrix/client/v3/devices/{deviceId}``
* ``POST /_matrix/client/v3/delete_devices``

Every endpoint acts on the requester's own devices only: the store queries are keyed by the
authenticated user ID, so naming another user's device ID finds nothing (404, or silently ignored in a
bulk delete). Deleting devices ends their sessions and needs the account password again
(user-interactive auth), as the spec's security considerations advise (audit AUTH-3).

Device activity (audit AUTH-6): :class:`LastSeenTracker` records when, from where and with which client
a device was last used. :class:`ActivityTrackingAuthenticator` calls it after every successful token
authentication. Writes are throttled in memory to one per device per
:data:`LAST_SEEN_INTERVAL_MS` and are fire-and-forget: the request never waits for them, and a failed
write is only logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.server import Request

from homeserver.auth.sessions import SessionService
from homeserver.auth.uia import PASSWORD, InteractiveAuth
from homeserver.http.auth import Authenticator, Requester, TokenLookup
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import optional_str, parse_json_object_from_request, require_str_list
from homeserver.rest.client.login import client_paths
from homeserver.storage.stores.devices import DeviceRecord, DeviceStore
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

LAST_SEEN_INTERVAL_MS = 5 * 60 * 1000
"""Write a device's last-seen details at most this often (the spec allows "a few minutes" of lag)."""

MAX_DEVICE_DISPLAY_NAME = 256
"""Longest device display name accepted, in characters (NOTSPEC: the spec sets no limit)."""

MAX_DELETE_DEVICES = 1000
"""Most device IDs one ``/delete_devices`` request may name (NOTSPEC: the spec sets no limit)."""

RecordLastSeen = Callable[[str, str, "str | None", "str | None", int], Coroutine[Any, Any, None]]
"""``record(user_id, device_id, ip, user_agent, ts)``: :meth:`DeviceStore.record_last_seen`."""


class LastSeenTracker:
    """Throttled, fire-and-forget recording of device activity.

    Args:
        record: stores one device's last-seen details.
        time_msec: the clock.
        interval_ms: at most one write per device per this many milliseconds.
        max_entries: bound on the in-memory throttle table; past it, stale entries are dropped.
    """

    def __init__(
        self,
        record: RecordLastSeen,
        time_msec: Callable[[], int],
        interval_ms: int = LAST_SEEN_INTERVAL_MS,
        max_entries: int = 100_000,
    ) -> None:
        self._record = record
        self._now = time_msec
        self._interval_ms = interval_ms
        self._max_entries = max_entries
        self._last_written: dict[tuple[str, str], int] = {}

    def on_authenticated(self, requester: Requester) -> None:
        """Notes that ``requester``'s device was used now; starts a write unless one was made recently."""
        if requester.device_id is None:
            return
        key = (requester.user_id, requester.device_id)
        now = self._now()
        last = self._last_written.get(key)
        if last is not None and now - last < self._interval_ms:
            return
        self._last_written[key] = now
        if len(self._last_written) > self._max_entries:
            self._prune(now)
        write: defer.Deferred[None] = defer.ensureDeferred(
            self._record(requester.user_id, requester.device_id, requester.ip or None, requester.user_agent or None, now)
        )
        write.addErrback(self._write_failed, key)

    def _write_failed(self, failure: Failure, key: tuple[str, str]) -> None:
        # Let the next request try again rather than waiting out the interval.
        self._last_written.pop(key, None)
        logger.warning(
            "could not record device last-seen: %s", failure.getErrorMessage(),
            extra={"user_id": key[0], "device_id": key[1]},
        )

    def _prune(self, now: int) -> None:
        cutoff = now - self._interval_ms
        self._last_written = {k: ts for k, ts in self._last_written.items() if ts > cutoff}
        if len(self._last_written) > self._max_entries:
            self._last_written.clear()


class ActivityTrackingAuthenticator(Authenticator):
    """An :class:`Authenticator` that reports every authenticated requester to a callback.

    Args:
        token_lookup: the token store.
        clock_time_msec: the clock.
        allow_query_token: also accept the deprecated ``access_token`` query parameter.
        on_authenticated: called with each successfully authenticated requester; must not block.
    """

    def __init__(
        self,
        token_lookup: TokenLookup,
        clock_time_msec: Callable[[], int],
        allow_query_token: bool = False,
        *,
        on_authenticated: Callable[[Requester], None],
    ) -> None:
        super().__init__(token_lookup, clock_time_msec, allow_query_token=allow_query_token)
        self._on_authenticated = on_authenticated

    async def get_requester(
        self, request: Request, allow_guest: bool = False, allow_locked: bool = False
    ) -> Requester:
        """See :meth:`Authenticator.get_requester`; additionally reports the requester."""
        requester = await super().get_requester(request, allow_guest=allow_guest, allow_locked=allow_locked)
        try:
            self._on_authenticated(requester)
        except Exception:  # activity tracking must never fail a request
            logger.exception("device activity hook failed")
        return requester


def device_to_json(device: DeviceRecord) -> JsonDict:
    """The spec's ``Device`` object; unset optional fields are omitted (they are not nullable)."""
    body: JsonDict = {"device_id": device.device_id}
    if device.display_name is not None:
        body["display_name"] = device.display_name
    if device.last_seen_ip is not None:
        body["last_seen_ip"] = device.last_seen_ip
    if device.last_seen_ts is not None:
        body["last_seen_ts"] = device.last_seen_ts
    return body


class DeviceServlets:
    """Registers the device management endpoints.

    Args:
        authenticator: authenticates requests.
        devices: the devices store.
        sessions: ends the sessions of deleted devices.
        uia: user-interactive auth for deletions.
    """

    def __init__(
        self, authenticator: Authenticator, devices: DeviceStore, sessions: SessionService, uia: InteractiveAuth
    ) -> None:
        self._auth = authenticator
        self._devices = devices
        self._sessions = sessions
        self._uia = uia

    def register(self, resource: JsonResource) -> None:
        resource.register("GET", client_paths("/devices"), self.on_get_devices)
        resource.register("GET", client_paths("/devices/{deviceId}"), self.on_get_device)
        resource.register("PUT", client_paths("/devices/{deviceId}"), self.on_put_device)
        resource.register("DELETE", client_paths("/devices/{deviceId}"), self.on_delete_device)
        resource.register("POST", client_paths("/delete_devices"), self.on_delete_devices)

    async def _own_device(self, user_id: str, device_id: str) -> DeviceRecord:
        device = await self._devices.get_device(user_id, device_id)
        if device is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No such device")
        return device

    async def on_get_devices(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/devices"""
        requester = await self._auth.get_requester(request, allow_guest=True)
        devices = await self._devices.get_devices(requester.user_id)
        return 200, {"devices": [device_to_json(d) for d in devices]}

    async def on_get_device(self, request: Request, device_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/devices/{deviceId}"""
        requester = await self._auth.get_requester(request, allow_guest=True)
        return 200, device_to_json(await self._own_device(requester.user_id, device_id))

    async def on_put_device(self, request: Request, device_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/devices/{deviceId}

        Only renames existing devices; creating one (``201``) is for application services, which we do
        not have yet, so an unknown device is 404.
        """
        requester = await self._auth.get_requester(request, allow_guest=True)
        body = parse_json_object_from_request(request)
        display_name = optional_str(body, "display_name")
        if display_name is not None and len(display_name) > MAX_DEVICE_DISPLAY_NAME:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"'display_name' is longer than {MAX_DEVICE_DISPLAY_NAME} characters"
            )
        await self._own_device(requester.user_id, device_id)
        if display_name is not None and not await self._devices.set_display_name(
            requester.user_id, device_id, display_name
        ):
            raise MatrixError(404, Codes.NOT_FOUND, "No such device")
        return 200, {}

    async def on_delete_device(self, request: Request, device_id: str) -> tuple[int, JsonDict]:
        """DELETE /_matrix/client/v3/devices/{deviceId}

        NOTSPEC: an unknown device answers 404 before any authentication is asked for (the spec lists
        only 200 and 401), so the user is not asked for a password for nothing.
        """
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request, allow_empty=True)
        await self._own_device(requester.user_id, device_id)
        # The device ID is part of the operation, so a UIA session cannot be moved to another device.
        await self._uia.authenticate(
            f"DELETE /devices/{json.dumps(device_id)}", body, [[PASSWORD]], user_id=requester.user_id
        )
        await self._sessions.end_device_sessions(requester.user_id, [device_id])
        logger.info("device deleted", extra={"user_id": requester.user_id, "device_id": device_id})
        return 200, {}

    async def on_delete_devices(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/delete_devices

        Device IDs the user does not have are ignored.
        """
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request)
        device_ids = sorted(set(require_str_list(body, "devices")))
        if len(device_ids) > MAX_DELETE_DEVICES:
            raise MatrixError(400, Codes.INVALID_PARAM, f"At most {MAX_DELETE_DEVICES} devices per request")
        await self._uia.authenticate(
            f"POST /delete_devices {json.dumps(device_ids)}", body, [[PASSWORD]], user_id=requester.user_id
        )
        if device_ids:
            await self._sessions.end_device_sessions(requester.user_id, device_ids)
        logger.info("%d device(s) deleted", len(device_ids), extra={"user_id": requester.user_id})
        return 200, {}
