"""Rooms, their current state, memberships, forward extremities, aliases and the directory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from homeserver.storage.engines.base import DatabaseEngine
from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.events import EventStore
from sc_proto.events.model import Event, StateKey


@dataclass(frozen=True)
class RoomRecord:
    room_nid: int
    room_id: str
    room_version: str
    creator: str | None
    is_public: bool
    created_ts: int


_ROOM_COLUMNS = "room_nid, room_id, room_version, creator, is_public, created_ts"


def _row_to_room(row: Sequence[object]) -> RoomRecord:
    return RoomRecord(
        room_nid=int(row[0]),  # type: ignore[call-overload]  # BIGINT
        room_id=str(row[1]),
        room_version=str(row[2]),
        creator=None if row[3] is None else str(row[3]),
        is_public=bool(row[4]),
        created_ts=int(row[5]),  # type: ignore[call-overload]  # BIGINT
    )


class RoomStore:
    """Reads and writes ``rooms``, ``current_state``, ``forward_extremities``, ``room_aliases``."""

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool
        self._rooms_by_id: dict[str, RoomRecord] = {}
        self._rooms_by_nid: dict[int, RoomRecord] = {}

    def _remember(self, room: RoomRecord) -> RoomRecord:
        self._rooms_by_id[room.room_id] = room
        self._rooms_by_nid[room.room_nid] = room
        return room

    def forget_cached(self, room_id: str) -> None:
        room = self._rooms_by_id.pop(room_id, None)
        if room is not None:
            self._rooms_by_nid.pop(room.room_nid, None)

    # ------------------------------------------------------------------ rooms

    def insert_room_txn(self, txn: Txn, room_nid: int, room_id: str, version: str, creator: str | None, now: int) -> None:
        txn.execute(
            "INSERT INTO rooms (room_nid, room_id, room_version, creator, is_public, created_ts) VALUES (?, ?, ?, ?, ?, ?)",
            (room_nid, room_id, version, creator, False, now),
        )

    async def get_room(self, room_id: str) -> RoomRecord | None:
        cached = self._rooms_by_id.get(room_id)
        if cached is not None:
            return cached

        def get_room_txn(txn: Txn) -> RoomRecord | None:
            txn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room_id = ?", (room_id,))  # noqa: S608
            row = txn.fetchone()
            return None if row is None else _row_to_room(row)

        room = await self._pool.run_read("get_room", get_room_txn)
        return None if room is None else self._remember(room)

    async def get_rooms_by_nid(self, room_nids: Sequence[int]) -> dict[int, RoomRecord]:
        found = {n: self._rooms_by_nid[n] for n in room_nids if n in self._rooms_by_nid}
        missing = [n for n in room_nids if n not in found]
        if missing:

            def by_nid_txn(txn: Txn) -> list[RoomRecord]:
                rooms: list[RoomRecord] = []
                for fragment, args in self._pool.engine.in_list_batches("room_nid", missing):
                    txn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE {fragment}", args)  # noqa: S608
                    rooms.extend(_row_to_room(r) for r in txn.fetchall())
                return rooms

            for room in await self._pool.run_read("get_rooms_by_nid", by_nid_txn):
                found[room.room_nid] = self._remember(room)
        return found

    async def set_room_public(self, room_id: str, is_public: bool) -> None:
        await self._pool.run_txn(
            "set_room_public",
            lambda txn: txn.execute("UPDATE rooms SET is_public = ? WHERE room_id = ?", (is_public, room_id)),
        )
        self.forget_cached(room_id)

    async def get_public_room_nids(self) -> list[int]:
        def public_txn(txn: Txn) -> list[int]:
            txn.execute("SELECT room_nid FROM rooms WHERE is_public = ? ORDER BY room_nid", (True,))
            return [int(r[0]) for r in txn.fetchall()]

        return await self._pool.run_read("get_public_room_nids", public_txn)

    # ------------------------------------------------------------------ state and membership

    async def get_current_state_ids(self, room_nid: int) -> dict[StateKey, str]:
        def state_txn(txn: Txn) -> dict[StateKey, str]:
            txn.execute("SELECT type, state_key, event_id FROM current_state WHERE room_nid = ?", (room_nid,))
            return {(str(r[0]), str(r[1])): str(r[2]) for r in txn.fetchall()}

        return await self._pool.run_read("get_current_state_ids", state_txn)

    @staticmethod
    def update_current_state_txn(
        txn: Txn,
        room_nid: int,
        stream_id: int,
        old: Mapping[StateKey, str],
        new: Mapping[StateKey, str],
        memberships: Mapping[str, str | None],
    ) -> None:
        """Moves a room's ``current_state`` from ``old`` to ``new`` as a diff.

        Removed keys are deleted, added and changed keys upserted, and every changed key gets one
        ``current_state_deltas`` row at ``stream_id`` with its previous event (NULL event for a removal).

        Args:
            memberships: the ``membership`` of each new ``m.room.member`` event, by event ID.
        """
        changed = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
        for key in changed:
            txn.execute(
                "DELETE FROM current_state WHERE room_nid = ? AND type = ? AND state_key = ?", (room_nid, key[0], key[1])
            )
            event_id = new.get(key)
            if event_id is not None:
                txn.execute(
                    "INSERT INTO current_state (room_nid, type, state_key, event_id, membership) VALUES (?, ?, ?, ?, ?)",
                    (room_nid, key[0], key[1], event_id, memberships.get(event_id)),
                )
            txn.execute(
                "INSERT INTO current_state_deltas (stream_id, room_nid, type, state_key, event_id, prev_event_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (stream_id, room_nid, key[0], key[1], event_id, old.get(key)),
            )

    @staticmethod
    def advance_extremities_txn(txn: Txn, engine: DatabaseEngine, room_nid: int, event: Event) -> None:
        """Makes ``event`` a forward extremity of its room in place of its prev events."""
        for fragment, args in engine.in_list_batches("event_id", list(event.prev_event_ids)):
            txn.execute(f"DELETE FROM forward_extremities WHERE room_nid = ? AND {fragment}", [room_nid, *args])  # noqa: S608
        txn.execute("INSERT INTO forward_extremities (room_nid, event_id) VALUES (?, ?)", (room_nid, event.event_id))

    @staticmethod
    def clear_extremities_txn(txn: Txn, room_nid: int) -> None:
        """Removes every forward extremity of the room (before a join through another server)."""
        txn.execute("DELETE FROM forward_extremities WHERE room_nid = ?", (room_nid,))

    @staticmethod
    def has_current_state_txn(txn: Txn, room_nid: int, event_type: str, state_key: str) -> bool:
        """Whether the room's current state (as written so far in ``txn``) has ``(event_type, state_key)``."""
        txn.execute(
            "SELECT 1 FROM current_state WHERE room_nid = ? AND type = ? AND state_key = ?",
            (room_nid, event_type, state_key),
        )
        return txn.fetchone() is not None

    @staticmethod
    def current_state_of_types_txn(
        txn: Txn, engine: DatabaseEngine, room_nids: Sequence[int], types: Sequence[str]
    ) -> dict[int, dict[str, str]]:
        """Per room, ``type -> event_id`` of the current state events of ``types`` with an empty state key."""
        found: dict[int, dict[str, str]] = {nid: {} for nid in room_nids}
        marks = ", ".join("?" for _ in types)
        for fragment, args in engine.in_list_batches("room_nid", list(room_nids)):
            txn.execute(
                "SELECT room_nid, type, event_id FROM current_state"  # noqa: S608 - placeholders only
                f" WHERE state_key = '' AND type IN ({marks}) AND {fragment}",
                [*types, *args],
            )
            for nid, etype, event_id in txn.fetchall():
                found[int(nid)][str(etype)] = str(event_id)
        return found

    @staticmethod
    def users_sharing_room_txn(txn: Txn, user_id: str) -> set[str]:
        """Users joined to a room ``user_id`` is joined to (``user_id`` included if joined anywhere)."""
        txn.execute(
            "SELECT DISTINCT b.state_key FROM current_state AS a JOIN current_state AS b"
            " ON b.room_nid = a.room_nid AND b.type = 'm.room.member' AND b.membership = 'join'"
            " WHERE a.type = 'm.room.member' AND a.state_key = ? AND a.membership = 'join'",
            (user_id,),
        )
        return {str(r[0]) for r in txn.fetchall()}

    @staticmethod
    def joined_room_nids_txn(txn: Txn, user_id: str) -> set[int]:
        """The rooms ``user_id`` is joined to now."""
        txn.execute(
            "SELECT room_nid FROM current_state WHERE type = 'm.room.member' AND state_key = ?"
            " AND membership = 'join'",
            (user_id,),
        )
        return {int(r[0]) for r in txn.fetchall()}

    @staticmethod
    def joined_members_txn(txn: Txn, engine: DatabaseEngine, room_nids: Iterable[int]) -> dict[int, set[str]]:
        """Per room, its joined members now (rooms without any are absent)."""
        members: dict[int, set[str]] = {}
        for fragment, args in engine.in_list_batches("room_nid", sorted(room_nids)):
            txn.execute(
                "SELECT room_nid, state_key FROM current_state WHERE type = 'm.room.member'"  # noqa: S608
                f" AND membership = 'join' AND {fragment}",
                args,
            )
            for room_nid, member in txn.fetchall():
                members.setdefault(int(room_nid), set()).add(str(member))
        return members

    @staticmethod
    def joined_counts_txn(txn: Txn, engine: DatabaseEngine, room_nids: Sequence[int]) -> dict[int, int]:
        """Room nid -> joined member count now."""
        counts: dict[int, int] = {}
        for fragment, args in engine.in_list_batches("room_nid", list(room_nids)):
            txn.execute(
                "SELECT room_nid, COUNT(*) FROM current_state"  # noqa: S608
                f" WHERE type = 'm.room.member' AND membership = 'join' AND {fragment} GROUP BY room_nid",
                args,
            )
            counts.update({int(nid): int(count) for nid, count in txn.fetchall()})
        return counts

    async def get_forward_extremities(self, room_nid: int) -> list[str]:
        def fwd_txn(txn: Txn) -> list[str]:
            txn.execute("SELECT event_id FROM forward_extremities WHERE room_nid = ? ORDER BY event_id", (room_nid,))
            return [str(r[0]) for r in txn.fetchall()]

        return await self._pool.run_read("get_forward_extremities", fwd_txn)

    async def get_rooms_for_user(self, user_id: str, memberships: Sequence[str] = ("join",)) -> dict[int, str]:
        """``room_nid -> membership`` for the rooms where ``user_id``'s current membership is one of
        ``memberships``."""

        def rooms_txn(txn: Txn) -> dict[int, str]:
            placeholders = ", ".join("?" for _ in memberships)
            txn.execute(
                "SELECT room_nid, membership FROM current_state WHERE type = 'm.room.member' AND state_key = ?"  # noqa: S608
                f" AND membership IN ({placeholders})",
                [user_id, *memberships],
            )
            return {int(r[0]): str(r[1]) for r in txn.fetchall()}

        return await self._pool.run_read("get_rooms_for_user", rooms_txn)

    async def get_members(self, room_nid: int, memberships: Sequence[str] | None = None) -> dict[str, str]:
        """``user_id -> membership`` of the room's current members (all memberships by default)."""

        def members_txn(txn: Txn) -> dict[str, str]:
            txn.execute(
                "SELECT state_key, membership FROM current_state WHERE room_nid = ? AND type = 'm.room.member'",
                (room_nid,),
            )
            rows = {str(r[0]): str(r[1]) for r in txn.fetchall()}
            if memberships is not None:
                rows = {u: m for u, m in rows.items() if m in memberships}
            return rows

        return await self._pool.run_read("get_members", members_txn)

    async def get_membership_events_for_user(self, user_id: str, after_stream: int, upto_stream: int) -> list[tuple[int, str, int]]:
        """The user's membership events in ``(after, upto]``: ``(room_nid, event_id, stream)`` in order."""

        return await self._pool.run_read(
            "get_membership_events_for_user", EventStore.membership_events_for_user_txn, user_id, after_stream, upto_stream
        )

    async def get_latest_join_streams(self, user_id: str, room_nids: Sequence[int]) -> dict[int, int]:
        """Per room, the stream ordering of ``user_id``'s latest join event (rooms never joined are
        left out). History visibility ``shared`` and "was ever a member" checks use it."""

        if not room_nids:
            return {}
        return await self._pool.run_read(
            "get_latest_join_streams", EventStore.latest_join_streams_txn, self._pool.engine, user_id, room_nids
        )

    async def get_user_memberships(self, user_id: str) -> dict[int, tuple[str, str, int]]:
        """Every room where ``user_id`` has a current membership: ``room_nid -> (membership, event_id,
        stream_ordering of that membership event)`` (``/sync`` classifies rooms by it)."""

        def memberships_txn(txn: Txn) -> dict[int, tuple[str, str, int]]:
            txn.execute(
                "SELECT cs.room_nid, cs.membership, cs.event_id, e.stream_ordering FROM current_state AS cs"
                " JOIN events AS e ON e.event_id = cs.event_id"
                " WHERE cs.type = 'm.room.member' AND cs.state_key = ?",
                (user_id,),
            )
            return {int(r[0]): (str(r[1]), str(r[2]), int(r[3])) for r in txn.fetchall()}

        return await self._pool.run_read("get_user_memberships", memberships_txn)

    async def get_room_summaries(
        self, room_nids: Sequence[int], exclude_user: str, heroes: int = 5
    ) -> dict[int, tuple[int, int, list[str]]]:
        """Per room, ``(joined count, invited count, heroes)`` from the current state (``/sync`` summary).

        Heroes are the first ``heroes`` joined or invited members by stream ordering other than
        ``exclude_user``; when there are none, the first left or banned ones.
        """

        def summaries_txn(txn: Txn) -> dict[int, tuple[int, int, list[str]]]:
            counts: dict[int, dict[str, int]] = {}
            for fragment, args in self._pool.engine.in_list_batches("room_nid", list(room_nids)):
                txn.execute(
                    "SELECT room_nid, membership, COUNT(*) FROM current_state"  # noqa: S608
                    f" WHERE type = 'm.room.member' AND {fragment} GROUP BY room_nid, membership",
                    args,
                )
                for room_nid, membership, count in txn.fetchall():
                    counts.setdefault(int(room_nid), {})[str(membership)] = int(count)
            result: dict[int, tuple[int, int, list[str]]] = {}
            for room_nid in room_nids:
                found: list[str] = []
                for group in (("join", "invite"), ("leave", "ban")):
                    txn.execute(
                        "SELECT cs.state_key FROM current_state AS cs JOIN events AS e ON e.event_id = cs.event_id"
                        " WHERE cs.room_nid = ? AND cs.type = 'm.room.member' AND cs.membership IN (?, ?)"
                        " AND cs.state_key != ? ORDER BY e.stream_ordering LIMIT ?",
                        (room_nid, group[0], group[1], exclude_user, heroes),
                    )
                    found = [str(r[0]) for r in txn.fetchall()]
                    if found:
                        break
                by = counts.get(room_nid, {})
                result[room_nid] = (by.get("join", 0), by.get("invite", 0), found)
            return result

        if not room_nids:
            return {}
        return await self._pool.run_read("get_room_summaries", summaries_txn)

    async def is_forgotten(self, user_id: str, room_nid: int) -> bool:
        def forgotten_txn(txn: Txn) -> bool:
            txn.execute("SELECT 1 FROM forgotten_rooms WHERE user_id = ? AND room_nid = ?", (user_id, room_nid))
            return txn.fetchone() is not None

        return await self._pool.run_read("is_forgotten", forgotten_txn)

    async def get_forgotten_rooms(self, user_id: str) -> set[int]:
        def forgotten_txn(txn: Txn) -> set[int]:
            txn.execute("SELECT room_nid FROM forgotten_rooms WHERE user_id = ?", (user_id,))
            return {int(r[0]) for r in txn.fetchall()}

        return await self._pool.run_read("get_forgotten_rooms", forgotten_txn)

    async def forget_room(self, user_id: str, room_nid: int) -> None:
        def forget_txn(txn: Txn) -> None:
            txn.execute("DELETE FROM forgotten_rooms WHERE user_id = ? AND room_nid = ?", (user_id, room_nid))
            txn.execute("INSERT INTO forgotten_rooms (user_id, room_nid) VALUES (?, ?)", (user_id, room_nid))

        await self._pool.run_txn("forget_room", forget_txn)

    async def unforget_room(self, user_id: str, room_nid: int) -> None:
        await self._pool.run_txn(
            "unforget_room",
            lambda txn: txn.execute("DELETE FROM forgotten_rooms WHERE user_id = ? AND room_nid = ?", (user_id, room_nid)),
        )

    # ------------------------------------------------------------------ aliases

    async def create_alias(self, alias: str, room_id: str, creator: str, now: int) -> bool:
        """Creates an alias; False when it exists already."""

        def create_alias_txn(txn: Txn) -> bool:
            txn.execute("SELECT 1 FROM room_aliases WHERE room_alias = ?", (alias,))
            if txn.fetchone() is not None:
                return False
            txn.execute(
                "INSERT INTO room_aliases (room_alias, room_id, creator, created_ts) VALUES (?, ?, ?, ?)",
                (alias, room_id, creator, now),
            )
            return True

        return await self._pool.run_txn("create_alias", create_alias_txn)

    async def get_alias(self, alias: str) -> tuple[str, str] | None:
        """``(room_id, creator)`` of an alias, or None."""

        def get_alias_txn(txn: Txn) -> tuple[str, str] | None:
            txn.execute("SELECT room_id, creator FROM room_aliases WHERE room_alias = ?", (alias,))
            row = txn.fetchone()
            return None if row is None else (str(row[0]), str(row[1]))

        return await self._pool.run_read("get_alias", get_alias_txn)

    async def delete_alias(self, alias: str) -> None:
        await self._pool.run_txn(
            "delete_alias", lambda txn: txn.execute("DELETE FROM room_aliases WHERE room_alias = ?", (alias,))
        )

    async def get_aliases_for_room(self, room_id: str) -> list[str]:
        def aliases_txn(txn: Txn) -> list[str]:
            txn.execute("SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY room_alias", (room_id,))
            return [str(r[0]) for r in txn.fetchall()]

        return await self._pool.run_read("get_aliases_for_room", aliases_txn)
