"""The receipts sync source (token name ``rc``): ``m.receipt`` in ``rooms.join.<room>.ephemeral``, and
the rooms' unread notification counts.

* **Receipts.** An initial sync sends the current receipts of every joined room; an incremental sync
  sends the receipts that moved in ``(since, now]`` (as deltas, one ``m.receipt`` event per room) and
  the current receipts of rooms the user has just joined. ``m.read.private`` receipts are selected
  only when they are the syncing user's own: nobody else ever receives them.
* **Unread counts.** Every joined room in the response (its timeline, state, account data, typing or
  receipts changed) gets ``unread_notifications``, computed by
  :class:`~homeserver.ephemeral.unread.UnreadCounter`; with the timeline filter's
  ``unread_thread_notifications`` the room counts cover the main timeline and
  ``unread_thread_notifications`` holds the per-thread counts (omitted when empty). A new message
  and a new own receipt both put the room in the response, so the counts are always current there.
  Registered after the room-events, account-data and typing sources, so it sees their rooms.
"""

from __future__ import annotations

from homeserver.ephemeral.receipts import receipt_content
from homeserver.ephemeral.unread import UnreadCounter
from homeserver.storage.stores.receipts import Receipt, ReceiptStore
from homeserver.sync.sources.registry import SyncContext, SyncResult
from homeserver.sync.sources.typing import ephemeral_allowed, newly_joined_rooms

RECEIPT = "m.receipt"


class ReceiptsSource:
    """Fills ``m.receipt`` ephemeral events and unread counts.

    Args:
        store: the receipt store (its tracker gives the position).
        unread: computes unread counts.
    """

    name = "rc"

    def __init__(self, store: ReceiptStore, unread: UnreadCounter) -> None:
        self._store = store
        self._unread = unread

    async def current_position(self) -> int:
        return self._store.current_position()

    def _rooms(self, ctx: SyncContext, result: SyncResult) -> set[str]:
        return {r for r in result.joined_room_ids if ephemeral_allowed(ctx, r, RECEIPT)}

    async def fill_initial(self, ctx: SyncContext, result: SyncResult, to_position: int) -> None:
        receipts = await self._store.get_room_receipts(self._rooms(ctx, result), ctx.user_id, to_position)
        self._write(result, receipts)
        await self._fill_unread(ctx, result)

    async def fill_incremental(
        self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int
    ) -> None:
        rooms = self._rooms(ctx, result)
        newly = newly_joined_rooms(ctx, result) & rooms
        receipts = await self._store.get_receipts_changed(rooms - newly, ctx.user_id, from_position, to_position)
        if newly:
            receipts += await self._store.get_room_receipts(newly, ctx.user_id, to_position)
        self._write(result, receipts)
        await self._fill_unread(ctx, result)

    @staticmethod
    def _write(result: SyncResult, receipts: list[Receipt]) -> None:
        by_room: dict[str, list[Receipt]] = {}
        for receipt in receipts:
            by_room.setdefault(receipt.room_id, []).append(receipt)
        for room_id in sorted(by_room):
            content = receipt_content(sorted(by_room[room_id], key=lambda r: r.stream_id))
            result.joined_room(room_id)["ephemeral"]["events"].append({"type": RECEIPT, "content": content})

    async def _fill_unread(self, ctx: SyncContext, result: SyncResult) -> None:
        rooms = [r for r in result.join if r in result.joined_room_ids]
        if not rooms:
            return
        threaded = ctx.filter.timeline.unread_thread_notifications
        counts = await self._unread.get_unread_counts(ctx.user_id, rooms, threaded=threaded)
        for room_id, unread in counts.items():
            entry = result.join[room_id]
            entry["unread_notifications"] = unread.room.to_json()
            if threaded and unread.threads:
                entry["unread_thread_notifications"] = {t: c.to_json() for t, c in sorted(unread.threads.items())}
