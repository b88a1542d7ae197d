"""The key-backup aggregate: a user's backup versions and the session keys stored in them.

Theory of operation: versions are per-user integers allocated as ``MAX(version) + 1`` over every row,
deleted ones included, so a version number is never reused. A deleted version keeps its row with
``deleted = 1`` (deleting it again is a no-op) and loses its keys. The *current* version, the only one
keys may be written to, is the highest version not deleted.

Every write that changes a version's keys increments its ``etag`` in the same transaction, and the
"is this the current version?" check runs in that transaction too, so a concurrent new version cannot
slip between the check and the write (SQLite: one writer; PostgreSQL: ``REPEATABLE READ`` retries).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn
from sc_proto.json import encode_canonical_json


@dataclass(frozen=True)
class BackupVersion:
    """A backup version with its key count and etag.

    Attributes:
        version: the version number (clients see it as a string).
        algorithm: the backup algorithm.
        auth_data: algorithm-dependent public data.
        etag: changes whenever the version's keys change.
        count: number of keys stored.
    """

    version: int
    algorithm: str
    auth_data: dict[str, Any]
    etag: int
    count: int


@dataclass(frozen=True)
class RoomKey:
    """One backed-up session key (``KeyBackupData``).

    Attributes:
        first_message_index: index of the first message the key can decrypt.
        forwarded_count: times the key was forwarded between devices.
        is_verified: whether the backing-up device verified the key's origin.
        session_data: algorithm-dependent (encrypted) data, opaque to the server.
    """

    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The ``KeyBackupData`` JSON object."""
        return {
            "first_message_index": self.first_message_index,
            "forwarded_count": self.forwarded_count,
            "is_verified": self.is_verified,
            "session_data": self.session_data,
        }


class WrongBackupVersion(Exception):
    """Keys were written to a version that is not the current one.

    Attributes:
        current: the current version, or None when the user has no backup.
    """

    def __init__(self, current: int | None) -> None:
        super().__init__("not the current backup version")
        self.current = current


class UnknownBackupVersion(Exception):
    """The version does not exist (or was deleted)."""


ShouldReplace = Callable[[RoomKey, RoomKey], bool]
"""``should_replace(existing, new)``: whether ``new`` replaces the stored ``existing`` key."""

RoomKeys = dict[str, dict[str, RoomKey]]
"""``{room_id: {session_id: key}}``."""


def _encode(value: Mapping[str, Any]) -> str:
    return encode_canonical_json(dict(value)).decode("utf-8")


def _decode(text: object) -> dict[str, Any]:
    value = json.loads(str(text))
    return value if isinstance(value, dict) else {}


def _row_to_key(row: Sequence[Any]) -> RoomKey:
    return RoomKey(int(row[0]), int(row[1]), bool(row[2]), _decode(row[3]))


def _current_version_txn(txn: Txn, user_id: str) -> int | None:
    txn.execute("SELECT MAX(version) FROM e2e_room_keys_versions WHERE user_id = ? AND deleted = 0", (user_id,))
    row = txn.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _live_version_txn(txn: Txn, user_id: str, version: int) -> tuple[str, dict[str, Any], int] | None:
    txn.execute(
        "SELECT algorithm, auth_data, etag FROM e2e_room_keys_versions"
        " WHERE user_id = ? AND version = ? AND deleted = 0",
        (user_id, version),
    )
    row = txn.fetchone()
    return None if row is None else (str(row[0]), _decode(row[1]), int(row[2]))


def _count_txn(txn: Txn, user_id: str, version: int) -> int:
    txn.execute("SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = ? AND version = ?", (user_id, version))
    row = txn.fetchone()
    return 0 if row is None else int(row[0])


def _bump_etag_txn(txn: Txn, user_id: str, version: int) -> None:
    txn.execute(
        "UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?", (user_id, version)
    )


def _etag_and_count_txn(txn: Txn, user_id: str, version: int) -> tuple[int, int]:
    live = _live_version_txn(txn, user_id, version)
    return (0 if live is None else live[2]), _count_txn(txn, user_id, version)


class KeyBackupStore:
    """Reads and writes ``e2e_room_keys_versions`` and ``e2e_room_keys``.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    async def create_version(self, user_id: str, algorithm: str, auth_data: Mapping[str, Any]) -> int:
        """Creates a new (current) backup version; returns its number."""
        encoded = _encode(auth_data)

        def create_version_txn(txn: Txn) -> int:
            txn.execute("SELECT COALESCE(MAX(version), 0) FROM e2e_room_keys_versions WHERE user_id = ?", (user_id,))
            row = txn.fetchone()
            version = (0 if row is None else int(row[0])) + 1
            txn.execute(
                "INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data, etag, deleted)"
                " VALUES (?, ?, ?, ?, 0, 0)",
                (user_id, version, algorithm, encoded),
            )
            return version

        return await self._pool.run_txn("create_room_keys_version", create_version_txn)

    async def get_version(self, user_id: str, version: int | None = None) -> BackupVersion | None:
        """Returns a live version (the current one when ``version`` is None), or None."""

        def get_version_txn(txn: Txn) -> BackupVersion | None:
            number = _current_version_txn(txn, user_id) if version is None else version
            if number is None:
                return None
            live = _live_version_txn(txn, user_id, number)
            if live is None:
                return None
            algorithm, auth_data, etag = live
            return BackupVersion(number, algorithm, auth_data, etag, _count_txn(txn, user_id, number))

        return await self._pool.run_read("get_room_keys_version", get_version_txn)

    async def update_auth_data(self, user_id: str, version: int, auth_data: Mapping[str, Any]) -> bool:
        """Replaces a live version's ``auth_data``; False if the version is not live."""
        encoded = _encode(auth_data)

        def update_txn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE e2e_room_keys_versions SET auth_data = ? WHERE user_id = ? AND version = ? AND deleted = 0",
                (encoded, user_id, version),
            )
            return txn.rowcount > 0

        return await self._pool.run_txn("update_room_keys_version", update_txn)

    async def delete_version(self, user_id: str, version: int) -> bool:
        """Deletes a version and its keys.

        Returns:
            True if the version exists or existed (deleting twice succeeds), False if it never did.
        """

        def delete_version_txn(txn: Txn) -> bool:
            txn.execute(
                "SELECT deleted FROM e2e_room_keys_versions WHERE user_id = ? AND version = ?", (user_id, version)
            )
            if txn.fetchone() is None:
                return False
            txn.execute("DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?", (user_id, version))
            txn.execute(
                "UPDATE e2e_room_keys_versions SET deleted = 1 WHERE user_id = ? AND version = ?", (user_id, version)
            )
            return True

        return await self._pool.run_txn("delete_room_keys_version", delete_version_txn)

    async def put_keys(
        self, user_id: str, version: int, keys: RoomKeys, should_replace: ShouldReplace
    ) -> tuple[int, int]:
        """Stores keys in the current version, keeping existing keys ``should_replace`` prefers.

        Returns:
            ``(etag, count)`` after the write.

        Raises:
            WrongBackupVersion: ``version`` is not the current version.
        """

        def put_keys_txn(txn: Txn) -> tuple[int, int]:
            current = _current_version_txn(txn, user_id)
            if current is None or current != version:
                raise WrongBackupVersion(current)
            changed = False
            for room_id, sessions in sorted(keys.items()):
                existing = self._room_keys_txn(txn, user_id, version, room_id)
                for session_id, key in sorted(sessions.items()):
                    old = existing.get(session_id)
                    if old is not None and not should_replace(old, key):
                        continue
                    txn.execute(
                        "INSERT INTO e2e_room_keys (user_id, version, room_id, session_id, first_message_index,"
                        " forwarded_count, is_verified, session_data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET"
                        " first_message_index = excluded.first_message_index,"
                        " forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified,"
                        " session_data = excluded.session_data",
                        (user_id, version, room_id, session_id, key.first_message_index, key.forwarded_count,
                         1 if key.is_verified else 0, _encode(key.session_data)),
                    )
                    changed = True
            if changed:
                _bump_etag_txn(txn, user_id, version)
            return _etag_and_count_txn(txn, user_id, version)

        return await self._pool.run_txn("put_room_keys", put_keys_txn)

    @staticmethod
    def _room_keys_txn(txn: Txn, user_id: str, version: int, room_id: str) -> dict[str, RoomKey]:
        txn.execute(
            "SELECT session_id, first_message_index, forwarded_count, is_verified, session_data FROM e2e_room_keys"
            " WHERE user_id = ? AND version = ? AND room_id = ?",
            (user_id, version, room_id),
        )
        return {str(row[0]): _row_to_key(row[1:]) for row in txn.fetchall()}

    async def get_keys(
        self, user_id: str, version: int, room_id: str | None = None, session_id: str | None = None
    ) -> RoomKeys:
        """Returns a live version's keys, optionally of one room or one session.

        Raises:
            UnknownBackupVersion: the version is not live.
        """

        def get_keys_txn(txn: Txn) -> RoomKeys:
            if _live_version_txn(txn, user_id, version) is None:
                raise UnknownBackupVersion()
            sql = (
                "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data"
                " FROM e2e_room_keys WHERE user_id = ? AND version = ?"
            )
            args: list[Any] = [user_id, version]
            if room_id is not None:
                sql += " AND room_id = ?"
                args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = ?"
                args.append(session_id)
            txn.execute(sql, args)
            found: RoomKeys = {}
            for row in txn.fetchall():
                found.setdefault(str(row[0]), {})[str(row[1])] = _row_to_key(row[2:])
            return found

        return await self._pool.run_read("get_room_keys", get_keys_txn)

    async def delete_keys(
        self, user_id: str, version: int, room_id: str | None = None, session_id: str | None = None
    ) -> tuple[int, int]:
        """Deletes a live version's keys (all, one room's, or one session's).

        Returns:
            ``(etag, count)`` after the delete.

        Raises:
            UnknownBackupVersion: the version is not live.
        """

        def delete_keys_txn(txn: Txn) -> tuple[int, int]:
            if _live_version_txn(txn, user_id, version) is None:
                raise UnknownBackupVersion()
            sql = "DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?"
            args: list[Any] = [user_id, version]
            if room_id is not None:
                sql += " AND room_id = ?"
                args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = ?"
                args.append(session_id)
            txn.execute(sql, args)
            if txn.rowcount != 0:
                _bump_etag_txn(txn, user_id, version)
            return _etag_and_count_txn(txn, user_id, version)

        return await self._pool.run_txn("delete_room_keys", delete_keys_txn)
