"""STORAGE-3 / RACE-3: concurrent uploads never exceed the quota (real database threads, both engines)."""

from __future__ import annotations

import io
import os
from typing import Any

from twisted.internet import defer, task

from homeserver.config.media import MediaConfig
from homeserver.util.clock import Clock
from media.blobstore import BlobStore
from media.providers import LocalFilesystemProvider
from media.repository import MediaRepository
from media.store import MediaStore, NewUpload, UploadRefusal, UploadRefusedError
from tests.storage.harness import TestDatabase, ThreadCallbackReactor


async def _run_inline(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _upload(i: int, size: int) -> NewUpload:
    return NewUpload(f"media{i}", "@alice:test:8448", "text/plain", size, f"{i:064x}", None)


class QuotaConcurrencyTests:
    def test_parallel_record_upload_stops_exactly_at_the_quota(self, prepared_database: TestDatabase) -> None:
        """30 simultaneous 100-byte uploads against a 1000-byte quota: exactly 10 are recorded."""
        reactor = ThreadCallbackReactor()
        pool = prepared_database.make_pool(reactor=reactor, run_in_thread=True, pool_max=8, txn_retries=100)
        try:
            store = MediaStore(pool)
            attempts = [defer.ensureDeferred(store.record_upload(_upload(i, 100), 1, 1000, reserved=False)) for i in range(30)]
            outcomes = reactor.wait(defer.DeferredList(attempts, consumeErrors=True))
            succeeded = [ok for ok, _ in outcomes if ok]
            refusals = [r.value.refusal for ok, r in outcomes if not ok and isinstance(r.value, UploadRefusedError)]
            assert len(succeeded) == 10
            assert refusals == [UploadRefusal.QUOTA_EXCEEDED] * 20
            usage = reactor.wait(defer.ensureDeferred(store.get_usage("@alice:test:8448")))
            assert (usage.used_bytes, usage.file_count) == (1000, 10)
        finally:
            prepared_database.close_pools(reactor)

    def test_parallel_repository_uploads_leave_no_refused_files(self, prepared_database: TestDatabase, tmp_path: Any) -> None:
        """Through the repository: 20 parallel uploads of distinct files, quota for 5; 5 files on disk."""
        reactor = ThreadCallbackReactor()
        pool = prepared_database.make_pool(reactor=reactor, run_in_thread=True, pool_max=8, txn_retries=100)
        try:
            root = str(tmp_path / "media")
            blobs = BlobStore(LocalFilesystemProvider(os.path.join(root, "blobs")), os.path.join(root, "tmp"))
            config = MediaConfig(media_store_path=root, default_quota=500)
            repo = MediaRepository("test:8448", config, MediaStore(pool), blobs, Clock(task.Clock()), _run_inline)
            bodies = [(f"file number {i:03d} ".encode() * 10)[:100] for i in range(20)]
            attempts = [
                defer.ensureDeferred(repo.upload("@alice:test:8448", io.BytesIO(body), "text/plain", None)) for body in bodies
            ]
            outcomes = reactor.wait(defer.DeferredList(attempts, consumeErrors=True))
            assert sum(ok for ok, _ in outcomes) == 5
            files = [f for _d, _s, names in os.walk(os.path.join(root, "blobs")) for f in names]
            assert len(files) == 5
            assert os.listdir(os.path.join(root, "tmp")) == []
        finally:
            prepared_database.close_pools(reactor)
