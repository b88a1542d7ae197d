"""Events, the event graph edges, redactions and client transaction IDs.

Events are immutable once persisted, except for two pieces of metadata: ``redacted_by`` (set when a
redaction arrives) and nothing else. The in-memory cache of :class:`StoredEvent` is updated by the
persister after each commit (one writer process per room; DESIGN.md 2.4).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from homeserver.storage.engines.base import DatabaseEngine
from homeserver.storage.pool import DatabasePool, Txn
from sc_proto.events.model import Event
from sc_proto.json import encode_json
from sc_proto.room_versions import get_room_version


@dataclass(frozen=True)
class StoredEvent:
    """A persisted event and the server's metadata about it."""

    event: Event
    stream_ordering: int
    room_nid: int
    outlier: bool
    rejected_reason: str | None
    state_group_before: int | None
    state_group_after: int | None
    redacted_by: str | None
    txn_id: str | None
    device_id: str | None
    received_ts: int

    @property
    def event_id(self) -> str:
        return self.event.event_id

    @property
    def depth(self) -> int:
        return self.event.depth


_EVENT_COLUMNS = (
    "e.stream_ordering, e.event_id, e.room_nid, e.outlier, e.rejected_reason, e.state_group_before,"
    " e.state_group_after, e.redacted_by, e.txn_id, e.device_id, e.received_ts, e.json, r.room_version"
)
_EVENT_FROM = "events AS e JOIN rooms AS r ON r.room_nid = e.room_nid"


def row_to_stored_event(row: Sequence[Any]) -> StoredEvent:
    """Builds a :class:`StoredEvent` from a row selected with ``_EVENT_COLUMNS``."""
    (stream, event_id, room_nid, outlier, rejected, sg_before, sg_after, redacted_by, txn_id,
     device_id, received_ts, raw_json, room_version) = row
    event = Event(json.loads(raw_json), get_room_version(room_version), event_id)
    return StoredEvent(
        event=event,
        stream_ordering=int(stream),
        room_nid=int(room_nid),
        outlier=bool(outlier),
        rejected_reason=rejected,
        state_group_before=None if sg_before is None else int(sg_before),
        state_group_after=None if sg_after is None else int(sg_after),
        redacted_by=redacted_by,
        txn_id=txn_id,
        device_id=device_id,
        received_ts=int(received_ts),
    )


class EventStore:
    """Reads events (cached) and answers event-graph questions.

    Args:
        pool: the database pool.
        cache_size: how many events to keep in memory.
    """

    def __init__(self, pool: DatabasePool, cache_size: int = 50_000) -> None:
        self._pool = pool
        self._cache: OrderedDict[str, StoredEvent] = OrderedDict()
        self._cache_size = cache_size
        self._mutations = 0
        """Bumped whenever a cached event's metadata changes (redactions): a load that overlapped a
        change may hold the row as it was before, so it is returned but not cached."""

    # ------------------------------------------------------------------ cache

    def cache_event(self, stored: StoredEvent) -> None:
        """Puts a just-persisted event into the cache (called after commit)."""
        self._cache[stored.event_id] = stored
        self._cache.move_to_end(stored.event_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def mark_redacted(self, event_id: str, redaction_id: str) -> None:
        """Records a redaction in the cache (the row was updated in the same transaction)."""
        self._mutations += 1
        stored = self._cache.get(event_id)
        if stored is not None and stored.redacted_by is None:
            self._cache[event_id] = replace(stored, redacted_by=redaction_id)

    # ------------------------------------------------------------------ reads

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        """Returns the known events among ``event_ids`` (unknown IDs are left out)."""
        wanted = list(dict.fromkeys(event_ids))
        found: dict[str, StoredEvent] = {}
        missing: list[str] = []
        for event_id in wanted:
            stored = self._cache.get(event_id)
            if stored is None:
                missing.append(event_id)
            else:
                found[event_id] = stored
        if missing:
            mutations = self._mutations
            loaded = await self._pool.run_read("get_events", self.get_events_txn, missing)
            if mutations == self._mutations:
                for stored in loaded.values():
                    self.cache_event(stored)
            found.update(loaded)
        return found

    async def get_event(self, event_id: str) -> StoredEvent | None:
        return (await self.get_events([event_id])).get(event_id)

    def get_events_txn(self, txn: Txn, event_ids: Sequence[str]) -> dict[str, StoredEvent]:
        found: dict[str, StoredEvent] = {}
        for fragment, args in self._pool.engine.in_list_batches("e.event_id", list(event_ids)):
            txn.execute(f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM} WHERE {fragment}", args)  # noqa: S608
            for row in txn.fetchall():
                stored = row_to_stored_event(row)
                found[stored.event_id] = stored
        return found

    async def get_events_by_stream(self, orderings: Sequence[int]) -> list[StoredEvent]:
        """Loads events by stream ordering, in the given order (unknown ones left out)."""

        def by_stream_txn(txn: Txn) -> list[str]:
            ids: dict[int, str] = {}
            for fragment, args in self._pool.engine.in_list_batches("stream_ordering", list(orderings)):
                txn.execute(f"SELECT stream_ordering, event_id FROM events WHERE {fragment}", args)  # noqa: S608
                ids.update((int(r[0]), r[1]) for r in txn.fetchall())
            return [ids[o] for o in orderings if o in ids]

        event_ids = await self._pool.run_read("get_events_by_stream", by_stream_txn)
        events = await self.get_events(event_ids)
        return [events[e] for e in event_ids if e in events]

    async def get_txn_event_id(self, user_id: str, device_id: str, room_id: str, txn_id: str) -> str | None:
        """The event a client transaction produced earlier, if any."""

        def txn_txn(txn: Txn) -> str | None:
            txn.execute(
                "SELECT event_id FROM event_txn_ids WHERE user_id = ? AND device_id = ? AND room_id = ? AND txn_id = ?",
                (user_id, device_id, room_id, txn_id),
            )
            row = txn.fetchone()
            return None if row is None else str(row[0])

        return await self._pool.run_read("get_txn_event_id", txn_txn)

    async def get_room_event_orderings(
        self,
        room_nid: int,
        *,
        from_key: tuple[int, int] | None,
        to_key: tuple[int, int] | None,
        backwards: bool,
        limit: int,
        types: Sequence[str] | None = None,
        not_types: Sequence[str] = (),
        senders: Sequence[str] | None = None,
        not_senders: Sequence[str] = (),
    ) -> list[str]:
        """Event IDs of a room in topological order ``(depth, stream)``, paginating from a key.

        A key ``(depth, stream)`` is a position just after that event in topological order. Going
        backwards returns events at or before ``from_key`` (newest first) and after ``to_key``; going
        forwards, events after ``from_key`` (oldest first) and at or before ``to_key``. Outliers and
        rejected events are never returned.
        """

        def page_txn(txn: Txn) -> list[str]:
            where = ["room_nid = ?", "outlier = ?", "rejected_reason IS NULL"]
            args: list[Any] = [room_nid, False]
            at_or_before = "(depth < ? OR (depth = ? AND stream_ordering <= ?))"
            after = "(depth > ? OR (depth = ? AND stream_ordering > ?))"
            order = "DESC" if backwards else "ASC"
            if from_key is not None:
                where.append(at_or_before if backwards else after)
                args += [from_key[0], from_key[0], from_key[1]]
            if to_key is not None:
                where.append(after if backwards else at_or_before)
                args += [to_key[0], to_key[0], to_key[1]]
            for column, values, negate in (
                ("type", types, False), ("type", not_types, True),
                ("sender", senders, False), ("sender", not_senders, True),
            ):
                if values is None:
                    continue
                if not values:
                    if not negate:
                        return []
                    continue
                placeholders = ", ".join("?" for _ in values)
                where.append(f"{column} {'NOT IN' if negate else 'IN'} ({placeholders})")
                args += list(values)
            txn.execute(
                f"SELECT event_id FROM events WHERE {' AND '.join(where)}"  # noqa: S608
                f" ORDER BY depth {order}, stream_ordering {order} LIMIT ?",
                [*args, limit],
            )
            return [str(r[0]) for r in txn.fetchall()]

        return await self._pool.run_read("get_room_event_orderings", page_txn)

    async def get_room_events_between_streams(
        self, room_nids: Sequence[int], from_stream: int, to_stream: int, limit_per_room: int
    ) -> dict[int, list[str]]:
        """Per room, the newest ``limit_per_room + 1`` event IDs with ``from < stream <= to`` (newest first).

        One extra event is returned so callers can tell whether the range was truncated.
        """

        def between_txn(txn: Txn) -> dict[int, list[str]]:
            result: dict[int, list[str]] = {}
            for room_nid in room_nids:
                txn.execute(
                    "SELECT event_id FROM events WHERE room_nid = ? AND stream_ordering > ? AND stream_ordering <= ?"
                    " AND outlier = ? AND rejected_reason IS NULL ORDER BY stream_ordering DESC LIMIT ?",
                    (room_nid, from_stream, to_stream, False, limit_per_room + 1),
                )
                rows = [str(r[0]) for r in txn.fetchall()]
                if rows:
                    result[room_nid] = rows
            return result

        return await self._pool.run_read("get_room_events_between_streams", between_txn)

    async def get_rooms_changed_since(self, room_nids: Sequence[int], from_stream: int) -> set[int]:
        """Which of ``room_nids`` have events after ``from_stream``."""

        def changed_txn(txn: Txn) -> set[int]:
            changed: set[int] = set()
            for fragment, args in self._pool.engine.in_list_batches("room_nid", list(room_nids)):
                txn.execute(
                    f"SELECT DISTINCT room_nid FROM events WHERE stream_ordering > ? AND {fragment}",  # noqa: S608
                    [from_stream, *args],
                )
                changed.update(int(r[0]) for r in txn.fetchall())
            return changed

        if not room_nids:
            return set()
        return await self._pool.run_read("get_rooms_changed_since", changed_txn)

    async def get_event_at_timestamp(self, room_nid: int, ts: int, forwards: bool) -> str | None:
        """The closest event to ``ts``: the first at or after it (forwards) or at or before it."""

        def ts_txn(txn: Txn) -> str | None:
            op, order = (">=", "ASC") if forwards else ("<=", "DESC")
            txn.execute(
                f"SELECT event_id FROM events WHERE room_nid = ? AND origin_server_ts {op} ?"  # noqa: S608
                f" AND outlier = ? AND rejected_reason IS NULL ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT 1",
                (room_nid, ts, False),
            )
            row = txn.fetchone()
            return None if row is None else str(row[0])

        return await self._pool.run_read("get_event_at_timestamp", ts_txn)

    async def get_room_position_at_stream(self, room_nid: int, stream: int) -> tuple[int, int] | None:
        """``(depth, stream)`` of the room's last event (by stream) with ``stream_ordering <= stream``.

        Turns a sync token's events position into a topological pagination key; None when the room had
        no event yet at that position.
        """

        def at_stream_txn(txn: Txn) -> tuple[int, int] | None:
            txn.execute(
                "SELECT depth, stream_ordering FROM events WHERE room_nid = ? AND stream_ordering <= ?"
                " AND outlier = ? AND rejected_reason IS NULL ORDER BY stream_ordering DESC LIMIT 1",
                (room_nid, stream, False),
            )
            row = txn.fetchone()
            return None if row is None else (int(row[0]), int(row[1]))

        return await self._pool.run_read("get_room_position_at_stream", at_stream_txn)

    async def get_recent_room_event_ids(
        self, bounds: Mapping[int, tuple[int, int]], limit: int
    ) -> dict[int, list[str]]:
        """Per room, the newest ``limit`` event IDs with ``lower < stream_ordering <= upper``, newest first.

        Args:
            bounds: ``room_nid -> (lower, upper)``; each room has its own range (``/sync`` ends a left
                room's timeline at the leave). One transaction, one indexed query per room.
            limit: events per room.
        """

        def recent_txn(txn: Txn) -> dict[int, list[str]]:
            result: dict[int, list[str]] = {}
            for room_nid, (lower, upper) in bounds.items():
                txn.execute(
                    "SELECT event_id FROM events WHERE room_nid = ? AND stream_ordering > ? AND stream_ordering <= ?"
                    " AND outlier = ? AND rejected_reason IS NULL ORDER BY stream_ordering DESC LIMIT ?",
                    (room_nid, lower, upper, False, limit),
                )
                result[room_nid] = [str(r[0]) for r in txn.fetchall()]
            return result

        if not bounds:
            return {}
        return await self._pool.run_read("get_recent_room_event_ids", recent_txn)

    async def get_timeline_senders_after(self, after: int, upto: int, limit: int) -> list[tuple[int, str, str]]:
        """``(stream_ordering, event_id, sender)`` of timeline events with ``after < stream <= upto``.

        Ascending, at most ``limit`` rows; outliers, soft-failed and rejected events are left out.
        Used by the federation sender's fan-out (:class:`homeserver.rooms.outbound.OutboundEventReader`).
        """

        def senders_txn(txn: Txn) -> list[tuple[int, str, str]]:
            txn.execute(
                "SELECT stream_ordering, event_id, sender FROM events WHERE stream_ordering > ?"
                " AND stream_ordering <= ? AND outlier = ? AND rejected_reason IS NULL"
                " ORDER BY stream_ordering LIMIT ?",
                (after, upto, False, limit),
            )
            return [(int(r[0]), str(r[1]), str(r[2])) for r in txn.fetchall()]

        return await self._pool.run_read("get_timeline_senders_after", senders_txn)

    async def get_max_stream_ordering(self) -> int:
        def max_txn(txn: Txn) -> int:
            txn.execute("SELECT MAX(stream_ordering) FROM events")
            row = txn.fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        return await self._pool.run_read("get_max_stream_ordering", max_txn)

    # ------------------------------------------------------------------ writes (inside the persist transaction)

    @staticmethod
    def lowest_stream_ordering_txn(txn: Txn) -> int:
        """The lowest stream ordering of any event, or 0 when it is positive (backfill goes below it)."""
        txn.execute("SELECT MIN(stream_ordering) FROM events")
        row = txn.fetchone()
        return min(0, int(row[0])) if row is not None and row[0] is not None else 0

    def insert_event_txn(
        self,
        txn: Txn,
        stored: StoredEvent,
        *,
        soft_failed: bool = False,
    ) -> None:
        """Inserts the event row and its graph edges (prev and auth events) of ``stored``."""
        event = stored.event
        txn.execute(
            "INSERT INTO events (stream_ordering, event_id, room_nid, type, state_key, sender, depth,"
            " origin_server_ts, received_ts, outlier, rejected_reason, soft_failed, state_group_before,"
            " state_group_after, membership, txn_id, device_id, json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stored.stream_ordering, event.event_id, stored.room_nid, event.type, event.state_key, event.sender,
                event.depth, event.origin_server_ts, stored.received_ts, stored.outlier, stored.rejected_reason,
                soft_failed, stored.state_group_before, stored.state_group_after, event.membership,
                stored.txn_id, stored.device_id, encode_json(dict(event.pdu)).decode("utf-8"),
            ),
        )
        if event.prev_event_ids:
            txn.execute_many(
                "INSERT INTO event_edges (event_nid, prev_event_id) VALUES (?, ?)",
                [(stored.stream_ordering, p) for p in dict.fromkeys(event.prev_event_ids)],
            )
        if event.auth_event_ids:
            txn.execute_many(
                "INSERT INTO event_auth_edges (event_nid, auth_event_id) VALUES (?, ?)",
                [(stored.stream_ordering, a) for a in dict.fromkeys(event.auth_event_ids)],
            )

    @staticmethod
    def insert_txn_id_txn(
        txn: Txn, user_id: str, device_id: str, room_id: str, txn_id: str, event_id: str, now: int
    ) -> None:
        """Records which event a client transaction ID produced."""
        txn.execute(
            "INSERT INTO event_txn_ids (user_id, device_id, room_id, txn_id, event_id, created_ts)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (user_id, device_id, room_id, txn_id, event_id, now),
        )

    @staticmethod
    def apply_redaction_txn(txn: Txn, room_nid: int, redacts: str, redaction_id: str) -> None:
        """Records that ``redaction_id`` redacts ``redacts`` (the target row is marked once)."""
        txn.execute("INSERT INTO redactions (redacts, event_id) VALUES (?, ?)", (redacts, redaction_id))
        txn.execute(
            "UPDATE events SET redacted_by = ? WHERE event_id = ? AND room_nid = ? AND redacted_by IS NULL",
            (redaction_id, redacts, room_nid),
        )

    # ------------------------------------------------------------------ reads for other stores (inside their transactions)

    @staticmethod
    def event_room_nid_txn(txn: Txn, event_id: str) -> int | None:
        """The room of a stored event, or None."""
        txn.execute("SELECT room_nid FROM events WHERE event_id = ?", (event_id,))
        row = txn.fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def is_redacted_txn(txn: Txn, event_id: str) -> bool:
        """Whether an authorised redaction applies to the event (``events.redacted_by``)."""
        txn.execute("SELECT 1 FROM events WHERE event_id = ? AND redacted_by IS NOT NULL", (event_id,))
        return txn.fetchone() is not None

    @staticmethod
    def membership_events_for_user_txn(txn: Txn, user_id: str, after_stream: int, upto_stream: int) -> list[tuple[int, str, int]]:
        """The user's timeline membership events in ``(after, upto]``: ``(room_nid, event_id, stream)`` in order."""
        txn.execute(
            "SELECT room_nid, event_id, stream_ordering FROM events WHERE type = 'm.room.member' AND state_key = ?"
            " AND stream_ordering > ? AND stream_ordering <= ? AND outlier = ? AND rejected_reason IS NULL"
            " ORDER BY stream_ordering",
            (user_id, after_stream, upto_stream, False),
        )
        return [(int(r[0]), str(r[1]), int(r[2])) for r in txn.fetchall()]

    @staticmethod
    def latest_join_streams_txn(txn: Txn, engine: DatabaseEngine, user_id: str, room_nids: Sequence[int]) -> dict[int, int]:
        """Per room, the stream ordering of ``user_id``'s latest timeline join event (never joined: absent)."""
        found: dict[int, int] = {}
        for fragment, args in engine.in_list_batches("room_nid", list(room_nids)):
            txn.execute(
                "SELECT room_nid, MAX(stream_ordering) FROM events WHERE type = 'm.room.member'"  # noqa: S608
                " AND state_key = ? AND membership = 'join' AND outlier = ? AND rejected_reason IS NULL"
                f" AND {fragment} GROUP BY room_nid",
                [user_id, False, *args],
            )
            found.update((int(r[0]), int(r[1])) for r in txn.fetchall() if r[1] is not None)
        return found

    @staticmethod
    def rooms_with_member_events_txn(txn: Txn, user_id: str, after_stream: int, upto_stream: int) -> set[int]:
        """Rooms where ``user_id``'s membership changed in ``(after, upto]`` (timeline events only)."""
        txn.execute(
            "SELECT DISTINCT room_nid FROM events WHERE type = 'm.room.member' AND state_key = ?"
            " AND stream_ordering > ? AND stream_ordering <= ? AND outlier = ? AND rejected_reason IS NULL",
            (user_id, after_stream, upto_stream, False),
        )
        return {int(r[0]) for r in txn.fetchall()}

    @staticmethod
    def membership_changes_txn(
        txn: Txn, engine: DatabaseEngine, room_nids: Iterable[int], after_stream: int, upto_stream: int
    ) -> list[tuple[int, int, str, str]]:
        """Timeline membership events of ``room_nids`` in ``(after, upto]``:
        ``(stream_ordering, room_nid, state_key, membership)`` in stream order."""
        found: list[tuple[int, int, str, str]] = []
        for fragment, args in engine.in_list_batches("room_nid", sorted(room_nids)):
            txn.execute(
                "SELECT stream_ordering, room_nid, state_key, membership FROM events"  # noqa: S608 - fragment is built
                " WHERE type = 'm.room.member' AND stream_ordering > ? AND stream_ordering <= ? AND outlier = ?"
                f" AND rejected_reason IS NULL AND {fragment}",
                [after_stream, upto_stream, False, *args],
            )
            found.extend((int(r[0]), int(r[1]), str(r[2]), str(r[3] or "")) for r in txn.fetchall())
        found.sort(key=lambda item: item[0])
        return found

    @staticmethod
    def recent_event_ids_of_types_txn(
        txn: Txn, room_nid: int, after_stream: int, types: Sequence[str], limit: int
    ) -> list[str]:
        """The newest unredacted timeline events of ``types`` after ``after_stream``, newest first."""
        marks = ", ".join("?" for _ in types)
        txn.execute(
            f"SELECT event_id FROM events WHERE room_nid = ? AND stream_ordering > ? AND type IN ({marks})"  # noqa: S608
            " AND outlier = ? AND rejected_reason IS NULL AND redacted_by IS NULL"
            " ORDER BY stream_ordering DESC LIMIT ?",
            (room_nid, after_stream, *types, False, limit),
        )
        return [str(r[0]) for r in txn.fetchall()]
