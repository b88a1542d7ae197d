"""Streaming download and thumbnail endpoints (a Twisted resource mounted by path prefix).

* ``GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]`` (access token required)
* ``GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}?width=&height=&method=&animated=``
* the deprecated ``/_matrix/media/{v3,r0}/download|thumbnail/...``, served per
  ``media.legacy_unauthenticated_media`` (frozen by default: 404 ``M_NOT_FOUND``).

These are not JSON request/response endpoints, so they do not go through
:class:`~homeserver.http.server.JsonResource`'s handlers: the body is streamed from the blob store
with ``Range`` support (206/416), and errors are rendered here as Matrix JSON errors carrying the
same security headers as content (:mod:`media.serving`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from homeserver.http.auth import Authenticator
from homeserver.http.servlet import parse_boolean, parse_integer, parse_string
from homeserver.logging.context import request_id as request_id_var
from media.providers import BlobMissingError
from media.repository import MediaRepository, ServedBlob, ThreadRunner
from media.rest import local_media_id
from media.serving import (
    CACHE_CONTROL_MEDIA,
    CACHE_CONTROL_PUBLIC_MEDIA,
    FileProducer,
    RangeNotSatisfiableError,
    content_disposition,
    content_type_header,
    parse_range,
    set_security_headers,
    write_error,
)
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

AUTHENTICATED_PREFIX = "/_matrix/client/v1/media/"
LEGACY_PREFIXES = ("/_matrix/media/v3/", "/_matrix/media/r0/")
DEFAULT_TIMEOUT_MS = 20_000
MAX_THUMBNAIL_DIMENSION = 10_000


@dataclass(frozen=True)
class _Route:
    kind: str  # "download" or "thumbnail"
    legacy: bool
    server_name: str
    media_id: str
    filename: str | None


def mount_paths() -> list[str]:
    """The path prefixes :class:`MediaDownloadResource` must be mounted on."""
    prefixes = [AUTHENTICATED_PREFIX, *LEGACY_PREFIXES]
    return [prefix + kind + "/" for prefix in prefixes for kind in ("download", "thumbnail")]


def parse_media_path(path: bytes) -> _Route | None:
    """Splits a download/thumbnail path; None when it is not one.

    Raises:
        MatrixError: 400 for undecodable segments.
    """
    text = path.decode("latin-1")
    for prefix, legacy in ((AUTHENTICATED_PREFIX, False), *((p, True) for p in LEGACY_PREFIXES)):
        if not text.startswith(prefix):
            continue
        kind, _, rest = text[len(prefix):].partition("/")
        parts = rest.split("/")
        if (kind == "download" and len(parts) in (2, 3)) or (kind == "thumbnail" and len(parts) == 2):
            try:
                decoded = [unquote_to_bytes(part).decode("utf-8") for part in parts]
            except UnicodeDecodeError:
                raise MatrixError(400, Codes.INVALID_PARAM, "Path is not valid UTF-8") from None
            filename = decoded[2] if len(decoded) == 3 and decoded[2] else None
            return _Route(kind, legacy, decoded[0], decoded[1], filename)
        return None
    return None


class MediaDownloadResource(Resource):
    """Serves media bytes and thumbnails.

    Args:
        repository: the media repository.
        authenticator: access-token authentication (authenticated endpoints).
        run_in_thread: runs blocking file opens off the reactor.
    """

    isLeaf = True

    def __init__(self, repository: MediaRepository, authenticator: Authenticator, run_in_thread: ThreadRunner) -> None:
        _untyped(super()).__init__()
        self._repo = repository
        self._auth = authenticator
        self._run = run_in_thread
        self.inflight = 0

    def render(self, request: Request) -> int:
        """Starts handling the request; the response is written asynchronously."""
        self.inflight += 1
        d = defer.ensureDeferred(self._handle(request))

        def done(result: object) -> None:
            self.inflight -= 1
            if isinstance(result, Failure):
                logger.error("media request failed: %s", result.getTraceback())

        d.addBoth(done)
        return NOT_DONE_YET

    async def _handle(self, request: Request) -> None:
        request_id_var.set(getattr(request, "request_id", None) or "media")
        try:
            method = request.method or b""
            if method == b"OPTIONS":
                raise _Preflight()
            if method not in (b"GET", b"HEAD"):
                raise MatrixError(405, Codes.UNRECOGNIZED, "Unrecognized request method")
            route = parse_media_path(request.path or b"")
            if route is None:
                raise MatrixError(404, Codes.UNRECOGNIZED, "Unrecognized request")
            served = await self._resolve(request, route)
            await self._send(request, served, route)
        except _Preflight:
            set_security_headers(request, b"no-cache")
            request.setResponseCode(200)
            request.responseHeaders.setRawHeaders(b"Content-Length", [b"0"])
            _untyped(request).finish()
        except MatrixError as error:
            write_error(request, error)
        except Exception:
            logger.exception("error serving media")
            write_error(request, MatrixError(500, Codes.UNKNOWN, "Internal server error"))

    async def _resolve(self, request: Request, route: _Route) -> ServedBlob:
        if not route.legacy:
            await self._auth.get_requester(request, allow_guest=True)
        elif self._auth.has_access_token(request):
            # A token sent to a legacy endpoint must still be valid (spec: same auth rules).
            await self._auth.get_requester(request, allow_guest=True)
        local_media_id(route.server_name, route.media_id)
        timeout_ms = parse_integer(request, "timeout_ms", DEFAULT_TIMEOUT_MS, minimum=0, maximum=2**31)
        if route.kind == "thumbnail":
            width = parse_integer(request, "width", required=True, minimum=1, maximum=MAX_THUMBNAIL_DIMENSION)
            height = parse_integer(request, "height", required=True, minimum=1, maximum=MAX_THUMBNAIL_DIMENSION)
            method = parse_string(request, "method", "scale", allowed_values=("crop", "scale"))
            animated = parse_boolean(request, "animated", False)
        if route.kind == "download" and route.server_name != self._repo.server_name:
            return await self._repo.get_remote_media(route.server_name, route.media_id, timeout_ms)
        record = await self._repo.get_local_media(route.server_name, route.media_id, timeout_ms, legacy=route.legacy)
        if route.kind == "download":
            return self._repo.served_original(record, route.filename)
        return await self._repo.get_thumbnail(record, width, height, method, animated)

    async def _send(self, request: Request, served: ServedBlob, route: _Route) -> None:
        source: Any = None
        if served.data is None:
            try:
                source = await self._run(self._repo.blobs.open, served.sha256)
            except BlobMissingError:
                logger.error("media %s: blob %s is missing", route.media_id, served.sha256)
                raise MatrixError(404, Codes.NOT_FOUND, "Media not found") from None
        try:
            await self._write(request, served, route, source)
        finally:
            if source is not None and not source.closed:
                source.close()

    async def _write(self, request: Request, served: ServedBlob, route: _Route, source: Any) -> None:
        headers = request.responseHeaders
        set_security_headers(request, CACHE_CONTROL_PUBLIC_MEDIA if route.legacy else CACHE_CONTROL_MEDIA)
        headers.setRawHeaders(b"Content-Type", [content_type_header(served.content_type)])
        filename = served.filename if not served.is_thumbnail else "thumbnail." + served.content_type.split("/")[1]
        headers.setRawHeaders(
            b"Content-Disposition",
            [content_disposition(served.content_type, filename, force_inline=served.is_thumbnail)],
        )
        headers.setRawHeaders(b"Accept-Ranges", [b"bytes"])
        etag = f'"{served.sha256}"'.encode("ascii") if served.sha256 else None
        if etag is not None:
            headers.setRawHeaders(b"ETag", [etag])
        size = served.size
        range_header = request.getHeader(b"Range")
        if_range = request.getHeader(b"If-Range")
        if if_range is not None and if_range != etag:
            range_header = None
        try:
            wanted = parse_range(range_header, size)
        except RangeNotSatisfiableError:
            headers.setRawHeaders(b"Content-Range", [b"bytes */%d" % (size,)])
            raise MatrixError(416, Codes.UNKNOWN, "Requested range not satisfiable") from None
        first, length = 0, size
        if wanted is not None:
            first, last = wanted
            length = last - first + 1
            request.setResponseCode(206)
            headers.setRawHeaders(b"Content-Range", [b"bytes %d-%d/%d" % (first, last, size)])
        headers.setRawHeaders(b"Content-Length", [b"%d" % (length,)])
        if request.method == b"HEAD" or length == 0:
            _untyped(request).finish()
            return
        if served.data is not None:
            _untyped(request).write(served.data[first:first + length])
            _untyped(request).finish()
            return
        producer = FileProducer(request, source, first, length)
        request.notifyFinish().addErrback(lambda _f: producer.stopProducing())
        producer.start()
        await producer.done


class _Preflight(Exception):
    """An ``OPTIONS`` request: answered with the CORS headers only."""


def _untyped(obj: object) -> Any:
    return obj
