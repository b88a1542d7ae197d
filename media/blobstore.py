"""The content-addressed blob store shared by media and (later) the drive.

Theory of operation
-------------------
A blob is named by the SHA-256 of its bytes. Writing one is two steps:

1. :meth:`BlobStore.ingest` copies the incoming bytes into a fresh temporary file under
   ``<store>/tmp`` while hashing and counting them, enforcing the size limit as it goes; the file is
   flushed and ``fsync``-ed. Nothing under ``<store>/blobs`` changes, so a crash here leaves only a
   temporary file, removed by :meth:`BlobStore.sweep_temporary_files`.
2. :meth:`BlobStore.commit` hands the finished file to the provider, which renames it into place
   atomically. Identical content maps to the same key, so a second upload of the same bytes costs
   no extra space (deduplication).

Which blobs are still needed is recorded in the database (``media_blobs.refcount``, see
:mod:`media.store`); the repository deletes a blob's file only after its count reached zero, under a
per-hash lock (:mod:`media.repository`). Every method here blocks: run it on a thread.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from typing import BinaryIO

from media.providers import BlobMissingError, BlobProvider, check_key
from media.validation import SNIFF_BYTES

CHUNK_SIZE = 256 * 1024
"""Copy buffer size."""


class BlobTooLargeError(Exception):
    """The content exceeded the size limit while it was being received."""


@dataclass(frozen=True)
class IngestedBlob:
    """A finished temporary file, not yet committed.

    Attributes:
        temp_path: the temporary file (fsynced).
        sha256: hex digest of the content (the blob key).
        size: bytes.
        head: the first bytes (for type detection).
    """

    temp_path: str
    sha256: str
    size: int
    head: bytes


class BlobStore:
    """Content-addressed blobs over a :class:`~media.providers.BlobProvider`.

    Args:
        provider: where committed blobs live.
        temp_dir: where uploads are written before they are committed (on the provider's file
            system for the local provider, so the commit is a rename).
    """

    def __init__(self, provider: BlobProvider, temp_dir: str) -> None:
        self.provider = provider
        self.temp_dir = temp_dir  # created on the first write

    def _temp_file(self, prefix: str) -> tuple[int, str]:
        os.makedirs(self.temp_dir, exist_ok=True)
        return tempfile.mkstemp(prefix=prefix, dir=self.temp_dir)

    def ingest(self, source: BinaryIO, max_size: int) -> IngestedBlob:
        """Copies ``source`` (from its start) into a temporary file, hashing it.

        Raises:
            BlobTooLargeError: more than ``max_size`` bytes (the temporary file is removed).
        """
        fd, temp_path = self._temp_file("upload-")
        digest = hashlib.sha256()
        size = 0
        head = b""
        try:
            with os.fdopen(fd, "wb") as out:
                source.seek(0)
                while True:
                    chunk = source.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > max_size:
                        raise BlobTooLargeError(f"more than {max_size} bytes")
                    if len(head) < SNIFF_BYTES:
                        head += chunk[: SNIFF_BYTES - len(head)]
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            _unlink_quietly(temp_path)
            raise
        return IngestedBlob(temp_path, digest.hexdigest(), size, head)

    def ingest_bytes(self, data: bytes) -> IngestedBlob:
        """Like :meth:`ingest` for bytes already in memory (thumbnails)."""
        fd, temp_path = self._temp_file("thumb-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            _unlink_quietly(temp_path)
            raise
        return IngestedBlob(temp_path, hashlib.sha256(data).hexdigest(), len(data), data[:SNIFF_BYTES])

    def commit(self, blob: IngestedBlob) -> None:
        """Makes the blob visible under its key (atomically; a no-op copy if it already exists)."""
        self.provider.put(blob.sha256, blob.temp_path)

    def discard(self, blob: IngestedBlob) -> None:
        """Removes an uncommitted temporary file."""
        _unlink_quietly(blob.temp_path)

    def open(self, key: str) -> BinaryIO:
        """Opens a committed blob.

        Raises:
            BlobMissingError: it does not exist.
        """
        return self.provider.open(check_key(key))

    def read_all(self, key: str, max_size: int) -> bytes:
        """Reads a whole (small) blob into memory.

        Raises:
            BlobMissingError: it does not exist.
            BlobTooLargeError: it is larger than ``max_size``.
        """
        with self.open(key) as stream:
            data = stream.read(max_size + 1)
        if len(data) > max_size:
            raise BlobTooLargeError(key)
        return data

    def exists(self, key: str) -> bool:
        """Whether the blob is stored."""
        return self.provider.size(check_key(key)) is not None

    def delete(self, key: str) -> None:
        """Deletes the blob's object (callers check the reference count first)."""
        self.provider.delete(check_key(key))

    def local_path(self, key: str) -> str | None:
        """A local file path to the blob, if the provider keeps one."""
        return self.provider.local_path(check_key(key))

    def sweep_temporary_files(self, older_than_s: float) -> int:
        """Deletes temporary files older than ``older_than_s`` (uploads that crashed); returns the count."""
        cutoff = time.time() - older_than_s
        removed = 0
        try:
            names = os.listdir(self.temp_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            path = os.path.join(self.temp_dir, name)
            try:
                if os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


__all__ = ["BlobMissingError", "BlobStore", "BlobTooLargeError", "IngestedBlob"]
