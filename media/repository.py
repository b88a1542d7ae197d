"""Upload, download, thumbnail and deletion orchestration for local media.

Theory of operation
-------------------
*Upload.* The body (already on disk in the HTTP request's temporary file) is copied into the blob
store's temporary area while hashing it, then validated: the type is detected from its bytes and
checked against the declared type and the allow list, images are decoded once with a pixel budget.
Only then is the blob committed (atomic rename) and recorded: the media row, the blob reference and
the user's usage change in one transaction that refuses to pass the quota (:mod:`media.store`).
A refused upload leaves nothing behind.

*Blob lifetime.* A blob file is deleted only when its reference count is zero. Placing a blob and
recording its reference, and forgetting a blob and deleting its file, both happen under one lock per
hash, so a delete can never remove a file that a concurrent upload of the same bytes just referenced.
(One process writes media; with a separate ``media`` worker role, the lock stays valid.)

*Downloads* of an ID reserved with ``create`` but not uploaded yet wait (up to the client's
``timeout_ms``, capped by config) for the upload, then answer 504 ``M_NOT_YET_UPLOADED``.

*Remote media* (another server's ``mxc://``) is downloaded through the
:class:`~homeserver.api.ports.RemoteMediaFetcher` port (ADR 0009) and served from memory, not cached
yet (TODO(#7): remote media cache); thumbnails of remote media answer 404 until the port can fetch
them. Without federation the port answers 404.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, ParamSpec, Protocol, TypeVar

from twisted.internet import defer

from homeserver.api.local import LocalOnlyMediaFetcher
from homeserver.api.ports import RemoteMediaFetcher
from homeserver.config.media import MediaConfig
from homeserver.util.clock import Clock
from homeserver.util.linearizer import Linearizer
from media.blobstore import BlobStore, BlobTooLargeError, IngestedBlob
from media.store import (
    MediaRecord,
    MediaStore,
    MediaUsage,
    NewUpload,
    ThumbnailRecord,
    UploadRefusal,
    UploadRefusedError,
)
from media.thumbnails import Thumbnail, make_thumbnail, serves_original, thumbnail_size
from media.validation import (
    IMAGE_TYPES,
    ImageInfo,
    check_allowed,
    check_declared_type,
    detect_content_type,
    inspect_image,
)
from sc_proto.errors import Codes, MatrixError
from sc_proto.media.mxc import MXCUri

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

MEDIA_ID_LENGTH = 24
MAX_CACHED_THUMBNAILS = 32
"""Thumbnails kept per media (pre-generated and on-demand); further sizes are generated each time."""
TOUCH_INTERVAL_MS = 3600 * 1000
TEMP_FILE_MAX_AGE_S = 24 * 3600.0
ORPHAN_MIN_AGE_S = 3600.0
_ALPHABET = string.ascii_letters + string.digits


class ThreadRunner(Protocol):
    """Runs a blocking function off the reactor thread (inline in deterministic tests)."""

    def __call__(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """Returns an awaitable of ``fn(*args, **kwargs)``."""
        ...


@dataclass(frozen=True)
class ServedBlob:
    """Bytes to serve: a blob, its type and size.

    Attributes:
        sha256: the blob key.
        content_type: the ``Content-Type`` to send.
        size: bytes.
        filename: the file name for ``Content-Disposition`` (None: none).
        is_thumbnail: a generated thumbnail (always ``inline``).
        data: the bytes themselves, for a thumbnail served without being stored (``sha256`` is then empty).
    """

    sha256: str
    content_type: str
    size: int
    filename: str | None
    is_thumbnail: bool = False
    data: bytes | None = None


def new_media_id() -> str:
    """A random media ID (24 characters of ``[A-Za-z0-9]``, ~143 bits)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(MEDIA_ID_LENGTH))


_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
"""A bare ``type/subtype`` a remote server may give its media."""


class MediaRepository:
    """Local media: uploads, reservations, downloads, thumbnails, deletion, quotas and retention.

    Args:
        server_name: our server name (the authority of our ``mxc://`` URIs).
        config: the ``media`` config section.
        store: the media tables.
        blobs: the blob store.
        clock: the clock.
        run_in_thread: runs blocking file and image work off the reactor.
        remote: downloads other servers' media (local-only: 404).
    """

    def __init__(
        self,
        server_name: str,
        config: MediaConfig,
        store: MediaStore,
        blobs: BlobStore,
        clock: Clock,
        run_in_thread: ThreadRunner,
        *,
        remote: RemoteMediaFetcher | None = None,
    ) -> None:
        self._remote: RemoteMediaFetcher = remote or LocalOnlyMediaFetcher()
        self.server_name = server_name
        self.config = config
        self.store = store
        self.blobs = blobs
        self._clock = clock
        self._run = run_in_thread
        self._blob_locks = Linearizer("media_blobs")
        self._thumb_locks = Linearizer("media_thumbnails")
        self._upload_waiters: dict[str, list[defer.Deferred[None]]] = {}
        self._touched: dict[str, int] = {}
        self._orphans_swept = False

    # ------------------------------------------------------------------ uploads

    async def create(self, user_id: str) -> tuple[str, int]:
        """Reserves a media ID for a later upload; returns the ``mxc://`` URI and its expiry (ms).

        Raises:
            MatrixError: 429 ``M_LIMIT_EXCEEDED`` when the user holds too many pending reservations.
        """
        now = self._clock.time_msec()
        expires = now + int(self.config.unused_expiration_s * 1000)
        media_id = new_media_id()
        if not await self.store.reserve(media_id, user_id, now, expires, self.config.max_pending_uploads):
            raise MatrixError(
                429, Codes.LIMIT_EXCEEDED, "Too many pending uploads", extra={"retry_after_ms": 60_000}
            )
        return str(MXCUri(self.server_name, media_id)), expires

    async def upload(
        self,
        user_id: str,
        source: BinaryIO,
        declared_type: str | None,
        filename: str | None,
        reserved_media_id: str | None = None,
    ) -> str:
        """Validates and stores an upload; returns its ``mxc://`` URI.

        Args:
            user_id: the uploader.
            source: the body (read from its start).
            declared_type: the request's ``Content-Type``.
            filename: the ``filename`` query parameter.
            reserved_media_id: upload to an ID reserved with :meth:`create`.

        Raises:
            MatrixError: 413 ``M_TOO_LARGE``; 400 ``M_INVALID_PARAM`` (declared type contradicts the
                content, undecodable or oversized image); 403 ``M_FORBIDDEN`` (type not allowed,
                quota, someone else's reservation); 404 ``M_NOT_FOUND`` (unknown or expired
                reservation); 409 ``M_CANNOT_OVERWRITE_MEDIA``.
        """
        if reserved_media_id is not None:
            await self._check_reservation(user_id, reserved_media_id)
        try:
            blob = await self._run(self.blobs.ingest, source, self.config.max_upload_size)
        except BlobTooLargeError:
            raise MatrixError(413, Codes.TOO_LARGE, "Upload is larger than the size limit") from None
        try:
            content_type, info = await self._validate(blob, declared_type)
            media_id = reserved_media_id or new_media_id()
            upload = NewUpload(
                media_id, user_id, content_type, blob.size, blob.sha256, filename,
                info.width if info else None, info.height if info else None, info.frames if info else None,
            )
            await self._store_blob(blob, upload, reserved=reserved_media_id is not None)
        finally:
            await self._run(self.blobs.discard, blob)
        logger.info("stored media %s (%s, %d bytes)", media_id, content_type, blob.size, extra={"user_id": user_id})
        self._wake_waiters(media_id)
        if info is not None:
            defer.ensureDeferred(self._pregenerate_thumbnails(media_id)).addErrback(
                lambda f: logger.error("thumbnail pre-generation failed: %s", f.getErrorMessage())
            )
        return str(MXCUri(self.server_name, media_id))

    async def _check_reservation(self, user_id: str, media_id: str) -> None:
        """Refuses early (before reading the body) what record_upload would refuse anyway."""
        record = await self.store.get_media(media_id)
        now = self._clock.time_msec()
        if record is None or (not record.is_uploaded and (record.unused_expires_ts or 0) <= now):
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown media ID")
        if record.user_id != user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "This media ID was created by another user")
        if record.is_uploaded:
            raise MatrixError(409, Codes.CANNOT_OVERWRITE_MEDIA, "Media already uploaded")

    async def _validate(self, blob: IngestedBlob, declared_type: str | None) -> tuple[str, ImageInfo | None]:
        detected = await self._run(detect_content_type, blob.head, blob.temp_path)
        content_type = check_declared_type(declared_type, detected)
        check_allowed(detected, self.config.allowed_content_types)
        info = None
        if detected in IMAGE_TYPES:
            info = await self._run(inspect_image, blob.temp_path, self.config.max_image_pixels)
        return content_type, info

    async def _store_blob(self, blob: IngestedBlob, upload: NewUpload, *, reserved: bool) -> None:
        async with self._blob_locks.queue(blob.sha256):
            await self._run(self.blobs.commit, blob)
            try:
                await self.store.record_upload(upload, self._clock.time_msec(), self.config.default_quota, reserved=reserved)
            except UploadRefusedError as refused:
                await self._forget_blob_locked(blob.sha256)
                raise _refusal_error(refused.refusal) from None
            except BaseException:
                await self._forget_blob_locked(blob.sha256)
                raise

    async def _forget_blob_locked(self, sha256: str) -> None:
        """Deletes the blob's file if nothing references it (caller holds the hash's lock)."""
        if await self.store.forget_blob_if_unreferenced(sha256):
            await self._run(self.blobs.delete, sha256)

    async def _forget_blob(self, sha256: str) -> None:
        async with self._blob_locks.queue(sha256):
            await self._forget_blob_locked(sha256)

    # ------------------------------------------------------------------ downloads

    async def get_local_media(
        self, server_name: str, media_id: str, timeout_ms: int, *, legacy: bool = False
    ) -> MediaRecord:
        """Finds servable media, waiting for a pending upload.

        Args:
            server_name: the ``mxc://`` authority.
            media_id: the media ID (already checked against ``[A-Za-z0-9_-]``).
            timeout_ms: how long to wait for a pending upload (capped by config).
            legacy: for the deprecated unauthenticated endpoints (frozen per config).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` (unknown, quarantined, remote, frozen), 504
                ``M_NOT_YET_UPLOADED``.
        """
        if server_name != self.server_name:
            # Remote thumbnails need a thumbnail fetch in the port (TODO(#7)); downloads use get_remote_media.
            raise MatrixError(404, Codes.NOT_FOUND, "Remote media is not available on this server yet")
        record = await self.store.get_media(media_id)
        if record is not None and not record.is_uploaded:
            record = await self._wait_for_upload(media_id, timeout_ms)
        if record is None or record.quarantined_by is not None:
            raise MatrixError(404, Codes.NOT_FOUND, "Media not found")
        if legacy and not self._legacy_allows(record):
            raise MatrixError(404, Codes.NOT_FOUND, "Media not found")
        await self._note_access(media_id)
        return record

    async def get_remote_media(self, server_name: str, media_id: str, timeout_ms: int) -> ServedBlob:
        """Downloads another server's media through the port, capped at ``max_upload_size``.

        Raises:
            MatrixError: what the port raises (404 ``M_NOT_FOUND``; 502/504 when the server fails),
                502 when it returns more than the cap.
        """
        max_bytes = self.config.max_upload_size
        fetched = await self._remote.fetch(server_name, media_id, max_bytes, timeout_ms)
        if len(fetched.content) > max_bytes:
            raise MatrixError(502, Codes.UNKNOWN, "Remote media is larger than this server accepts")
        content_type = fetched.content_type.split(";", 1)[0].strip().lower()
        if not _MIME_TYPE.fullmatch(content_type):
            content_type = "application/octet-stream"  # never echo an unchecked header value
        return ServedBlob("", content_type, len(fetched.content), fetched.filename, data=fetched.content)

    def _legacy_allows(self, record: MediaRecord) -> bool:
        if self.config.legacy_unauthenticated_media == "open":
            return True
        return (record.uploaded_ts or 0) < self.config.legacy_freeze_before_ms

    async def _wait_for_upload(self, media_id: str, timeout_ms: int) -> MediaRecord | None:
        now = self._clock.time_msec()
        record = await self.store.get_media(media_id)
        if record is None or record.is_uploaded:
            return record
        if (record.unused_expires_ts or 0) <= now:
            return None
        wait_s = min(max(timeout_ms, 0) / 1000, self.config.max_download_wait_s)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._upload_waiters.setdefault(media_id, []).append(waiter)
        def give_up() -> None:
            if not waiter.called:
                waiter.callback(None)

        timer = self._clock.call_later(wait_s, give_up)
        try:
            await waiter
        finally:
            if timer.active():
                timer.cancel()
            waiters = self._upload_waiters.get(media_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._upload_waiters.pop(media_id, None)
        record = await self.store.get_media(media_id)
        if record is not None and not record.is_uploaded:
            raise MatrixError(504, Codes.NOT_YET_UPLOADED, "Content has not yet been uploaded")
        return record

    def _wake_waiters(self, media_id: str) -> None:
        for waiter in self._upload_waiters.pop(media_id, []):
            if not waiter.called:
                waiter.callback(None)

    async def _note_access(self, media_id: str) -> None:
        if self.config.local_media_lifetime_s is None:
            return
        now = self._clock.time_msec()
        if now - self._touched.get(media_id, 0) < TOUCH_INTERVAL_MS:
            return
        if len(self._touched) > 100_000:
            self._touched.clear()
        self._touched[media_id] = now
        await self.store.touch(media_id, now)

    def served_original(self, record: MediaRecord, filename: str | None = None) -> ServedBlob:
        """What a download of ``record`` serves (``filename`` overrides the stored name)."""
        assert record.sha256 is not None and record.content_type is not None and record.size is not None
        return ServedBlob(record.sha256, record.content_type, record.size, filename or record.filename)

    # ------------------------------------------------------------------ thumbnails

    async def get_thumbnail(
        self, record: MediaRecord, width: int, height: int, method: str, animated: bool
    ) -> ServedBlob:
        """Picks or makes a thumbnail per the spec (never smaller than asked, never upscaled).

        Raises:
            MatrixError: 400 ``M_UNKNOWN`` for content that cannot be thumbnailed, 413 ``M_TOO_LARGE``.
        """
        if record.content_type is None or record.width is None or record.height is None:
            raise MatrixError(400, Codes.UNKNOWN, "Cannot generate thumbnails for the requested content")
        animated = animated and (record.frames or 1) > 1
        is_animated_original = (record.frames or 1) > 1
        if serves_original(record.width, record.height, width, height) and (animated or not is_animated_original):
            return self.served_original(record)
        cached = await self.store.get_thumbnails(record.media_id)
        chosen = choose_thumbnail(cached, record.width, record.height, width, height, method, animated)
        if chosen is not None:
            return _served_thumbnail(chosen)
        return await self._generate(record, width, height, method, animated, len(cached))

    async def _generate(
        self, record: MediaRecord, width: int, height: int, method: str, animated: bool, cached_count: int
    ) -> ServedBlob:
        assert record.sha256 is not None
        key = f"{record.media_id}/{width}x{height}/{method}/{int(animated)}"
        async with self._thumb_locks.queue(key):
            for existing in await self.store.get_thumbnails(record.media_id):
                if (existing.width, existing.height, existing.method, existing.animated) == (width, height, method, animated):
                    return _served_thumbnail(existing)
            source = await self._run(self.blobs.local_path, record.sha256)
            if source is None:
                raise MatrixError(404, Codes.NOT_FOUND, "Media not found")
            thumb = await self._run(make_thumbnail, source, width, height, method, animated, self.config.max_image_pixels)
            if cached_count >= MAX_CACHED_THUMBNAILS:
                # Enough sizes stored for this media: serve this one from memory without keeping it.
                return ServedBlob("", thumb.content_type, len(thumb.data), None, is_thumbnail=True, data=thumb.data)
            return await self._store_thumbnail(record.media_id, width, height, method, thumb)

    async def _store_thumbnail(
        self, media_id: str, width: int, height: int, method: str, thumb: Thumbnail
    ) -> ServedBlob:
        blob = await self._run(self.blobs.ingest_bytes, thumb.data)
        row = ThumbnailRecord(
            media_id, width, height, method, thumb.animated, thumb.width, thumb.height, thumb.content_type,
            blob.sha256, blob.size,
        )
        try:
            async with self._blob_locks.queue(blob.sha256):
                await self._run(self.blobs.commit, blob)
                if not await self.store.add_thumbnail(row):
                    # The media was deleted meanwhile: do not keep a file nothing references.
                    await self._forget_blob_locked(blob.sha256)
                    return ServedBlob("", thumb.content_type, len(thumb.data), None, is_thumbnail=True, data=thumb.data)
        finally:
            await self._run(self.blobs.discard, blob)
        return _served_thumbnail(row)

    async def _pregenerate_thumbnails(self, media_id: str) -> None:
        record = await self.store.get_media(media_id)
        if record is None or record.width is None or record.height is None:
            return
        for size in self.config.thumbnail_sizes:
            if serves_original(record.width, record.height, size.width, size.height):
                continue
            try:
                await self._generate(record, size.width, size.height, size.method, False, 0)
            except MatrixError as error:
                logger.info("no %dx%d thumbnail for %s: %s", size.width, size.height, media_id, error.message)
                return

    # ------------------------------------------------------------------ deletion, quarantine, quotas

    async def delete(self, media_id: str) -> bool:
        """Deletes local media with its thumbnails; False when it does not exist."""
        record = await self.store.get_media(media_id)
        if record is None:
            return False
        for sha256 in await self.store.delete_media(media_id):
            await self._forget_blob(sha256)
        logger.info("deleted media %s", media_id)
        return True

    async def delete_own(self, user_id: str, server_name: str, media_id: str) -> None:
        """Deletes media the user uploaded (extension endpoint).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` for unknown, remote, or other users' media (one answer,
                so IDs of others' media are not confirmed).
        """
        record = await self.store.get_media(media_id) if server_name == self.server_name else None
        if record is None or record.user_id != user_id:
            raise MatrixError(404, Codes.NOT_FOUND, "Media not found")
        await self.delete(media_id)

    async def set_quarantine(self, server_name: str, media_id: str, admin_user_id: str | None) -> None:
        """Quarantines (or releases, with None) local media.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND``.
        """
        if server_name != self.server_name or not await self.store.set_quarantine(media_id, admin_user_id):
            raise MatrixError(404, Codes.NOT_FOUND, "Media not found")

    async def get_usage(self, user_id: str) -> dict[str, Any]:
        """The user's usage as JSON: ``used_bytes``, ``file_count``, ``quota_bytes`` (effective), ``custom_quota``."""
        usage = await self.store.get_usage(user_id)
        return usage_json(usage, self.config.default_quota)

    # ------------------------------------------------------------------ periodic cleanup

    async def run_cleanup(self) -> dict[str, int]:
        """Expires reservations, applies retention, removes stale temporary and orphaned files."""
        now = self._clock.time_msec()
        stats = {"reservations": await self.store.expire_reservations(now), "retention": 0}
        lifetime = self.config.local_media_lifetime_s
        if lifetime is not None:
            for media_id in await self.store.get_unaccessed_media(now - int(lifetime * 1000), 1000):
                if await self.delete(media_id):
                    stats["retention"] += 1
        stats["temporary_files"] = await self._run(self.blobs.sweep_temporary_files, TEMP_FILE_MAX_AGE_S)
        if not self._orphans_swept:
            # Orphans only come from a crash between placing a file and recording it, so once per start suffices.
            self._orphans_swept = True
            stats["orphans"] = await self.sweep_orphans(ORPHAN_MIN_AGE_S)
        return stats

    async def sweep_orphans(self, min_age_s: float) -> int:
        """Deletes blob files older than ``min_age_s`` that no row references; returns the count."""
        cutoff = self._clock.time() - min_age_s
        keys = await self._run(lambda: [k for k, mtime in self.blobs.provider.iter_keys() if mtime < cutoff])
        removed = 0
        for key in keys:
            async with self._blob_locks.queue(key):
                if not await self.store.is_blob_referenced(key):
                    await self._forget_blob_locked(key)
                    removed += 1
        return removed


def usage_json(usage: MediaUsage, default_quota: int | None) -> dict[str, Any]:
    """The JSON shape of a user's usage (see docs/media.md)."""
    quota = usage.quota_bytes if usage.quota_bytes is not None else default_quota
    return {
        "used_bytes": usage.used_bytes,
        "file_count": usage.file_count,
        "quota_bytes": quota,
        "custom_quota": usage.quota_bytes is not None,
    }


def choose_thumbnail(
    cached: list[ThumbnailRecord],
    src_width: int,
    src_height: int,
    width: int,
    height: int,
    method: str,
    animated: bool,
) -> ThumbnailRecord | None:
    """The smallest stored thumbnail that is at least what the request would produce, or None.

    For ``crop`` the stored thumbnail must also have (nearly) the requested aspect ratio.
    """
    want_width, want_height = thumbnail_size(src_width, src_height, width, height, method)
    best: ThumbnailRecord | None = None
    for thumb in cached:
        if thumb.method != method or thumb.animated != animated:
            continue
        if thumb.thumb_width < want_width or thumb.thumb_height < want_height:
            continue
        if method == "crop":
            wanted_aspect = want_width / want_height
            if abs(thumb.thumb_width / thumb.thumb_height - wanted_aspect) > 0.05 * wanted_aspect:
                continue
        if best is None or thumb.thumb_width * thumb.thumb_height < best.thumb_width * best.thumb_height:
            best = thumb
    return best


def _served_thumbnail(thumb: ThumbnailRecord) -> ServedBlob:
    return ServedBlob(thumb.sha256, thumb.content_type, thumb.size, None, is_thumbnail=True)


def _refusal_error(refusal: UploadRefusal) -> MatrixError:
    if refusal is UploadRefusal.QUOTA_EXCEEDED:
        return MatrixError(403, Codes.FORBIDDEN, "This upload would exceed your media storage quota")
    if refusal is UploadRefusal.WRONG_USER:
        return MatrixError(403, Codes.FORBIDDEN, "This media ID was created by another user")
    if refusal is UploadRefusal.ALREADY_UPLOADED:
        return MatrixError(409, Codes.CANNOT_OVERWRITE_MEDIA, "Media already uploaded")
    return MatrixError(404, Codes.NOT_FOUND, "Unknown media ID")
