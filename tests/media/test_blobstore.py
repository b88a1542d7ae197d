"""The content-addressed blob store: atomic commits, dedup, size limits, temporary-file sweeps."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import pytest

from media.blobstore import BlobStore, BlobTooLargeError
from media.providers import BlobMissingError, LocalFilesystemProvider, check_key


def _store(tmp_path: Any) -> BlobStore:
    return BlobStore(LocalFilesystemProvider(str(tmp_path / "blobs")), str(tmp_path / "tmp"))


class BlobStoreTests:
    def test_ingest_commit_open(self, tmp_path: Any) -> None:
        """Content is hashed while copied, invisible until committed, then stored under a fanned-out path."""
        store = _store(tmp_path)
        data = os.urandom(700_000)
        blob = store.ingest(io.BytesIO(data), 10**7)
        key = hashlib.sha256(data).hexdigest()
        assert (blob.sha256, blob.size, blob.head) == (key, len(data), data[:8192])
        assert not store.exists(key)
        store.commit(blob)
        assert not os.path.exists(blob.temp_path)
        path = os.path.join(str(tmp_path / "blobs"), key[:2], key[2:4], key)
        assert os.path.exists(path)
        with store.open(key) as f:
            assert f.read() == data

    def test_same_content_is_one_file(self, tmp_path: Any) -> None:
        """Committing identical content twice keeps one file."""
        store = _store(tmp_path)
        for _ in range(2):
            store.commit(store.ingest(io.BytesIO(b"same"), 100))
        assert len(list(store.provider.iter_keys())) == 1

    def test_too_large_leaves_nothing(self, tmp_path: Any) -> None:
        """Exceeding the limit while copying raises and removes the temporary file."""
        store = _store(tmp_path)
        with pytest.raises(BlobTooLargeError):
            store.ingest(io.BytesIO(b"x" * 1001), 1000)
        assert os.listdir(store.temp_dir) == []

    def test_crash_before_commit_leaves_no_visible_blob(self, tmp_path: Any) -> None:
        """An ingested but uncommitted upload (a crash) is only a temporary file, swept later."""
        store = _store(tmp_path)
        blob = store.ingest(io.BytesIO(b"partial"), 100)
        assert not store.exists(blob.sha256)
        assert store.sweep_temporary_files(3600) == 0
        os.utime(blob.temp_path, (0, 0))
        assert store.sweep_temporary_files(3600) == 1

    def test_missing_and_delete(self, tmp_path: Any) -> None:
        """Opening a missing blob raises BlobMissingError; delete is idempotent."""
        store = _store(tmp_path)
        key = "0" * 64
        with pytest.raises(BlobMissingError):
            store.open(key)
        store.delete(key)
        assert store.local_path(key) is None
        assert store.sweep_temporary_files(1) == 0  # temp dir not even created yet

    @pytest.mark.parametrize("key", ["../etc/passwd", "A" * 64, "0" * 63, ""])
    def test_keys_are_checked(self, key: str) -> None:
        """Only lower-case SHA-256 hex digests are keys (no path traversal)."""
        with pytest.raises(ValueError):
            check_key(key)
