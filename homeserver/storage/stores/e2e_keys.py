"""End-to-end key storage: device identity keys, one-time and fallback keys, and the device-list stream.

Theory of operation:

* **Device keys** are stored as uploaded (canonical JSON, without ``unsigned``), one row per device;
  ``/keys/query`` adds ``unsigned.device_display_name`` from ``devices`` when it reads them. Only
  devices that still exist are returned.
* **One-time keys** are rows that a claim deletes: :meth:`E2EKeyStore.claim_one_time_key_txn` runs
  ``DELETE ... RETURNING`` on the oldest row inside the claim transaction. On SQLite writes are
  serialised on one connection; on PostgreSQL (``REPEATABLE READ``) a second transaction deleting the
  same row fails to serialise and the pool retries it on a fresh snapshot, where the row is gone. So a
  key is handed out at most once (spec: "each one-time key is returned at most once").
* **Fallback keys**: one per (device, algorithm), replaced by a new upload (an identical re-upload
  keeps its ``used`` flag), marked used when a claim falls back to it, never deleted by a claim.
* **Device lists**: ``device_lists_stream`` has one row per change with a stream id allocated in the
  writing transaction. Membership queries here read ``current_state``/``events`` (the rooms core's
  tables) to answer "who shares a room with whom"; they never write them.

Every ``*_txn`` method runs inside the caller's transaction so a service can combine them atomically.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.events import EventStore
from homeserver.storage.stores.rooms import RoomStore

JsonDict = dict[str, Any]


class OneTimeKeyConflictError(Exception):
    """A one-time key ID was re-uploaded with different content (the upload must fail whole)."""

    def __init__(self, full_key_id: str) -> None:
        super().__init__(full_key_id)
        self.full_key_id = full_key_id


@dataclass(frozen=True)
class StoredKey:
    """A one-time or fallback key ready to store.

    Attributes:
        algorithm: e.g. ``signed_curve25519``.
        key_id: the part after the colon.
        key_json: the key's canonical JSON (a JSON string or object).
    """

    algorithm: str
    key_id: str
    key_json: str


def _decode(text: object) -> Any:
    return json.loads(str(text))


class E2EKeyStore:
    """Reads and writes ``e2e_device_keys``, ``e2e_one_time_keys`` and ``e2e_fallback_keys``.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ device keys

    def set_device_keys_txn(self, txn: Txn, user_id: str, device_id: str, key_json: str, now_ms: int) -> bool:
        """Stores a device's identity keys. Returns True when they changed (new or different)."""
        txn.execute(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )
        row = txn.fetchone()
        if row is not None and str(row[0]) == key_json:
            return False
        txn.execute(
            "INSERT INTO e2e_device_keys (user_id, device_id, key_json, updated_ts) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json,"
            " updated_ts = excluded.updated_ts",
            (user_id, device_id, key_json, now_ms),
        )
        return True

    async def get_device_keys(
        self, query: Iterable[tuple[str, Collection[str] | None]]
    ) -> dict[str, dict[str, JsonDict]]:
        """Device keys of existing devices, with ``unsigned.device_display_name``.

        Args:
            query: ``(user ID, device IDs)`` pairs; None or empty device IDs mean every device.

        Returns:
            user ID -> device ID -> device keys object (users without keys are left out).
        """

        pairs = list(query)

        def get_keys_txn(txn: Txn) -> dict[str, dict[str, JsonDict]]:
            found: dict[str, dict[str, JsonDict]] = {}
            for user_id, device_ids in pairs:
                wanted = set(device_ids or ())
                txn.execute(
                    "SELECT k.device_id, k.key_json, d.display_name FROM e2e_device_keys AS k"
                    " JOIN devices AS d ON d.user_id = k.user_id AND d.device_id = k.device_id"
                    " WHERE k.user_id = ? ORDER BY k.device_id",
                    (user_id,),
                )
                for device_id, key_json, display_name in txn.fetchall():
                    if wanted and str(device_id) not in wanted:
                        continue
                    keys = _decode(key_json)
                    if not isinstance(keys, dict):
                        continue
                    unsigned: JsonDict = {}
                    if display_name is not None:
                        unsigned["device_display_name"] = str(display_name)
                    keys["unsigned"] = unsigned
                    found.setdefault(user_id, {})[str(device_id)] = keys
            return found

        if not pairs:
            return {}
        return await self._pool.run_read("get_device_keys", get_keys_txn)

    # ------------------------------------------------------------------ one-time and fallback keys

    def add_one_time_keys_txn(self, txn: Txn, user_id: str, device_id: str, keys: Sequence[StoredKey]) -> None:
        """Adds one-time keys; re-uploading an existing ID with the same content is a no-op.

        Raises:
            OneTimeKeyConflictError: an existing ID with different content (the caller rolls back).
        """
        if not keys:
            return
        txn.execute(
            "SELECT COALESCE(MAX(upload_seq), 0) FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
        row = txn.fetchone()
        upload_seq = (int(row[0]) if row else 0) + 1
        new_rows = []
        for key in keys:
            txn.execute(
                "SELECT key_json FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?"
                " AND key_id = ?",
                (user_id, device_id, key.algorithm, key.key_id),
            )
            existing = txn.fetchone()
            if existing is None:
                new_rows.append((user_id, device_id, key.algorithm, key.key_id, key.key_json, upload_seq))
            elif str(existing[0]) != key.key_json:
                raise OneTimeKeyConflictError(f"{key.algorithm}:{key.key_id}")
        txn.execute_many(
            "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json, upload_seq)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING",
            new_rows,
        )

    def set_fallback_keys_txn(self, txn: Txn, user_id: str, device_id: str, keys: Sequence[StoredKey]) -> None:
        """Replaces the device's fallback key of each given algorithm (an identical key keeps ``used``)."""
        for key in keys:
            txn.execute(
                "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET"
                " used = CASE WHEN e2e_fallback_keys.key_id = excluded.key_id"
                " AND e2e_fallback_keys.key_json = excluded.key_json THEN e2e_fallback_keys.used ELSE ? END,"
                " key_id = excluded.key_id, key_json = excluded.key_json",
                (user_id, device_id, key.algorithm, key.key_id, key.key_json, False, False),
            )

    def count_one_time_keys_txn(self, txn: Txn, user_id: str, device_id: str) -> dict[str, int]:
        """Unclaimed one-time keys of a device per algorithm."""
        txn.execute(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?"
            " GROUP BY algorithm",
            (user_id, device_id),
        )
        return {str(r[0]): int(r[1]) for r in txn.fetchall()}

    async def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]:
        """Unclaimed one-time keys of a device per algorithm."""
        return await self._pool.run_read("count_one_time_keys", self.count_one_time_keys_txn, user_id, device_id)

    async def get_unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        """Algorithms for which the device has a fallback key no claim has used yet (sorted)."""

        def unused_txn(txn: Txn) -> list[str]:
            txn.execute(
                "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND used = ?"
                " ORDER BY algorithm",
                (user_id, device_id, False),
            )
            return [str(r[0]) for r in txn.fetchall()]

        return await self._pool.run_read("get_unused_fallback_key_types", unused_txn)

    def claim_one_time_key_txn(
        self, txn: Txn, user_id: str, device_id: str, algorithm: str
    ) -> tuple[str, Any] | None:
        """Takes the oldest one-time key of ``algorithm`` (deleting it), else the fallback key (marking
        it used). Returns ``("<algorithm>:<key_id>", key)`` or None when the device has neither."""
        txn.execute(
            "DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ("
            " SELECT key_id FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?"
            " ORDER BY upload_seq, key_id LIMIT 1) RETURNING key_id, key_json",
            (user_id, device_id, algorithm, user_id, device_id, algorithm),
        )
        row = txn.fetchone()
        if row is not None:
            return f"{algorithm}:{row[0]}", _decode(row[1])
        txn.execute(
            "SELECT key_id, key_json, used FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ?"
            " AND algorithm = ?",
            (user_id, device_id, algorithm),
        )
        row = txn.fetchone()
        if row is None:
            return None
        if not bool(row[2]):
            txn.execute(
                "UPDATE e2e_fallback_keys SET used = ? WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                (True, user_id, device_id, algorithm),
            )
        return f"{algorithm}:{row[0]}", _decode(row[1])

    def delete_device_txn(self, txn: Txn, user_id: str, device_id: str) -> bool:
        """Deletes every key of a device. Returns True when it had identity keys."""
        txn.execute("DELETE FROM e2e_device_keys WHERE user_id = ? AND device_id = ?", (user_id, device_id))
        had_keys = txn.rowcount > 0
        txn.execute("DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?", (user_id, device_id))
        txn.execute("DELETE FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ?", (user_id, device_id))
        return had_keys


@dataclass(frozen=True)
class MembershipChange:
    """A membership event in the events stream.

    Attributes:
        room_nid: the room.
        user_id: whose membership (the state key).
        membership: the new membership (``join``, ``leave``, ``ban``, ``invite``...).
    """

    room_nid: int
    user_id: str
    membership: str


class DeviceListStore:
    """The ``device_lists`` stream and the room-sharing queries device lists need.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    def add_change_txn(self, txn: Txn, stream_id: int, user_id: str, device_id: str | None) -> None:
        """Records that ``user_id``'s devices or keys changed at ``stream_id``."""
        txn.execute(
            "INSERT INTO device_lists_stream (stream_id, user_id, device_id) VALUES (?, ?, ?)",
            (stream_id, user_id, device_id),
        )

    async def get_max_stream_id(self) -> int:
        """The newest stream id (0 when empty)."""

        def max_txn(txn: Txn) -> int:
            txn.execute("SELECT MAX(stream_id) FROM device_lists_stream")
            row = txn.fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        return await self._pool.run_read("device_lists_max_stream_id", max_txn)

    async def get_users_changed(self, from_id: int, to_id: int) -> set[str]:
        """Users with a change in ``(from_id, to_id]``."""

        def changed_txn(txn: Txn) -> set[str]:
            txn.execute(
                "SELECT DISTINCT user_id FROM device_lists_stream WHERE stream_id > ? AND stream_id <= ?",
                (from_id, to_id),
            )
            return {str(r[0]) for r in txn.fetchall()}

        if from_id >= to_id:
            return set()
        return await self._pool.run_read("device_lists_users_changed", changed_txn)

    users_sharing_room_txn = staticmethod(RoomStore.users_sharing_room_txn)
    """Users joined to a room ``user_id`` is joined to (owned by :class:`RoomStore`)."""

    async def get_users_sharing_room(self, user_id: str) -> set[str]:
        """Users joined to a room ``user_id`` is joined to (``user_id`` included if joined anywhere)."""
        return await self._pool.run_read("users_sharing_room", self.users_sharing_room_txn, user_id)

    async def get_membership_context(
        self, user_id: str, from_stream: int, to_stream: int
    ) -> tuple[set[int], list[MembershipChange], dict[int, set[str]]]:
        """What device-list ``left``/``changed`` needs about room membership in ``(from, to]`` of the
        events stream, read in one transaction.

        Returns:
            ``(joined_now, changes, members)``: the rooms ``user_id`` is joined to now; membership
            events in the range in those rooms and in rooms where ``user_id``'s own membership changed
            in the range (in stream order); and the current joined members of every such room.
        """

        def context_txn(txn: Txn) -> tuple[set[int], list[MembershipChange], dict[int, set[str]]]:
            joined_now = RoomStore.joined_room_nids_txn(txn, user_id)
            if from_stream >= to_stream:
                return joined_now, [], {}
            rooms = joined_now | EventStore.rooms_with_member_events_txn(txn, user_id, from_stream, to_stream)
            changes = [
                MembershipChange(room_nid, member, membership)
                for _, room_nid, member, membership in EventStore.membership_changes_txn(
                    txn, txn.engine, rooms, from_stream, to_stream
                )
            ]
            touched = {c.room_nid for c in changes}
            return joined_now, changes, RoomStore.joined_members_txn(txn, txn.engine, touched)

        return await self._pool.run_read("device_lists_membership_context", context_txn)

