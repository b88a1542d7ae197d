"""The to-device sync source (token name ``td``): the syncing device's inbox.

Delivery and acknowledgement live in :class:`~homeserver.e2ee.to_device.ToDeviceService`: an
incremental sync acknowledges (deletes) what its ``since`` token covers, then returns what is left,
oldest first, at most 100 messages; when more wait, ``next_batch`` carries the last sent message's
position. Device-less sessions get nothing.
"""

from __future__ import annotations

from homeserver.e2ee.to_device import ToDeviceService
from homeserver.sync.sources.registry import SyncContext, SyncResult


class ToDeviceSource:
    """Fills ``to_device.events``.

    Args:
        service: the to-device service.
    """

    name = "td"

    def __init__(self, service: ToDeviceService) -> None:
        self._service = service

    async def current_position(self) -> int:
        return self._service.current_position()

    async def fill_initial(self, ctx: SyncContext, result: SyncResult, to_position: int) -> None:
        await self._fill(ctx, result, 0, to_position)

    async def fill_incremental(
        self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int
    ) -> None:
        await self._fill(ctx, result, from_position, to_position)

    async def _fill(self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int) -> None:
        if ctx.device_id is None:
            return
        events, cap = await self._service.get_for_sync(ctx.user_id, ctx.device_id, from_position, to_position)
        result.to_device.extend(events)
        if cap is not None:
            result.position_caps[self.name] = cap
