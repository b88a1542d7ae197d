"""Server-side key backups (client-server API, "Server-side key backups").

The server stores encrypted megolm session keys per user, per backup version, room and session; it
never decrypts them. This module validates requests and applies the spec's replacement rule; storage
is :class:`~homeserver.storage.stores.key_backup.KeyBackupStore`.

Replacement rule (spec): when a key is uploaded for a session the backup already holds, the server
keeps the key with ``is_verified`` true if the two differ; otherwise the one with the lower
``first_message_index``; otherwise the one with the lower ``forwarded_count``. When all three are equal
the stored key is kept (nothing changes, so the ``etag`` does not move).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from homeserver.identity import require_room_id
from homeserver.storage.stores.key_backup import (
    BackupVersion,
    KeyBackupStore,
    RoomKey,
    RoomKeys,
    UnknownBackupVersion,
    WrongBackupVersion,
)
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

MEGOLM_BACKUP_V1 = "m.megolm_backup.v1.curve25519-aes-sha2"
"""The backup algorithm the spec defines."""

MAX_ALGORITHM_LENGTH = 255
MAX_SESSION_ID_LENGTH = 255
MAX_KEYS_PER_REQUEST = 10_000
"""Most session keys one request may upload (request bodies are bounded as well)."""

JsonDict = dict[str, Any]


def should_replace(existing: RoomKey, new: RoomKey) -> bool:
    """Whether ``new`` replaces ``existing`` for the same session, by the spec's rule."""
    if existing.is_verified != new.is_verified:
        return new.is_verified
    if existing.first_message_index != new.first_message_index:
        return new.first_message_index < existing.first_message_index
    return new.forwarded_count < existing.forwarded_count


def _invalid(message: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, message)


def _non_negative_int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        raise MatrixError(400, Codes.MISSING_PARAM, f"Missing '{key}' in key data")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**53 - 1:
        raise _invalid(f"'{key}' must be a non-negative integer")
    return value


def parse_room_key(obj: object) -> RoomKey:
    """Validates a ``KeyBackupData`` object.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM``/``M_INVALID_PARAM`` for missing or mistyped fields.
    """
    if not isinstance(obj, Mapping):
        raise _invalid("Key data must be an object")
    first_message_index = _non_negative_int(obj, "first_message_index")
    forwarded_count = _non_negative_int(obj, "forwarded_count")
    is_verified = obj.get("is_verified")
    if is_verified is None:
        raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'is_verified' in key data")
    if not isinstance(is_verified, bool):
        raise _invalid("'is_verified' must be a boolean")
    session_data = obj.get("session_data")
    if session_data is None:
        raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'session_data' in key data")
    if not isinstance(session_data, Mapping):
        raise _invalid("'session_data' must be an object")
    return RoomKey(first_message_index, forwarded_count, is_verified, dict(session_data))


def check_session_id(session_id: object) -> str:
    """Validates a megolm session ID (a non-empty string of bounded length).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM``.
    """
    if not isinstance(session_id, str) or not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
        raise _invalid("Invalid session ID")
    return session_id


def parse_sessions(obj: object) -> dict[str, RoomKey]:
    """Validates a ``RoomKeyBackup`` object (``{"sessions": {session_id: KeyBackupData}}``).

    Raises:
        MatrixError: 400 for a malformed object.
    """
    if not isinstance(obj, Mapping):
        raise _invalid("Room key backup must be an object")
    sessions = obj.get("sessions")
    if sessions is None:
        raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'sessions'")
    if not isinstance(sessions, Mapping):
        raise _invalid("'sessions' must be an object")
    return {check_session_id(sid): parse_room_key(data) for sid, data in sessions.items()}


def parse_rooms(body: Mapping[str, Any]) -> RoomKeys:
    """Validates the body of ``PUT /room_keys/keys`` (``{"rooms": {room_id: RoomKeyBackup}}``).

    Raises:
        MatrixError: 400 for a malformed body.
    """
    rooms = body.get("rooms")
    if rooms is None:
        raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'rooms'")
    if not isinstance(rooms, Mapping):
        raise _invalid("'rooms' must be an object")
    return {str(require_room_id(room_id)): parse_sessions(backup) for room_id, backup in rooms.items()}


def parse_version(version: str) -> int | None:
    """The integer a backup version string names, or None if it names none we could have issued."""
    if not version.isascii() or not version.isdigit() or len(version) > 16:
        return None
    return int(version)


def version_to_json(info: BackupVersion) -> JsonDict:
    """The response body of ``GET /room_keys/version[/{version}]``."""
    return {
        "algorithm": info.algorithm,
        "auth_data": info.auth_data,
        "count": info.count,
        "etag": str(info.etag),
        "version": str(info.version),
    }


def rooms_to_json(keys: RoomKeys) -> JsonDict:
    """``{"rooms": {room_id: {"sessions": {session_id: KeyBackupData}}}}``."""
    return {
        "rooms": {
            room_id: {"sessions": {sid: key.to_json() for sid, key in sessions.items()}}
            for room_id, sessions in keys.items()
        }
    }


def _unknown_version() -> MatrixError:
    return MatrixError(404, Codes.NOT_FOUND, "Unknown backup version")


def _check_algorithm_and_auth_data(body: Mapping[str, Any]) -> tuple[str, JsonDict]:
    algorithm = body.get("algorithm")
    if algorithm is None:
        raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'algorithm'")
    if not isinstance(algorithm, str) or not algorithm or len(algorithm) > MAX_ALGORITHM_LENGTH:
        raise _invalid("'algorithm' must be a non-empty string")
    auth_data = body.get("auth_data")
    if auth_data is None:
        raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'auth_data'")
    if not isinstance(auth_data, Mapping):
        raise _invalid("'auth_data' must be an object")
    if algorithm == MEGOLM_BACKUP_V1 and not isinstance(auth_data.get("public_key"), str):
        raise _invalid(f"'auth_data.public_key' must be a string for {MEGOLM_BACKUP_V1}")
    return algorithm, dict(auth_data)


class KeyBackupService:
    """The key-backup operations behind ``/room_keys``.

    Args:
        store: the key-backup store.
    """

    def __init__(self, store: KeyBackupStore) -> None:
        self._store = store

    async def create_version(self, user_id: str, body: Mapping[str, Any]) -> str:
        """Creates a new backup version, which becomes the current one; returns it."""
        algorithm, auth_data = _check_algorithm_and_auth_data(body)
        version = await self._store.create_version(user_id, algorithm, auth_data)
        logger.info("key backup version %d created", version, extra={"user_id": user_id})
        return str(version)

    async def get_version(self, user_id: str, version: str | None) -> JsonDict:
        """Describes a live version (the current one when ``version`` is None).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND``.
        """
        number = None if version is None else parse_version(version)
        if version is not None and number is None:
            raise _unknown_version()
        info = await self._store.get_version(user_id, number)
        if info is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No current backup version" if version is None else
                              "Unknown backup version")
        return version_to_json(info)

    async def update_version(self, user_id: str, version: str, body: Mapping[str, Any]) -> None:
        """Replaces a version's ``auth_data`` (the algorithm cannot change).

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a different algorithm or body ``version``;
                404 ``M_NOT_FOUND`` for an unknown version.
        """
        algorithm, auth_data = _check_algorithm_and_auth_data(body)
        body_version = body.get("version")
        if body_version is not None and body_version != version:
            raise _invalid("'version' does not match the version in the path")
        number = parse_version(version)
        info = None if number is None else await self._store.get_version(user_id, number)
        if number is None or info is None:
            raise _unknown_version()
        if info.algorithm != algorithm:
            raise _invalid("Algorithm does not match")
        if not await self._store.update_auth_data(user_id, number, auth_data):
            raise _unknown_version()

    async def delete_version(self, user_id: str, version: str) -> None:
        """Deletes a version and its keys; deleting a deleted version succeeds.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` for a version that never existed.
        """
        number = parse_version(version)
        if number is None or not await self._store.delete_version(user_id, number):
            raise _unknown_version()
        logger.info("key backup version %d deleted", number, extra={"user_id": user_id})

    async def put_keys(self, user_id: str, version: str, keys: RoomKeys) -> JsonDict:
        """Stores keys in the current version; returns ``{"etag", "count"}``.

        Raises:
            MatrixError: 403 ``M_WRONG_ROOM_KEYS_VERSION`` (with ``current_version``) when ``version``
                is not the current version; 404 ``M_NOT_FOUND`` when the user has no backup;
                400 ``M_TOO_LARGE`` for too many keys.
        """
        if sum(len(sessions) for sessions in keys.values()) > MAX_KEYS_PER_REQUEST:
            raise MatrixError(400, Codes.TOO_LARGE, f"At most {MAX_KEYS_PER_REQUEST} keys per request")
        number = parse_version(version)
        try:
            etag, count = await self._store.put_keys(user_id, -1 if number is None else number, keys, should_replace)
        except WrongBackupVersion as wrong:
            if wrong.current is None:
                raise MatrixError(404, Codes.NOT_FOUND, "No current backup version") from None
            raise MatrixError(
                403, Codes.WRONG_ROOM_KEYS_VERSION, "Wrong backup version.",
                {"current_version": str(wrong.current)},
            ) from None
        return {"etag": str(etag), "count": count}

    async def get_keys(
        self, user_id: str, version: str, room_id: str | None = None, session_id: str | None = None
    ) -> RoomKeys:
        """Reads a version's keys (all, one room's or one session's).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` for an unknown version.
        """
        number = parse_version(version)
        if number is None:
            raise _unknown_version()
        try:
            return await self._store.get_keys(user_id, number, room_id, session_id)
        except UnknownBackupVersion:
            raise _unknown_version() from None

    async def delete_keys(
        self, user_id: str, version: str, room_id: str | None = None, session_id: str | None = None
    ) -> JsonDict:
        """Deletes keys from a version; returns ``{"etag", "count"}``.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` for an unknown version.
        """
        number = parse_version(version)
        if number is None:
            raise _unknown_version()
        try:
            etag, count = await self._store.delete_keys(user_id, number, room_id, session_id)
        except UnknownBackupVersion:
            raise _unknown_version() from None
        return {"etag": str(etag), "count": count}
