"""Wires the media repository (issue 7, docs/media.md) into a homeserver.

Builds the blob store under ``media.media_store_path`` (``blobs/`` fanned out by hash, ``tmp/`` for
uploads in progress), the :class:`~media.repository.MediaRepository`, registers the JSON endpoints
on ``hs.resource`` and mounts the streaming download/thumbnail resource by path prefix. Blocking file
and image work runs on a dedicated thread pool when the reactor has threads (inline under the fake
test reactor). A periodic job expires reservations, applies retention and removes stale files.
Remote media downloads go through ``hs.ports.media``. Provides :class:`MediaRepository` and
:class:`MediaDownloadResource`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from homeserver.app.features import Feature, FeatureServices, Provided
from media.blobstore import BlobStore
from media.download import MediaDownloadResource, mount_paths
from media.providers import LocalFilesystemProvider
from media.repository import MediaRepository, ThreadRunner
from media.rest import MediaServlets
from media.store import MediaStore

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

MEDIA_THREADS = 8


def thread_runner(reactor: Any) -> ThreadRunner:
    """Runs blocking media work on its own thread pool, or inline when the reactor has no threads."""
    if not IReactorFromThreads.providedBy(reactor):

        async def run_inline(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
            return fn(*args, **kwargs)

        return run_inline
    pool = ThreadPool(minthreads=1, maxthreads=MEDIA_THREADS, name="media")
    pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)

    def run_threaded(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        return cast(Awaitable[R], deferToThreadPool(reactor, pool, fn, *args, **kwargs))

    return run_threaded


async def wire(hs: Homeserver, _services: FeatureServices) -> Provided:
    """Builds the media repository, registers its endpoints and starts its cleanup job."""
    config = hs.config.media
    provider = LocalFilesystemProvider(os.path.join(config.media_store_path, "blobs"))
    blobs = BlobStore(provider, os.path.join(config.media_store_path, "tmp"))
    run_in_thread = thread_runner(hs.reactor)
    repository = MediaRepository(
        hs.config.server.server_name, config, MediaStore(hs.pool), blobs, hs.clock, run_in_thread,
        remote=hs.ports.media,
    )
    MediaServlets(repository, hs.authenticator).register(hs.resource)
    download = MediaDownloadResource(repository, hs.authenticator, run_in_thread)
    for prefix in mount_paths():
        hs.resource.mount_prefix(prefix, download)
    cleanup = hs.clock.looping_call(repository.run_cleanup, config.cleanup_interval_s)
    def stop_cleanup() -> None:
        if cleanup.running:
            cleanup.stop()

    hs.reactor.addSystemEventTrigger("before", "shutdown", stop_cleanup)
    # Run the first cleanup soon after start (orphans from a crash, stale temporary files).
    def first_cleanup() -> None:
        defer.ensureDeferred(repository.run_cleanup()).addErrback(
            lambda f: logger.error("media cleanup failed: %s", f.getErrorMessage())
        )

    hs.clock.call_later(60.0, first_cleanup)
    return [repository, download]


FEATURE = Feature("media", wire, provides=(MediaRepository, MediaDownloadResource))
