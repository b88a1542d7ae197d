"""A cache of which rooms each user is joined to, for presence audiences.

Theory of operation: presence goes to users who share a room, so every change asks "which rooms is
this user in?" and every read asks "do these two users share a room?". Asking the database per
change would cost a query per update; instead a user's joined rooms are loaded once (on first use)
and then kept current from the persister's ``on_persisted`` hook, which sees every committed
``m.room.member`` event of this process. A load racing with a membership change for the same user is
not cached (the next use loads again), so the cache never keeps a stale answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable


class JoinedRoomsCache:
    """``user_id -> frozenset of joined room IDs``, loaded lazily and updated from membership events.

    Args:
        load: reads a user's joined rooms from the database.
    """

    def __init__(self, load: Callable[[str], Awaitable[Iterable[str]]]) -> None:
        self._load = load
        self._rooms: dict[str, frozenset[str]] = {}
        self._loading: dict[str, bool] = {}
        """Users being loaded -> whether a membership change arrived meanwhile."""

    def cached(self, user_id: str) -> frozenset[str] | None:
        """The user's rooms if cached (no I/O)."""
        return self._rooms.get(user_id)

    async def get(self, user_id: str) -> frozenset[str]:
        """The user's joined rooms (loaded on first use)."""
        rooms = self._rooms.get(user_id)
        if rooms is not None:
            return rooms
        first = user_id not in self._loading
        if first:
            self._loading[user_id] = False
        try:
            loaded = frozenset(await self._load(user_id))
        finally:
            changed = self._loading.pop(user_id, False) if first else True
        if first and not changed:
            self._rooms[user_id] = loaded
        return loaded

    def on_membership(self, user_id: str, room_id: str, membership: str | None) -> None:
        """A committed membership event: ``user_id`` now has ``membership`` in ``room_id``."""
        if user_id in self._loading:
            self._loading[user_id] = True
        rooms = self._rooms.get(user_id)
        if rooms is None:
            return
        if membership == "join":
            self._rooms[user_id] = rooms | {room_id}
        elif room_id in rooms:
            self._rooms[user_id] = rooms - {room_id}

    def forget(self, user_id: str) -> None:
        """Drops a user's entry (e.g. they went offline and nobody needs it)."""
        self._rooms.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._rooms)
