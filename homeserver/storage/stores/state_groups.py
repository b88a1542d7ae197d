"""State groups: room states stored as bounded delta chains, with identical states stored once.

Theory of operation (DESIGN.md 2.6):

* A state group is either a full snapshot (``prev_group`` NULL) or a delta on ``prev_group``; a delta
  row with ``event_id`` NULL removes that key.
* Rules when storing a new state: (a) it is a delta on the state it was derived from; (b) when the
  delta chain would exceed :data:`MAX_DELTA_DEPTH` hops, or the delta holds more than a quarter of the
  full state, a full snapshot is written instead; (c) every group records the hash of its full state,
  and a state identical to an existing group of the room reuses that group.
* Reads walk at most ``MAX_DELTA_DEPTH`` hops with one recursive query (on both engines) and are cached
  in an LRU of immutable mappings. Groups are never modified once written, so the cache needs no
  invalidation (they are only deleted by purges, which also clear the cache).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from homeserver.storage.ids import IdAllocator
from homeserver.storage.pool import DatabasePool, Txn
from sc_proto.events.model import StateKey

MAX_DELTA_DEPTH = 32
StateMap = Mapping[StateKey, str]

_CHAIN_SQL = """
WITH RECURSIVE chain(group_id, prev_group, hop) AS (
    SELECT group_id, prev_group, 0 FROM state_groups WHERE group_id = ?
    UNION ALL
    SELECT g.group_id, g.prev_group, c.hop + 1
    FROM state_groups AS g JOIN chain AS c ON g.group_id = c.prev_group
    WHERE c.hop < ?
)
SELECT c.hop, r.type, r.state_key, r.event_id
FROM chain AS c JOIN state_group_rows AS r ON r.group_id = c.group_id
ORDER BY c.hop DESC
"""


def state_hash(state: StateMap) -> str:
    """A stable digest of a full state (used to store identical states once)."""
    h = hashlib.sha256()
    for (etype, skey), event_id in sorted(state.items()):
        h.update(f"{len(etype)}:{etype}{len(skey)}:{skey}{event_id}\n".encode())
    return h.hexdigest()


class StateGroupStore:
    """Reads and writes state groups.

    Args:
        pool: the database pool.
        ids: allocator for group ids.
        cache_size: how many resolved states to keep in memory.
    """

    def __init__(self, pool: DatabasePool, ids: IdAllocator, cache_size: int = 2000) -> None:
        self._pool = pool
        self._ids = ids
        self._cache: OrderedDict[int, StateMap] = OrderedDict()
        self._depth: dict[int, int] = {}
        self._cache_size = cache_size

    def _remember(self, group_id: int, state: StateMap, depth: int | None = None) -> StateMap:
        frozen: StateMap = state if isinstance(state, MappingProxyType) else MappingProxyType(dict(state))
        self._cache[group_id] = frozen
        self._cache.move_to_end(group_id)
        if depth is not None:
            self._depth[group_id] = depth
        while len(self._cache) > self._cache_size:
            old, _ = self._cache.popitem(last=False)
            self._depth.pop(old, None)
        return frozen

    def get_cached(self, group_id: int) -> StateMap | None:
        state = self._cache.get(group_id)
        if state is not None:
            self._cache.move_to_end(group_id)
        return state

    async def get_state(self, group_id: int) -> StateMap:
        """Returns the full state of a group (read-only mapping ``(type, state_key) -> event_id``)."""
        cached = self.get_cached(group_id)
        if cached is not None:
            return cached
        state = await self._pool.run_read("get_state_group", self.get_state_txn, group_id)
        return self._remember(group_id, state)

    def get_state_txn(self, txn: Txn, group_id: int) -> dict[StateKey, str]:
        """Loads a group's full state inside a transaction (no cache)."""
        txn.execute(_CHAIN_SQL, (group_id, MAX_DELTA_DEPTH + 8))
        state: dict[StateKey, str] = {}
        for _hop, etype, skey, event_id in txn.fetchall():
            if event_id is None:
                state.pop((etype, skey), None)
            else:
                state[(etype, skey)] = event_id
        return state

    def store_state_txn(
        self, txn: Txn, room_nid: int, prev_group: int | None, prev_state: StateMap | None, new_state: StateMap
    ) -> int:
        """Stores ``new_state`` (derived from ``prev_group``'s ``prev_state``) and returns its group.

        Reuses an existing group of the room with the identical state.
        """
        digest = state_hash(new_state)
        txn.execute(
            "SELECT group_id FROM state_groups WHERE room_nid = ? AND full_hash = ? LIMIT 1", (room_nid, digest)
        )
        row = txn.fetchone()
        if row is not None:
            return int(row[0])
        group_id = self._ids.next_id_txn(txn)
        delta: dict[StateKey, str | None] | None = None
        depth = 0
        if prev_group is not None and prev_state is not None:
            prev_depth = self._depth.get(prev_group)
            if prev_depth is None:
                txn.execute("SELECT delta_depth FROM state_groups WHERE group_id = ?", (prev_group,))
                depth_row = txn.fetchone()
                prev_depth = int(depth_row[0]) if depth_row else MAX_DELTA_DEPTH
            delta = {k: v for k, v in new_state.items() if prev_state.get(k) != v}
            delta.update({k: None for k in prev_state if k not in new_state})
            depth = prev_depth + 1
            if depth > MAX_DELTA_DEPTH or len(delta) * 4 > max(len(new_state), 1):
                delta = None
        rows: list[tuple[Any, ...]]
        if delta is None:
            txn.execute(
                "INSERT INTO state_groups (group_id, room_nid, prev_group, delta_depth, full_hash) VALUES (?, ?, NULL, 0, ?)",
                (group_id, room_nid, digest),
            )
            depth = 0
            rows = [(group_id, t, s, e) for (t, s), e in new_state.items()]
        else:
            txn.execute(
                "INSERT INTO state_groups (group_id, room_nid, prev_group, delta_depth, full_hash) VALUES (?, ?, ?, ?, ?)",
                (group_id, room_nid, prev_group, depth, digest),
            )
            rows = [(group_id, t, s, e) for (t, s), e in delta.items()]
        if rows:
            txn.execute_many(
                "INSERT INTO state_group_rows (group_id, type, state_key, event_id) VALUES (?, ?, ?, ?)", rows
            )
        snapshot = MappingProxyType(dict(new_state))
        txn.call_after(self._remember, group_id, snapshot, depth)
        return group_id
