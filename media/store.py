"""The media tables (``local_media``, ``media_blobs``, ``media_thumbnails``, ``media_usage``).

Invariants kept by every write transaction here:

* ``media_blobs.refcount`` equals the number of ``local_media`` and ``media_thumbnails`` rows that
  name the blob; it changes in the same transaction as those rows.
* ``media_usage.used_bytes``/``file_count`` equal the sum/count of the user's uploaded media, and an
  upload is recorded only if it keeps ``used_bytes`` within the quota. The check is one conditional
  ``UPDATE`` in the transaction that inserts the media row (audit STORAGE-3): on PostgreSQL two
  concurrent uploads of one user touch the same usage row, so one waits and then fails with a
  serialization error and is retried by the pool against the new total; SQLite has one writer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from homeserver.storage.pool import DatabasePool, Txn

UNLIMITED = 2**62
"""Stands for "no quota" in SQL comparisons."""


class UploadRefusal(enum.Enum):
    """Why :meth:`MediaStore.record_upload` refused an upload (the transaction rolled back)."""

    QUOTA_EXCEEDED = "quota_exceeded"
    NOT_FOUND = "not_found"
    WRONG_USER = "wrong_user"
    ALREADY_UPLOADED = "already_uploaded"


class UploadRefusedError(Exception):
    """Raised inside the transaction to roll it back; carries the :class:`UploadRefusal`."""

    def __init__(self, refusal: UploadRefusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


@dataclass(frozen=True)
class MediaRecord:
    """One ``local_media`` row.

    Attributes:
        media_id: the media ID.
        user_id: the uploader.
        created_ts: when the ID was created (ms).
        unused_expires_ts: for a reservation not yet uploaded, when it lapses (ms).
        uploaded_ts: when the content arrived (ms), None while pending.
        content_type: the stored type (see :func:`media.validation.check_declared_type`).
        size: bytes.
        sha256: the blob key, None while pending.
        filename: the uploader's file name, if any.
        width: image width in pixels (images only).
        height: image height in pixels (images only).
        frames: image frame count (images only).
        quarantined_by: the admin who quarantined it, if any.
    """

    media_id: str
    user_id: str
    created_ts: int
    unused_expires_ts: int | None
    uploaded_ts: int | None
    content_type: str | None
    size: int | None
    sha256: str | None
    filename: str | None
    width: int | None
    height: int | None
    frames: int | None
    quarantined_by: str | None

    @property
    def is_uploaded(self) -> bool:
        """Whether the content has arrived."""
        return self.sha256 is not None


@dataclass(frozen=True)
class NewUpload:
    """The content recorded by :meth:`MediaStore.record_upload`."""

    media_id: str
    user_id: str
    content_type: str
    size: int
    sha256: str
    filename: str | None
    width: int | None = None
    height: int | None = None
    frames: int | None = None


@dataclass(frozen=True)
class ThumbnailRecord:
    """One ``media_thumbnails`` row (``width``/``height``/``method``/``animated`` is what was asked for)."""

    media_id: str
    width: int
    height: int
    method: str
    animated: bool
    thumb_width: int
    thumb_height: int
    content_type: str
    sha256: str
    size: int


@dataclass(frozen=True)
class MediaUsage:
    """A user's storage use.

    Attributes:
        used_bytes: total bytes of their uploads.
        file_count: number of uploads.
        quota_bytes: their own quota, or None when the configured default applies.
    """

    used_bytes: int
    file_count: int
    quota_bytes: int | None


_MEDIA_COLUMNS = (
    "media_id, user_id, created_ts, unused_expires_ts, uploaded_ts, content_type, size, sha256, filename,"
    " width, height, frames, quarantined_by"
)


def _media(row: tuple[object, ...]) -> MediaRecord:
    return MediaRecord(*row)  # type: ignore[arg-type]  # columns in field order


class MediaStore:
    """Reads and writes the media tables.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ reads

    async def get_media(self, media_id: str) -> MediaRecord | None:
        """The media row, or None."""

        def get_txn(txn: Txn) -> MediaRecord | None:
            txn.execute(f"SELECT {_MEDIA_COLUMNS} FROM local_media WHERE media_id = ?", (media_id,))  # noqa: S608
            row = txn.fetchone()
            return None if row is None else _media(row)

        return await self._pool.run_read("get_media", get_txn)

    async def get_thumbnails(self, media_id: str) -> list[ThumbnailRecord]:
        """Every stored thumbnail of the media."""

        def get_txn(txn: Txn) -> list[ThumbnailRecord]:
            txn.execute(
                "SELECT media_id, width, height, method, animated, thumb_width, thumb_height, content_type,"
                " sha256, size FROM media_thumbnails WHERE media_id = ?",
                (media_id,),
            )
            return [
                ThumbnailRecord(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7], r[8], r[9])
                for r in txn.fetchall()
            ]

        return await self._pool.run_read("get_thumbnails", get_txn)

    async def get_usage(self, user_id: str) -> MediaUsage:
        """The user's usage (zeros when they never uploaded)."""

        def get_txn(txn: Txn) -> MediaUsage:
            txn.execute("SELECT used_bytes, file_count, quota_bytes FROM media_usage WHERE user_id = ?", (user_id,))
            row = txn.fetchone()
            if row is None:
                return MediaUsage(0, 0, None)
            return MediaUsage(int(row[0]), int(row[1]), None if row[2] is None else int(row[2]))

        return await self._pool.run_read("get_media_usage", get_txn)

    async def is_blob_referenced(self, sha256: str) -> bool:
        """Whether any row still names the blob."""

        def get_txn(txn: Txn) -> bool:
            txn.execute("SELECT refcount FROM media_blobs WHERE sha256 = ?", (sha256,))
            row = txn.fetchone()
            return row is not None and int(row[0]) > 0

        return await self._pool.run_read("is_blob_referenced", get_txn)

    async def get_unaccessed_media(self, before_ts: int, limit: int) -> list[str]:
        """Uploaded media not downloaded (nor uploaded) since ``before_ts``."""

        def get_txn(txn: Txn) -> list[str]:
            txn.execute(
                "SELECT media_id FROM local_media WHERE sha256 IS NOT NULL"
                " AND COALESCE(last_access_ts, uploaded_ts) < ? ORDER BY media_id LIMIT ?",
                (before_ts, limit),
            )
            return [str(r[0]) for r in txn.fetchall()]

        return await self._pool.run_read("get_unaccessed_media", get_txn)

    # ------------------------------------------------------------------ reservations and uploads

    async def reserve(self, media_id: str, user_id: str, now: int, expires_ts: int, max_pending: int) -> bool:
        """Reserves ``media_id`` for a later upload; False when the user already has ``max_pending``."""

        def reserve_txn(txn: Txn) -> bool:
            _lock_usage_row_txn(txn, user_id)
            txn.execute(
                "SELECT COUNT(*) FROM local_media WHERE user_id = ? AND sha256 IS NULL AND unused_expires_ts > ?",
                (user_id, now),
            )
            row = txn.fetchone()
            if row is not None and int(row[0]) >= max_pending:
                return False
            txn.execute(
                "INSERT INTO local_media (media_id, user_id, created_ts, unused_expires_ts) VALUES (?, ?, ?, ?)",
                (media_id, user_id, now, expires_ts),
            )
            return True

        return await self._pool.run_txn("reserve_media", reserve_txn)

    async def record_upload(
        self, upload: NewUpload, now: int, default_quota: int | None, *, reserved: bool
    ) -> None:
        """Records uploaded content: the media row, the blob reference and the usage, atomically.

        Args:
            upload: what was uploaded.
            now: the time (ms).
            default_quota: the configured quota (None: unlimited) for users without their own.
            reserved: the media ID was reserved by ``create`` (else a new row is inserted).

        Raises:
            UploadRefusedError: quota exceeded, or the reservation is missing, expired, someone
                else's, or already uploaded (nothing was written).
        """
        await self._pool.run_txn("record_upload", _record_upload_txn, upload, now, default_quota, reserved)

    async def add_thumbnail(self, thumbnail: ThumbnailRecord) -> bool:
        """Stores a thumbnail row and references its blob; False if that size already existed."""

        def add_txn(txn: Txn) -> bool:
            txn.execute(
                "INSERT INTO media_thumbnails (media_id, width, height, method, animated, thumb_width,"
                " thumb_height, content_type, sha256, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (media_id, width, height, method, animated) DO NOTHING",
                (thumbnail.media_id, thumbnail.width, thumbnail.height, thumbnail.method,
                 1 if thumbnail.animated else 0, thumbnail.thumb_width, thumbnail.thumb_height,
                 thumbnail.content_type, thumbnail.sha256, thumbnail.size),
            )
            if txn.rowcount != 1:
                return False
            txn.execute("SELECT 1 FROM local_media WHERE media_id = ?", (thumbnail.media_id,))
            if txn.fetchone() is None:
                # The media was deleted while the thumbnail was being made.
                raise UploadRefusedError(UploadRefusal.NOT_FOUND)
            _reference_blob_txn(txn, thumbnail.sha256, thumbnail.size, 0)
            return True

        try:
            return await self._pool.run_txn("add_thumbnail", add_txn)
        except UploadRefusedError:
            return False

    async def touch(self, media_id: str, now: int) -> None:
        """Notes a download (for retention)."""

        def touch_txn(txn: Txn) -> None:
            txn.execute("UPDATE local_media SET last_access_ts = ? WHERE media_id = ?", (now, media_id))

        await self._pool.run_txn("touch_media", touch_txn)

    # ------------------------------------------------------------------ deletion, quarantine, quotas

    async def delete_media(self, media_id: str) -> list[str]:
        """Deletes the media, its thumbnails and their usage; returns the blobs now unreferenced."""

        def delete_txn(txn: Txn) -> list[str]:
            txn.execute("SELECT user_id, size, sha256 FROM local_media WHERE media_id = ?", (media_id,))
            row = txn.fetchone()
            if row is None:
                return []
            user_id, size, sha256 = row
            hashes: list[str] = []
            if sha256 is not None:
                hashes.append(str(sha256))
                txn.execute(
                    "UPDATE media_usage SET used_bytes = used_bytes - ?, file_count = file_count - 1 WHERE user_id = ?",
                    (int(size or 0), user_id),
                )
            txn.execute("SELECT sha256 FROM media_thumbnails WHERE media_id = ?", (media_id,))
            hashes.extend(str(r[0]) for r in txn.fetchall())
            txn.execute("DELETE FROM media_thumbnails WHERE media_id = ?", (media_id,))
            txn.execute("DELETE FROM local_media WHERE media_id = ?", (media_id,))
            for blob in hashes:
                txn.execute("UPDATE media_blobs SET refcount = refcount - 1 WHERE sha256 = ?", (blob,))
            unreferenced = []
            for blob in sorted(set(hashes)):
                txn.execute("SELECT refcount FROM media_blobs WHERE sha256 = ?", (blob,))
                count = txn.fetchone()
                if count is None or int(count[0]) <= 0:
                    unreferenced.append(blob)
            return unreferenced

        return await self._pool.run_txn("delete_media", delete_txn)

    async def forget_blob_if_unreferenced(self, sha256: str) -> bool:
        """Deletes the blob's row if nothing references it; True when the caller should delete the file."""

        def forget_txn(txn: Txn) -> bool:
            txn.execute("SELECT refcount FROM media_blobs WHERE sha256 = ?", (sha256,))
            row = txn.fetchone()
            if row is not None and int(row[0]) > 0:
                return False
            txn.execute("DELETE FROM media_blobs WHERE sha256 = ?", (sha256,))
            return True

        return await self._pool.run_txn("forget_blob", forget_txn)

    async def set_quarantine(self, media_id: str, by: str | None) -> bool:
        """Quarantines (``by`` an admin) or releases (None) the media; False if it does not exist."""

        def set_txn(txn: Txn) -> bool:
            txn.execute("UPDATE local_media SET quarantined_by = ? WHERE media_id = ?", (by, media_id))
            return txn.rowcount == 1

        return await self._pool.run_txn("set_quarantine", set_txn)

    async def set_quota(self, user_id: str, quota_bytes: int | None) -> None:
        """Sets the user's own quota (None: back to the configured default)."""

        def set_txn(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO media_usage (user_id, used_bytes, file_count, quota_bytes) VALUES (?, 0, 0, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET quota_bytes = EXCLUDED.quota_bytes",
                (user_id, quota_bytes),
            )

        await self._pool.run_txn("set_media_quota", set_txn)

    async def expire_reservations(self, now: int) -> int:
        """Deletes reservations whose time ran out; returns how many."""

        def expire_txn(txn: Txn) -> int:
            txn.execute(
                "DELETE FROM local_media WHERE sha256 IS NULL AND unused_expires_ts <= ?", (now,)
            )
            return max(txn.rowcount, 0)

        return await self._pool.run_txn("expire_media_reservations", expire_txn)


def _lock_usage_row_txn(txn: Txn, user_id: str) -> None:
    """Creates the user's usage row if needed and write-locks it (serialises their uploads on PostgreSQL)."""
    txn.execute(
        "INSERT INTO media_usage (user_id, used_bytes, file_count) VALUES (?, 0, 0) ON CONFLICT (user_id) DO NOTHING",
        (user_id,),
    )
    txn.execute("UPDATE media_usage SET file_count = file_count WHERE user_id = ?", (user_id,))


def _reference_blob_txn(txn: Txn, sha256: str, size: int, now: int) -> None:
    txn.execute(
        "INSERT INTO media_blobs (sha256, size, refcount, created_ts) VALUES (?, ?, 1, ?)"
        " ON CONFLICT (sha256) DO UPDATE SET refcount = media_blobs.refcount + 1",
        (sha256, size, now),
    )


def _record_upload_txn(txn: Txn, upload: NewUpload, now: int, default_quota: int | None, reserved: bool) -> None:
    if reserved:
        txn.execute(
            "SELECT user_id, sha256, unused_expires_ts FROM local_media WHERE media_id = ?", (upload.media_id,)
        )
        row = txn.fetchone()
        if row is None or (row[1] is None and row[2] is not None and int(row[2]) <= now):
            raise UploadRefusedError(UploadRefusal.NOT_FOUND)
        if row[0] != upload.user_id:
            raise UploadRefusedError(UploadRefusal.WRONG_USER)
        if row[1] is not None:
            raise UploadRefusedError(UploadRefusal.ALREADY_UPLOADED)
    _lock_usage_row_txn(txn, upload.user_id)
    limit = UNLIMITED if default_quota is None else default_quota
    txn.execute(
        "UPDATE media_usage SET used_bytes = used_bytes + ?, file_count = file_count + 1"
        " WHERE user_id = ? AND used_bytes + ? <= COALESCE(quota_bytes, ?)",
        (upload.size, upload.user_id, upload.size, limit),
    )
    if txn.rowcount != 1:
        raise UploadRefusedError(UploadRefusal.QUOTA_EXCEEDED)
    values = (upload.content_type, upload.size, upload.sha256, upload.filename, upload.width, upload.height,
              upload.frames, now)
    if reserved:
        txn.execute(
            "UPDATE local_media SET content_type = ?, size = ?, sha256 = ?, filename = ?, width = ?, height = ?,"
            " frames = ?, uploaded_ts = ?, unused_expires_ts = NULL WHERE media_id = ? AND sha256 IS NULL",
            (*values, upload.media_id),
        )
        if txn.rowcount != 1:
            raise UploadRefusedError(UploadRefusal.ALREADY_UPLOADED)
    else:
        txn.execute(
            "INSERT INTO local_media (media_id, user_id, created_ts, content_type, size, sha256, filename, width,"
            " height, frames, uploaded_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (upload.media_id, upload.user_id, now, *values),
        )
    _reference_blob_txn(txn, upload.sha256, upload.size, now)
