"""The relations index (``event_relations``) and thread roots (``thread_roots``).

Theory of operation: :meth:`RelationStore.index_event_txn` runs inside the persist transaction of every
event (an ``in_txn_hooks`` hook), so the index commits atomically with the event. A relation whose
parent is known to be in another room is not indexed; one whose parent is still unknown is indexed
with the child's room, and every read checks the parent's room, so cross-room relations never show.

Redactions are not written into the index: every read joins ``events`` and skips children whose
``redacted_by`` is set (the persister sets it in the redaction's own transaction). Only
``thread_roots`` keeps derived data (a thread's latest reply); a redaction of a thread reply recomputes
it in the redaction's transaction, excluding the reply being redacted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.relations.model import (
    REL_REFERENCE,
    REL_REPLACE,
    REL_THREAD,
    parse_relation,
    replacement_shape_ok,
)
from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.events import EventStore
from sc_proto.events.model import Event

MAX_RECURSION_DEPTH = 3
"""Levels of indirect relations ``/relations?recurse=true`` follows (the spec asks for at least 3)."""

Key = tuple[int, int]
"""A topological key ``(depth, stream_ordering)``."""


@dataclass(frozen=True)
class ThreadCounts:
    """A thread's unredacted replies: how many, who sent them, and the latest one."""

    count: int
    senders: frozenset[str]
    latest_event_id: str | None


@dataclass(frozen=True)
class RelationRows:
    """The aggregation inputs of some parents, read in one transaction.

    Attributes:
        edits: parent -> ``(origin_server_ts, edit event ID)`` of each valid replacement.
        threads: parent -> its thread's counts.
        references: parent -> event IDs of its ``m.reference`` children, oldest first.
    """

    edits: dict[str, list[tuple[int, str]]]
    threads: dict[str, ThreadCounts]
    references: dict[str, list[str]]


_CHILD_JOIN = "event_relations AS r JOIN events AS c ON c.stream_ordering = r.event_nid"


class RelationStore:
    """Reads and writes the relations index.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ writes (persist transaction)

    def index_event_txn(self, txn: Txn, event: Event, stream: int, room_nid: int) -> set[str]:
        """Indexes ``event``'s relationship and applies a redaction's effect on thread roots.

        Returns:
            The event IDs whose aggregations changed (to invalidate caches after commit).
        """
        changed: set[str] = set()
        if event.type == "m.room.redaction" and event.redacts is not None:
            changed |= self._redaction_txn(txn, event.redacts, room_nid)
        relation = parse_relation(event.content)
        if relation is None or relation.parent_id == event.event_id:
            return changed
        parent_room = EventStore.event_room_nid_txn(txn, relation.parent_id)
        if parent_room is not None and parent_room != room_nid:
            return changed  # relationships across rooms are ignored (spec)
        txn.execute(
            "INSERT INTO event_relations (event_nid, event_id, relates_to_id, rel_type, room_nid, sender, type,"
            " aggregation_key, depth, origin_server_ts, replacement_ok) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stream, event.event_id, relation.parent_id, relation.rel_type, room_nid, event.sender, event.type,
                relation.key, event.depth, event.origin_server_ts,
                relation.rel_type == REL_REPLACE and replacement_shape_ok(event.type, event.state_key, event.content),
            ),
        )
        if relation.rel_type == REL_THREAD:
            txn.execute(
                "INSERT INTO thread_roots (root_event_id, room_nid, latest_event_id, latest_depth, latest_event_nid)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (root_event_id, room_nid) DO UPDATE SET"
                " latest_event_id = excluded.latest_event_id, latest_depth = excluded.latest_depth,"
                " latest_event_nid = excluded.latest_event_nid"
                " WHERE excluded.latest_depth > thread_roots.latest_depth OR (excluded.latest_depth ="
                " thread_roots.latest_depth AND excluded.latest_event_nid > thread_roots.latest_event_nid)",
                (relation.parent_id, room_nid, event.event_id, event.depth, stream),
            )
        changed.add(relation.parent_id)
        return changed

    def _redaction_txn(self, txn: Txn, target_id: str, room_nid: int) -> set[str]:
        """A redaction of ``target_id`` in ``room_nid``: recompute its thread's latest reply if it was one.

        The persister marks the target redacted later in the same transaction, when the target is in
        the redaction's room (the only case this acts on).
        """
        txn.execute(
            "SELECT relates_to_id, rel_type FROM event_relations WHERE event_id = ? AND room_nid = ?",
            (target_id, room_nid),
        )
        row = txn.fetchone()
        if row is None:
            return {target_id}
        parent_id, rel_type = str(row[0]), str(row[1])
        if rel_type == REL_THREAD:
            txn.execute(
                f"SELECT r.event_id, r.depth, r.event_nid FROM {_CHILD_JOIN} WHERE r.relates_to_id = ?"  # noqa: S608
                " AND r.rel_type = ? AND r.room_nid = ? AND c.redacted_by IS NULL AND r.event_id <> ?"
                " ORDER BY r.depth DESC, r.event_nid DESC LIMIT 1",
                (parent_id, REL_THREAD, room_nid, target_id),
            )
            latest = txn.fetchone()
            if latest is None:
                txn.execute("DELETE FROM thread_roots WHERE root_event_id = ? AND room_nid = ?", (parent_id, room_nid))
            else:
                txn.execute(
                    "UPDATE thread_roots SET latest_event_id = ?, latest_depth = ?, latest_event_nid = ?"
                    " WHERE root_event_id = ? AND room_nid = ?",
                    (latest[0], latest[1], latest[2], parent_id, room_nid),
                )
        return {target_id, parent_id}

    # ------------------------------------------------------------------ reads

    async def has_annotation(self, parent_id: str, sender: str, event_type: str, key: str) -> bool:
        """Whether ``sender`` already has an unredacted annotation of ``event_type``/``key`` on the parent."""

        def exists_txn(txn: Txn) -> bool:
            txn.execute(
                f"SELECT 1 FROM {_CHILD_JOIN} WHERE r.relates_to_id = ? AND r.rel_type = 'm.annotation'"  # noqa: S608
                " AND r.sender = ? AND r.type = ? AND r.aggregation_key = ? AND c.redacted_by IS NULL LIMIT 1",
                (parent_id, sender, event_type, key),
            )
            return txn.fetchone() is not None

        return await self._pool.run_read("has_annotation", exists_txn)

    async def get_children(
        self,
        parent_id: str,
        room_nid: int,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_key: Key | None,
        to_key: Key | None,
        backwards: bool,
        limit: int,
        recurse: bool,
    ) -> list[tuple[str, int, int]]:
        """Unredacted children of ``parent_id`` in ``room_nid`` as ``(event ID, depth, stream)``, in
        topological order (newest first when ``backwards``), paginated like ``/messages``: backwards
        returns keys at or before ``from_key`` and after ``to_key``; forwards, after ``from_key`` and at or
        before ``to_key``. With ``recurse``, children of children are included up to
        :data:`MAX_RECURSION_DEPTH` levels; the type filters apply at every level.
        """

        def children_txn(txn: Txn) -> list[tuple[str, int, int]]:
            filters = ["r.room_nid = ?", "c.redacted_by IS NULL"]
            filter_args: list[Any] = [room_nid]
            if rel_type is not None:
                filters.append("r.rel_type = ?")
                filter_args.append(rel_type)
            if event_type is not None:
                filters.append("r.type = ?")
                filter_args.append(event_type)
            cond = " AND ".join(filters)
            levels = MAX_RECURSION_DEPTH if recurse else 1
            # Only fixed fragments are interpolated; values are parameters.
            sql = (
                "WITH RECURSIVE tree (event_id, event_nid, depth, lvl) AS ("  # noqa: S608
                f" SELECT r.event_id, r.event_nid, r.depth, 1 FROM {_CHILD_JOIN} WHERE r.relates_to_id = ? AND {cond}"
                " UNION ALL"
                f" SELECT r.event_id, r.event_nid, r.depth, t.lvl + 1 FROM {_CHILD_JOIN}"
                f" JOIN tree AS t ON r.relates_to_id = t.event_id WHERE t.lvl < ? AND {cond}"
                ") SELECT event_id, depth, event_nid FROM tree"
            )
            args: list[Any] = [parent_id, *filter_args, levels, *filter_args]
            where: list[str] = []
            at_or_before = "(depth < ? OR (depth = ? AND event_nid <= ?))"
            after = "(depth > ? OR (depth = ? AND event_nid > ?))"
            if from_key is not None:
                where.append(at_or_before if backwards else after)
                args += [from_key[0], from_key[0], from_key[1]]
            if to_key is not None:
                where.append(after if backwards else at_or_before)
                args += [to_key[0], to_key[0], to_key[1]]
            order = "DESC" if backwards else "ASC"
            if where:
                sql += " WHERE " + " AND ".join(where)
            txn.execute(f"{sql} ORDER BY depth {order}, event_nid {order} LIMIT ?", [*args, limit])
            return [(str(r[0]), int(r[1]), int(r[2])) for r in txn.fetchall()]

        return await self._pool.run_read("get_relation_children", children_txn)

    async def get_thread_roots(
        self, room_nid: int, *, before: Key | None, limit: int, participant: str | None
    ) -> list[tuple[str, int, int]]:
        """Thread roots of a room as ``(root ID, latest depth, latest stream)``, most recently active
        first, whose latest reply is at or before ``before``. With ``participant``, only threads that
        user started (sent the root of) or replied to (unredacted)."""

        def roots_txn(txn: Txn) -> list[tuple[str, int, int]]:
            sql = (
                "SELECT t.root_event_id, t.latest_depth, t.latest_event_nid FROM thread_roots AS t"
                " JOIN events AS root ON root.event_id = t.root_event_id AND root.room_nid = t.room_nid"
                " WHERE t.room_nid = ?"
            )
            args: list[Any] = [room_nid]
            if before is not None:
                sql += " AND (t.latest_depth < ? OR (t.latest_depth = ? AND t.latest_event_nid <= ?))"
                args += [before[0], before[0], before[1]]
            if participant is not None:
                sql += (
                    f" AND (root.sender = ? OR EXISTS (SELECT 1 FROM {_CHILD_JOIN} WHERE r.relates_to_id ="  # noqa: S608
                    " t.root_event_id AND r.rel_type = ? AND r.room_nid = t.room_nid AND r.sender = ?"
                    " AND c.redacted_by IS NULL))"
                )
                args += [participant, REL_THREAD, participant]
            sql += " ORDER BY t.latest_depth DESC, t.latest_event_nid DESC LIMIT ?"
            txn.execute(sql, [*args, limit])
            return [(str(r[0]), int(r[1]), int(r[2])) for r in txn.fetchall()]

        return await self._pool.run_read("get_thread_roots", roots_txn)

    async def get_aggregation_rows(self, parents: Sequence[tuple[str, int]]) -> RelationRows:
        """The inputs of bundled aggregations for ``(event ID, room_nid)`` parents, in one transaction
        (a fixed number of batched queries, never one per event: audit SCALE-4)."""
        rooms = dict(parents)
        return await self._pool.run_read("get_aggregation_rows", self._aggregation_rows_txn, rooms)

    def _aggregation_rows_txn(self, txn: Txn, rooms: dict[str, int]) -> RelationRows:
        engine = self._pool.engine
        ids = list(rooms)
        edits: dict[str, list[tuple[int, str]]] = {}
        sender_counts: dict[str, dict[str, int]] = {}
        references: dict[str, list[str]] = {}
        latest: dict[str, str] = {}
        for fragment, args in engine.in_list_batches("r.relates_to_id", ids):
            # Valid replacements: same sender and type as an original that has no state key and is
            # not itself a replacement (spec "Validity of replacement events").
            txn.execute(
                f"SELECT r.relates_to_id, r.room_nid, r.origin_server_ts, r.event_id FROM {_CHILD_JOIN}"  # noqa: S608
                " JOIN events AS p ON p.event_id = r.relates_to_id"
                f" WHERE {fragment} AND r.rel_type = ? AND r.replacement_ok = ? AND c.redacted_by IS NULL"
                " AND p.sender = r.sender AND p.type = r.type AND p.state_key IS NULL AND p.room_nid = r.room_nid"
                " AND NOT EXISTS (SELECT 1 FROM event_relations AS pr WHERE pr.event_nid = p.stream_ordering"
                " AND pr.rel_type = ?)",
                [*args, REL_REPLACE, True, REL_REPLACE],
            )
            for parent, room_nid, ts, event_id in txn.fetchall():
                if rooms.get(parent) == int(room_nid):
                    edits.setdefault(parent, []).append((int(ts), str(event_id)))
            txn.execute(
                f"SELECT r.relates_to_id, r.room_nid, r.sender, COUNT(*) FROM {_CHILD_JOIN}"  # noqa: S608
                f" WHERE {fragment} AND r.rel_type = ? AND c.redacted_by IS NULL"
                " GROUP BY r.relates_to_id, r.room_nid, r.sender",
                [*args, REL_THREAD],
            )
            for parent, room_nid, sender, count in txn.fetchall():
                if rooms.get(parent) == int(room_nid):
                    sender_counts.setdefault(parent, {})[str(sender)] = int(count)
            txn.execute(
                f"SELECT r.relates_to_id, r.room_nid, r.event_id FROM {_CHILD_JOIN}"  # noqa: S608
                f" WHERE {fragment} AND r.rel_type = ? AND c.redacted_by IS NULL ORDER BY r.depth, r.event_nid",
                [*args, REL_REFERENCE],
            )
            for parent, room_nid, event_id in txn.fetchall():
                if rooms.get(parent) == int(room_nid):
                    references.setdefault(parent, []).append(str(event_id))
        for fragment, args in engine.in_list_batches("root_event_id", list(sender_counts)):
            txn.execute(
                f"SELECT root_event_id, room_nid, latest_event_id FROM thread_roots WHERE {fragment}",  # noqa: S608
                args,
            )
            for root, room_nid, latest_id in txn.fetchall():
                if rooms.get(root) == int(room_nid):
                    latest[str(root)] = str(latest_id)
        threads = {
            parent: ThreadCounts(sum(counts.values()), frozenset(counts), latest.get(parent))
            for parent, counts in sender_counts.items()
        }
        return RelationRows(edits, threads, references)
