"""Device-list tracking: the ``device_lists`` stream and who must hear about a change.

Theory of operation (spec "End-to-End Encryption", "Tracking the device list for a user"):

* A change to a user's devices (identity keys uploaded or changed, a device with keys deleted, or —
  through the cross-signing code — cross-signing keys) is one row in ``device_lists_stream``, written
  by :meth:`DeviceListTracker.record_change_txn` inside the transaction that makes the change. The
  same transaction reads who shares a room with the user; after commit those users (and the user)
  are woken with notifier stream ``device_lists``.
* For a user U and a range of positions, :meth:`DeviceListTracker.get_changes` answers
  ``/sync`` ``device_lists`` and ``/keys/changes``:

  - ``changed``: users with a device-list change in the range who share a room with U now (U
    included, for U's other devices); plus users who *started* sharing a room with U in the range
    (U joined their room, or they joined U's), since U has never tracked their devices.
  - ``left``: users whose membership in a room shared with U ended in the range, or members of a
    room U left, who share no room with U now.

  "Share a room" means both joined (spec ``/keys/changes``); we count every room, not only
  encrypted ones, which is a superset clients handle (they re-query or stop tracking).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.e2e_keys import DeviceListStore
from homeserver.streams.writer import StreamWriter

logger = logging.getLogger(__name__)

STREAM = "device_lists"
"""The notifier stream name."""


@dataclass(frozen=True)
class DeviceListChanges:
    """``changed`` and ``left`` user IDs (sorted)."""

    changed: list[str]
    left: list[str]


class DeviceListTracker:
    """Records device-list changes and computes what a user must be told.

    Args:
        pool: the database pool.
        store: the device-list store.
        stream: the ``device_lists`` stream writer.
    """

    def __init__(self, pool: DatabasePool, store: DeviceListStore, stream: StreamWriter) -> None:
        self._pool = pool
        self._store = store
        self._stream = stream

    def current_position(self) -> int:
        """The stream position below which every change is readable."""
        return self._stream.current()

    def record_change_txn(self, txn: Txn, user_id: str, device_id: str | None = None) -> int:
        """Records a change of ``user_id``'s devices or keys inside the caller's write transaction.

        After the transaction commits, the user and everyone sharing a room with them are woken.

        Returns:
            The change's stream position.
        """
        stream_id = self._stream.next_id_txn(txn)
        self._store.add_change_txn(txn, stream_id, user_id, device_id)
        audience = DeviceListStore.users_sharing_room_txn(txn, user_id) | {user_id}
        txn.call_after(self._stream.announce, stream_id, audience)
        return stream_id

    async def record_change(self, user_id: str, device_id: str | None = None) -> int:
        """Records a change of ``user_id``'s devices or keys in its own transaction.

        Returns:
            The change's stream position.
        """
        return await self._pool.run_txn("record_device_list_change", self.record_change_txn, user_id, device_id)

    async def get_changes(
        self, user_id: str, from_position: int, to_position: int, events_from: int, events_to: int
    ) -> DeviceListChanges:
        """What ``user_id`` must be told for device-list positions ``(from, to]`` and events-stream
        positions ``(events_from, events_to]``."""
        key_changes = await self._store.get_users_changed(from_position, to_position)
        joined_now, memberships, members = await self._store.get_membership_context(user_id, events_from, events_to)
        if not key_changes and not memberships:
            return DeviceListChanges([], [])
        shared = await self._store.get_users_sharing_room(user_id)
        changed = {u for u in key_changes if u in shared or u == user_id}
        newly_shared: set[str] = set()
        maybe_left: set[str] = set()
        for change in memberships:
            room_members = members.get(change.room_nid, set())
            if change.user_id == user_id:
                # Our own join: everyone there is new to us; our own leave: everyone there may be gone.
                (newly_shared if change.room_nid in joined_now else maybe_left).update(room_members)
            elif change.membership == "join":
                if change.room_nid in joined_now:
                    newly_shared.add(change.user_id)
            else:
                maybe_left.add(change.user_id)
        changed |= {u for u in newly_shared if u in shared and u != user_id}
        left = {u for u in maybe_left if u not in shared and u != user_id}
        return DeviceListChanges(sorted(changed), sorted(left))
