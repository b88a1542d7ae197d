"""The device-lists sync source (token name ``dl``): ``device_lists``, one-time key counts and unused
fallback key types of the syncing device.

``device_lists`` is filled on incremental syncs only (after an initial sync clients query every
user they track). Membership changes count as well as key changes (see
:mod:`homeserver.e2ee.device_lists`), so the source also reads the events-stream positions of the
``since`` and ``next_batch`` tokens. Key counts are not a stream: they are read on every sync and,
alone, never end a long poll.
"""

from __future__ import annotations

from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.one_time_keys import OneTimeKeyService
from homeserver.streams.tokens import StreamToken
from homeserver.sync.sources.registry import SyncContext, SyncResult
from homeserver.sync.sources.room_events import RoomEventsSource
from sc_proto.errors import MatrixError

EVENTS = RoomEventsSource.name
"""The events stream's name in sync tokens."""


def events_range(since_token: str | None, next_batch: str | None) -> tuple[int, int]:
    """The events-stream range ``(from, to]`` between two sync tokens (empty when either is unusable)."""
    if since_token is None or next_batch is None:
        return 0, 0
    try:
        now = StreamToken.decode(next_batch, StreamToken())
        since = StreamToken.decode(since_token, now)
    except MatrixError:
        return 0, 0
    to = now.get(EVENTS)
    return min(since.get(EVENTS, to), to), to


class DeviceListsSource:
    """Fills ``device_lists``, ``device_one_time_keys_count`` and ``device_unused_fallback_key_types``.

    Args:
        tracker: the device-list tracker.
        one_time_keys: the one-time key service.
    """

    name = "dl"

    def __init__(self, tracker: DeviceListTracker, one_time_keys: OneTimeKeyService) -> None:
        self._tracker = tracker
        self._otks = one_time_keys

    async def current_position(self) -> int:
        return self._tracker.current_position()

    async def fill_initial(self, ctx: SyncContext, result: SyncResult, to_position: int) -> None:
        await self._fill_counts(ctx, result)

    async def fill_incremental(
        self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int
    ) -> None:
        events_from, events_to = events_range(ctx.since_token, ctx.next_batch)
        if from_position < to_position or events_from < events_to:
            changes = await self._tracker.get_changes(ctx.user_id, from_position, to_position, events_from, events_to)
            result.device_lists_changed.extend(changes.changed)
            result.device_lists_left.extend(changes.left)
        await self._fill_counts(ctx, result)

    async def _fill_counts(self, ctx: SyncContext, result: SyncResult) -> None:
        if ctx.device_id is None:
            return
        result.device_one_time_keys_count.update(await self._otks.get_counts(ctx.user_id, ctx.device_id))
        result.device_unused_fallback_key_types = await self._otks.get_unused_fallback_key_types(
            ctx.user_id, ctx.device_id
        )
