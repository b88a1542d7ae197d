"""The account-data sync source (token name ``ad``): global and per-room account data.

Global entries go to the response's top-level ``account_data``; per-room entries go to the room's
``account_data`` in ``rooms.join`` (creating an otherwise empty entry when the room had no other
change) or ``rooms.leave`` when the room is already there. An entry keeps only its latest content, so
an incremental sync sends the latest version of each entry written in ``(from, to]``.

The position is kept in memory: read once from the database, then advanced by :meth:`on_written`,
which the composition root hooks to the store's writes (it also wakes the notifier), and by the
notifier's ``account_data`` position (writes announced by other processes).
"""

from __future__ import annotations

from homeserver.storage.stores.account_data import AccountDataChange, AccountDataStore
from homeserver.streams.notifier import Notifier
from homeserver.sync.sources.registry import JsonDict, SyncContext, SyncResult

MAX_ENTRIES = 1000
"""At most this many entries per sync (NOTSPEC: bounds a response; the rest come next time)."""


class AccountDataSource:
    """Fills ``account_data`` and ``rooms.*.account_data``.

    Args:
        store: the account data store.
        notifier: its ``account_data`` position also counts (writes announced by other processes).
    """

    name = "ad"
    stream = "account_data"

    def __init__(self, store: AccountDataStore, notifier: Notifier | None = None) -> None:
        self._store = store
        self._notifier = notifier
        self._position: int | None = None

    def on_written(self, stream_id: int) -> None:
        """Advances the position after a committed write."""
        if self._position is None or stream_id > self._position:
            self._position = stream_id

    async def current_position(self) -> int:
        if self._position is None:
            stored = await self._store.get_current_stream_id()
            self._position = stored if self._position is None else max(stored, self._position)
        announced = self._notifier.positions.get(self.stream, 0) if self._notifier is not None else 0
        return max(self._position, announced)

    async def fill_initial(self, ctx: SyncContext, result: SyncResult, to_position: int) -> None:
        changes = await self._store.get_changed_since(ctx.user_id, 0, up_to=to_position, limit=MAX_ENTRIES)
        self._fill(ctx, result, changes)

    async def fill_incremental(
        self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int
    ) -> None:
        if from_position >= to_position:
            return
        changes = await self._store.get_changed_since(
            ctx.user_id, from_position, up_to=to_position, limit=MAX_ENTRIES
        )
        self._fill(ctx, result, changes)

    @staticmethod
    def _fill(ctx: SyncContext, result: SyncResult, changes: list[AccountDataChange]) -> None:
        flt = ctx.filter
        global_limit = flt.account_data.limit
        per_room: dict[str, list[JsonDict]] = {}
        for change in changes:
            event = {"type": change.data_type, "content": change.content}
            if change.room_id is None:
                if flt.account_data.matches(change.data_type, None):
                    result.account_data.append(event)
                continue
            if not flt.room_allowed(change.room_id):
                continue
            room_filter = flt.room_account_data
            if not room_filter.room_allowed(change.room_id) or not room_filter.matches(change.data_type, None):
                continue
            per_room.setdefault(change.room_id, []).append(event)
        if global_limit is not None:
            del result.account_data[global_limit:]
        room_limit = flt.room_account_data.limit
        for room_id, events in per_room.items():
            if room_limit is not None:
                events = events[:room_limit]
            if not events:
                continue
            if room_id in result.leave:
                result.leave[room_id].setdefault("account_data", {"events": []})["events"].extend(events)
            elif room_id in result.joined_room_ids:
                result.joined_room(room_id)["account_data"]["events"].extend(events)
