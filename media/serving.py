"""Streaming media responses: headers (SEC-13), ``Range`` requests, and the file producer.

Every media response, success or error, carries ``Content-Security-Policy`` (the spec's
recommended sandboxing policy), ``X-Content-Type-Options: nosniff``,
``Cross-Origin-Resource-Policy: cross-origin`` and ``Cache-Control``. ``Content-Disposition`` is
``inline`` only for the spec's list of types that are safe to render inline (never HTML, SVG or
script types), ``attachment`` otherwise; the file name follows RFC 6266 (``filename="..."`` for
plain ASCII, ``filename*=utf-8''...`` otherwise).
"""

from __future__ import annotations

import logging
from typing import Any, BinaryIO
from urllib.parse import quote

from twisted.internet import defer
from twisted.web.server import Request

from homeserver.http.cors import add_cors_headers
from homeserver.http.server import encode_json_body
from sc_proto.errors import MatrixError

logger = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    b"sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    b"style-src 'unsafe-inline'; object-src 'self';"
)
"""The spec's recommended policy for served content."""

INLINE_SAFE_TYPES = frozenset({
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave", "audio/wav",
    "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
})
"""Types the spec allows with ``Content-Disposition: inline`` (spec "Serving inline content")."""

CACHE_CONTROL_MEDIA = b"private, max-age=86400, immutable"
CACHE_CONTROL_PUBLIC_MEDIA = b"public, max-age=86400, immutable"
CACHE_CONTROL_ERROR = b"no-cache, no-store, must-revalidate"
CHUNK_SIZE = 64 * 1024
_ATTR_CHARS = "!#$&+-.^_`|~"


class RangeNotSatisfiableError(Exception):
    """The ``Range`` header asks for bytes the content does not have (416)."""


def content_type_header(content_type: str) -> bytes:
    """The ``Content-Type`` value: the stored type, with ``charset=utf-8`` for text."""
    if content_type.startswith("text/"):
        return f"{content_type}; charset=utf-8".encode("ascii")
    return content_type.encode("ascii")


def content_disposition(content_type: str, filename: str | None, *, force_inline: bool = False) -> bytes:
    """The ``Content-Disposition`` value for serving ``content_type`` as ``filename``."""
    base = content_type.split(";", 1)[0].strip().lower()
    disposition = "inline" if force_inline or base in INLINE_SAFE_TYPES else "attachment"
    if not filename:
        return disposition.encode("ascii")
    if all(0x20 <= ord(ch) <= 0x7E for ch in filename) and '"' not in filename and "\\" not in filename:
        return f'{disposition}; filename="{filename}"'.encode("ascii")
    encoded = quote(filename.encode("utf-8"), safe=_ATTR_CHARS)
    return f"{disposition}; filename*=utf-8''{encoded}".encode("ascii")


def parse_range(header: bytes | None, size: int) -> tuple[int, int] | None:
    """Parses a single-range ``Range: bytes=...`` header against content of ``size`` bytes.

    Returns:
        ``(first, last)`` inclusive, or None to serve the whole content (no header, another unit,
        several ranges, or a malformed header, all of which RFC 9110 lets a server ignore).

    Raises:
        RangeNotSatisfiableError: the range starts beyond the content.
    """
    if header is None:
        return None
    unit, sep, spec = header.strip().partition(b"=")
    if not sep or unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first_raw, dash, last_raw = spec.strip().partition(b"-")
    if not dash:
        return None
    first_raw, last_raw = first_raw.strip(), last_raw.strip()
    if (first_raw and not first_raw.isdigit()) or (last_raw and not last_raw.isdigit()) or len(spec) > 64:
        return None
    if not first_raw:
        if not last_raw:
            return None
        suffix = int(last_raw)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError()
        return max(0, size - suffix), size - 1
    first = int(first_raw)
    last = int(last_raw) if last_raw else size - 1
    if last_raw and last < first:
        return None
    if first >= size:
        raise RangeNotSatisfiableError()
    return first, min(last, size - 1)


def set_security_headers(request: Request, cache_control: bytes) -> None:
    """Sets the headers every media response carries."""
    headers = request.responseHeaders
    headers.setRawHeaders(b"Content-Security-Policy", [CONTENT_SECURITY_POLICY])
    headers.setRawHeaders(b"X-Content-Type-Options", [b"nosniff"])
    headers.setRawHeaders(b"Cross-Origin-Resource-Policy", [b"cross-origin"])
    headers.setRawHeaders(b"Cache-Control", [cache_control])
    add_cors_headers(request)


def write_error(request: Request, error: MatrixError) -> None:
    """Writes a Matrix error as JSON (with the media security headers)."""
    if request.finished or _untyped(request).startedWriting:
        return
    body = encode_json_body(error.to_json())
    request.setResponseCode(error.http_status)
    request.responseHeaders.setRawHeaders(b"Content-Type", [b"application/json"])
    request.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % (len(body),)])
    request.responseHeaders.removeHeader(b"Content-Disposition")
    set_security_headers(request, CACHE_CONTROL_ERROR)
    if error.http_status == 429 and isinstance(error.extra.get("retry_after_ms"), int):
        request.responseHeaders.setRawHeaders(b"Retry-After", [b"%d" % (max(1, error.extra["retry_after_ms"] // 1000),)])
    if request.method != b"HEAD":
        _untyped(request).write(body)
    _untyped(request).finish()


class FileProducer:
    """Streams ``length`` bytes of an open file from ``offset`` to a request (a push producer).

    The transport pauses it when its buffer is full and resumes it when drained; a client that
    disconnects stops it. The file is closed in every case. :attr:`done` fires when it ends.
    """

    def __init__(self, request: Request, source: BinaryIO, offset: int, length: int) -> None:
        self._request = request
        self._source = source
        self._remaining = length
        self._paused = False
        self._finished = False
        self.done: defer.Deferred[None] = defer.Deferred()
        source.seek(offset)

    def start(self) -> None:
        """Registers with the request and starts writing."""
        _untyped(self._request).registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        """Writes chunks until paused, finished, or the client is gone (Twisted's name)."""
        self._paused = False
        try:
            while not self._paused and not self._finished and self._remaining > 0:
                chunk = self._source.read(min(CHUNK_SIZE, self._remaining))
                if not chunk:
                    logger.error("media file ended %d bytes early", self._remaining)
                    self._end(complete=False)
                    return
                self._remaining -= len(chunk)
                _untyped(self._request).write(chunk)
        except Exception:
            logger.exception("error while streaming media")
            self._end(complete=False)
            return
        if self._remaining <= 0 and not self._finished:
            self._end(complete=True)

    def pauseProducing(self) -> None:
        """Stops writing until resumed (Twisted's name)."""
        self._paused = True

    def stopProducing(self) -> None:
        """The client went away: stop and clean up (Twisted's name)."""
        self._end(complete=False, connection_lost=True)

    def _end(self, *, complete: bool, connection_lost: bool = False) -> None:
        if self._finished:
            return
        self._finished = True
        self._source.close()
        request: Any = self._request
        try:
            request.unregisterProducer()
        except Exception:
            logger.debug("unregisterProducer failed", exc_info=True)
        if not connection_lost and not request.finished:
            if complete:
                request.finish()
            else:
                # The headers promised more bytes than we can send: drop the connection.
                transport = getattr(request.channel, "transport", None)
                if transport is not None:
                    transport.abortConnection()
        if not self.done.called:
            self.done.callback(None)


def _untyped(obj: object) -> Any:
    return obj
