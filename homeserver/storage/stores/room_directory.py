"""Batch reads for the published room directory, and alias moves for room upgrades.

The directory lists rooms by joined-member count; a page of rooms is described with one query for
the order and one for the state event IDs of the page (the events themselves come from the cached
:class:`~homeserver.storage.stores.events.EventStore`), never one query per room.
"""

from __future__ import annotations

from collections.abc import Sequence

from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.rooms import RoomStore

# The state a directory entry is built from (all with state_key "").
DIRECTORY_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
)


class RoomDirectoryStore:
    """Reads ``rooms`` and ``current_state`` for the directory; moves ``room_aliases`` rows."""

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    async def get_public_rooms_by_size(self) -> list[tuple[int, str, int]]:
        """``(room_nid, room_id, joined_members)`` of every published room with a joined member."""

        def order_txn(txn: Txn) -> list[tuple[int, str, int]]:
            txn.execute(
                "SELECT r.room_nid, r.room_id, COUNT(cs.state_key) FROM rooms AS r"
                " JOIN current_state AS cs ON cs.room_nid = r.room_nid"
                " AND cs.type = 'm.room.member' AND cs.membership = 'join'"
                " WHERE r.is_public = ? GROUP BY r.room_nid, r.room_id",
                (True,),
            )
            return [(int(r[0]), str(r[1]), int(r[2])) for r in txn.fetchall()]

        return await self._pool.run_read("get_public_rooms_by_size", order_txn)

    async def get_directory_state_ids(self, room_nids: Sequence[int]) -> dict[int, dict[str, str]]:
        """Per room, ``type -> event_id`` of the current :data:`DIRECTORY_STATE_TYPES` events."""

        if not room_nids:
            return {}
        return await self._pool.run_read(
            "get_directory_state_ids", RoomStore.current_state_of_types_txn, self._pool.engine, room_nids,
            DIRECTORY_STATE_TYPES,
        )

    async def move_aliases(self, old_room_id: str, new_room_id: str) -> list[str]:
        """Points every alias of ``old_room_id`` at ``new_room_id``; returns the moved aliases."""

        def move_txn(txn: Txn) -> list[str]:
            txn.execute("SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY room_alias", (old_room_id,))
            moved = [str(r[0]) for r in txn.fetchall()]
            txn.execute("UPDATE room_aliases SET room_id = ? WHERE room_id = ?", (new_room_id, old_room_id))
            return moved

        return await self._pool.run_txn("move_aliases", move_txn)

    async def get_alias_rooms(self, aliases: Sequence[str]) -> dict[str, str]:
        """``alias -> room_id`` for the known aliases among ``aliases`` (one query per batch)."""

        def aliases_txn(txn: Txn) -> dict[str, str]:
            found: dict[str, str] = {}
            for fragment, args in self._pool.engine.in_list_batches("room_alias", list(aliases)):
                txn.execute(f"SELECT room_alias, room_id FROM room_aliases WHERE {fragment}", args)  # noqa: S608
                found.update((str(r[0]), str(r[1])) for r in txn.fetchall())
            return found

        if not aliases:
            return {}
        return await self._pool.run_read("get_alias_rooms", aliases_txn)
