"""The typing sync source (token name ``ty``): ``m.typing`` in ``rooms.join.<room>.ephemeral``.

An initial sync sends the typing set of every joined room where someone is typing. An incremental
sync sends the *current* set (possibly empty, which tells clients everyone stopped) of every joined
room whose set changed after ``since``, and of rooms the user has just joined. When the typing
service's change log no longer reaches back to ``since`` (a very old token), every joined room's set
is sent. The position is the :class:`~homeserver.ephemeral.typing.TypingService`'s in-memory counter.
"""

from __future__ import annotations

from homeserver.ephemeral.typing import TypingService
from homeserver.sync.sources.registry import JsonDict, SyncContext, SyncResult

TYPING = "m.typing"


def newly_joined_rooms(ctx: SyncContext, result: SyncResult) -> set[str]:
    """Joined rooms of an incremental sync that the user (re)joined in its range, or every joined room
    for ``full_state``: per-room ephemeral sources send them what an initial sync would.

    Read from the room-events source's :attr:`SyncResult.newly_joined_room_ids`, never from the
    rendered events (a filter may hide or strip the member events; ADR 0008).
    """
    if ctx.full_state:
        return set(result.joined_room_ids)
    return result.newly_joined_room_ids & result.joined_room_ids


def ephemeral_allowed(ctx: SyncContext, room_id: str, event_type: str) -> bool:
    """Whether the filter's ``room.ephemeral`` section lets ``event_type`` of ``room_id`` through."""
    flt = ctx.filter.ephemeral
    return ctx.filter.room_allowed(room_id) and flt.room_allowed(room_id) and flt.matches(event_type, None)


class TypingSource:
    """Fills ``m.typing`` ephemeral events.

    Args:
        service: the typing service.
    """

    name = "ty"

    def __init__(self, service: TypingService) -> None:
        self._service = service

    async def current_position(self) -> int:
        return self._service.position

    async def fill_initial(self, ctx: SyncContext, result: SyncResult, to_position: int) -> None:
        for room_id in sorted(result.joined_room_ids):
            users = self._service.get_typing_users(room_id)
            if users and ephemeral_allowed(ctx, room_id, TYPING):
                self._add(result, room_id, users)

    async def fill_incremental(
        self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int
    ) -> None:
        joined = result.joined_room_ids
        changed: set[str] = set()
        if from_position < to_position:
            since = self._service.rooms_changed_since(from_position)
            changed = set(joined) if since is None else since & joined
        for room_id in newly_joined_rooms(ctx, result):
            if self._service.get_typing_users(room_id):
                changed.add(room_id)
        for room_id in sorted(changed):
            if ephemeral_allowed(ctx, room_id, TYPING):
                self._add(result, room_id, self._service.get_typing_users(room_id))

    @staticmethod
    def _add(result: SyncResult, room_id: str, users: list[str]) -> None:
        event: JsonDict = {"type": TYPING, "content": {"user_ids": users}}
        result.joined_room(room_id)["ephemeral"]["events"].append(event)
