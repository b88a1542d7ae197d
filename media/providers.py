"""Object storage behind the blob store: a Protocol and the local file-system provider.

Every method blocks (file or network I/O); callers run them on a thread. Keys are lower-case
SHA-256 hex digests, so they are safe path components (checked again by the local provider).
An S3-compatible provider would implement the same Protocol: ``put`` uploads the finished temporary
file, ``open`` streams the object, ``local_path`` returns None (thumbnailing then reads a copy).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import BinaryIO, Protocol

_KEY_RE = re.compile(r"[0-9a-f]{64}")


class BlobMissingError(Exception):
    """The object for a key does not exist."""


def check_key(key: str) -> str:
    """Returns ``key`` if it is a SHA-256 hex digest.

    Raises:
        ValueError: it is not (never pass client input here unchecked).
    """
    if not _KEY_RE.fullmatch(key):
        raise ValueError("blob keys are lower-case SHA-256 hex digests")
    return key


class BlobProvider(Protocol):
    """Where blobs live. Implementations must make :meth:`put` atomic: an object is either absent or whole."""

    def put(self, key: str, source_path: str) -> None:
        """Stores the finished file ``source_path`` (fsynced) under ``key``; consumes the file.

        Storing a key that already exists keeps one copy (the content is the same by construction).
        """
        ...

    def open(self, key: str) -> BinaryIO:
        """Opens the object for reading.

        Raises:
            BlobMissingError: no such object.
        """
        ...

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""
        ...

    def delete(self, key: str) -> None:
        """Deletes the object (no error if it is already gone)."""
        ...

    def local_path(self, key: str) -> str | None:
        """A file-system path to the object when the provider has one (local disk), else None."""
        ...

    def iter_keys(self) -> Iterator[tuple[str, float]]:
        """Every stored key with its modification time (seconds since the epoch)."""
        ...


class LocalFilesystemProvider:
    """Blobs as files under ``root``, fanned out by hash: ``root/ab/cd/abcd…``.

    Args:
        root: the directory (created if missing).
    """

    def __init__(self, root: str) -> None:
        self.root = root  # created on the first write

    def path_for(self, key: str) -> str:
        """The file path of ``key``."""
        check_key(key)
        return os.path.join(self.root, key[0:2], key[2:4], key)

    def put(self, key: str, source_path: str) -> None:
        """Renames the finished file into place (atomic on one file system) and syncs the directory."""
        target = self.path_for(key)
        directory = os.path.dirname(target)
        os.makedirs(directory, exist_ok=True)
        os.replace(source_path, target)
        _fsync_directory(directory)

    def open(self, key: str) -> BinaryIO:
        """Opens the file for reading."""
        try:
            return open(self.path_for(key), "rb")
        except FileNotFoundError:
            raise BlobMissingError(key) from None

    def size(self, key: str) -> int | None:
        """The file size, or None."""
        try:
            return os.stat(self.path_for(key)).st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        """Removes the file (and empty fan-out directories are left for reuse)."""
        try:
            os.unlink(self.path_for(key))
        except FileNotFoundError:
            pass

    def local_path(self, key: str) -> str | None:
        """The file path when the file exists."""
        path = self.path_for(key)
        return path if os.path.exists(path) else None

    def iter_keys(self) -> Iterator[tuple[str, float]]:
        """Walks the fan-out directories."""
        for directory, _subdirs, files in os.walk(self.root):
            for name in files:
                if _KEY_RE.fullmatch(name):
                    try:
                        mtime = os.stat(os.path.join(directory, name)).st_mtime
                    except FileNotFoundError:
                        continue
                    yield name, mtime


def _fsync_directory(path: str) -> None:
    """Makes a rename durable (POSIX: the directory entry lives in the directory's data)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
