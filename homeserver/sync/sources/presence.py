"""The presence sync source (token name ``p``): ``presence.events`` of ``/sync``.

An initial sync carries the syncing user's presence and that of every room-mate who is not offline;
an incremental sync carries the presence of the room-mates (and the user) that changed in
``(from, to]``, each once with its latest state, plus the room-mates of rooms the user just joined.
It runs after the room-events source, whose :attr:`SyncResult.joined_room_ids` says who the
room-mates are. The ``presence`` filter (types, senders, limit) applies.
"""

from __future__ import annotations

from homeserver.presence.service import PresenceService
from homeserver.sync.sources.registry import JsonDict, SyncContext, SyncResult

MAX_EVENTS = 1000
"""At most this many presence events per sync (NOTSPEC: bounds a response)."""


class PresenceSource:
    """Fills ``presence.events``.

    Args:
        service: the presence service.
    """

    name = "p"

    def __init__(self, service: PresenceService) -> None:
        self._service = service

    async def current_position(self) -> int:
        return self._service.position

    async def fill_initial(self, ctx: SyncContext, result: SyncResult, to_position: int) -> None:
        events = await self._service.get_initial(ctx.user_id, result.joined_room_ids, to_position)
        self._fill(ctx, result, events)

    async def fill_incremental(
        self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int
    ) -> None:
        events = await self._service.get_changes(ctx.user_id, result.joined_room_ids, from_position, to_position)
        self._fill(ctx, result, events)

    @staticmethod
    def _fill(ctx: SyncContext, result: SyncResult, events: list[JsonDict]) -> None:
        flt = ctx.filter.presence
        kept = [e for e in events if flt.matches(e["type"], e["sender"])]
        limit = MAX_EVENTS if flt.limit is None else min(flt.limit, MAX_EVENTS)
        result.presence.extend(kept[:limit])
