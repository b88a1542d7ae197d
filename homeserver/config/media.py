"""The ``media:`` section: the content repository (docs/media.md)."""

from __future__ import annotations

import os
import re

import attrs

from homeserver.config._options import (
    BOOL,
    BYTE_SIZE,
    PATH,
    ParseContext,
    ValueType,
    choice,
    fail,
    integer,
    list_of,
    option,
    optional,
    positive_number,
    string,
)

DEFAULT_ALLOWED_CONTENT_TYPES: tuple[str, ...] = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "video/mp4",
    "video/quicktime",
    "video/webm",
    "video/x-matroska",
    "audio/ogg",
    "audio/mpeg",
    "audio/wav",
    "audio/mp4",
    "text/plain",
    "application/zip",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
    "application/epub+zip",
    "application/octet-stream",
)
"""Types (as detected from the content) accepted by default.

Every type the server detects except markup (HTML, SVG, XML) and executables, plus
``application/octet-stream`` (content of no recognisable type), without which end-to-end encrypted
attachments (ciphertext, indistinguishable from random bytes) could not be uploaded.
"""

_SIZE_RE = re.compile(r"(\d{1,5})x(\d{1,5})")


@attrs.frozen
class ThumbnailSize:
    """One pre-generated thumbnail size.

    Attributes:
        width: the requested width in pixels.
        height: the requested height in pixels.
        method: ``crop`` or ``scale``.
    """

    width: int
    height: int
    method: str


def _parse_thumbnail_size(value: object, path: str, _ctx: ParseContext) -> ThumbnailSize:
    name = "a thumbnail size such as '96x96 crop' or '320x240 scale' (or {width, height, method})"
    if isinstance(value, dict) and set(value) == {"width", "height", "method"}:
        # The mapping form is what the generated config shows for the defaults.
        width, height, method = value["width"], value["height"], value["method"]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (width, height)) or method not in ("crop", "scale"):
            raise fail(path, name, value)
    elif isinstance(value, str):
        dims, _, method = value.strip().partition(" ")
        match = _SIZE_RE.fullmatch(dims)
        method = method.strip() or "scale"
        if match is None or method not in ("crop", "scale"):
            raise fail(path, name, value)
        width, height = int(match.group(1)), int(match.group(2))
    else:
        raise fail(path, name, value)
    if not (1 <= width <= 4096 and 1 <= height <= 4096):
        raise fail(path, name + " (1 to 4096 pixels each)", value)
    return ThumbnailSize(width, height, method)


THUMBNAIL_SIZE = ValueType("a thumbnail size such as '96x96 crop'", _parse_thumbnail_size)

DEFAULT_THUMBNAIL_SIZES: tuple[ThumbnailSize, ...] = (
    ThumbnailSize(32, 32, "crop"),
    ThumbnailSize(96, 96, "crop"),
    ThumbnailSize(320, 240, "scale"),
    ThumbnailSize(640, 480, "scale"),
    ThumbnailSize(800, 600, "scale"),
)
"""The sizes the spec says servers SHOULD produce."""

CONTENT_TYPE = string(r"[a-z0-9][a-z0-9.+\-]*/([a-z0-9][a-z0-9.+\-]*|\*)", "a MIME type such as 'image/png' or 'image/*'")


@attrs.frozen
class MediaConfig:
    """Media repository storage, validation, quotas, thumbnails and retention."""

    max_upload_size: int = option(
        50 * 1024 * 1024,
        BYTE_SIZE,
        "Largest media upload accepted (advertised as m.upload.size). A larger body is answered "
        "413 M_TOO_LARGE as soon as its Content-Length (or the bytes received) exceed it.",
    )
    media_store_path: str = option(
        "media",
        PATH,
        "Directory where uploaded and cached remote media are stored.",
        default_doc="DATA/media",
        contextual=lambda ctx: os.path.join(ctx.data_dir, "media"),
    )
    allowed_content_types: tuple[str, ...] = option(
        DEFAULT_ALLOWED_CONTENT_TYPES,
        list_of(CONTENT_TYPE),
        "Content types accepted for upload, checked against the type detected from the file's bytes "
        "(not the declared Content-Type). 'type/*' allows a whole family. Other types are refused "
        "with 403 M_FORBIDDEN. application/octet-stream stands for content of no recognised type, which "
        "includes every end-to-end encrypted attachment: remove it only if encrypted rooms need no files.",
        default_doc="every detected type except HTML/SVG/XML and executables, plus application/octet-stream (docs/media.md)",
    )
    max_image_pixels: int = option(
        32_000_000,
        integer(minimum=1, maximum=1_000_000_000),
        "Largest image (width x height) accepted for upload and thumbnailing; a larger one (or a "
        "decompression bomb) is refused with 400 M_INVALID_PARAM.",
    )
    thumbnail_sizes: tuple[ThumbnailSize, ...] = option(
        DEFAULT_THUMBNAIL_SIZES,
        list_of(THUMBNAIL_SIZE),
        "Thumbnails generated for every uploaded image, as 'WIDTHxHEIGHT crop|scale'.",
        default_doc="['32x32 crop', '96x96 crop', '320x240 scale', '640x480 scale', '800x600 scale']",
    )
    default_quota: int | None = option(
        None,
        optional(BYTE_SIZE),
        "Total bytes each user may have uploaded (admins can set per-user quotas); null is unlimited. "
        "An upload that would exceed it is refused with 403 M_FORBIDDEN.",
    )
    unused_expiration_s: float = option(
        24 * 3600.0,
        positive_number(maximum=30 * 24 * 3600),
        "Lifetime of an mxc:// URI reserved with POST /_matrix/media/v1/create and not yet uploaded.",
    )
    max_pending_uploads: int = option(
        10,
        integer(minimum=1, maximum=10_000),
        "Reserved, not yet uploaded mxc:// URIs one user may hold; more is 429 M_LIMIT_EXCEEDED.",
    )
    max_download_wait_s: float = option(
        20.0,
        positive_number(maximum=300),
        "Longest a download of not yet uploaded media waits (the client's timeout_ms is capped to this).",
    )
    legacy_unauthenticated_media: str = option(
        "frozen",
        choice("frozen", "open"),
        "The deprecated /_matrix/media/v3/download and /thumbnail endpoints: 'frozen' serves only "
        "media uploaded before legacy_freeze_before_ms (404 M_NOT_FOUND otherwise), 'open' serves all.",
    )
    legacy_freeze_before_ms: int = option(
        0,
        integer(minimum=0),
        "When frozen, local media uploaded before this time (ms since the epoch) stays available on "
        "the unauthenticated endpoints. 0 (the default) freezes everything.",
    )
    url_preview_enabled: bool = option(
        False,
        BOOL,
        "Serve /_matrix/client/v1/media/preview_url. Not implemented yet: the endpoint answers "
        "404 M_UNRECOGNIZED either way (fetching URLs safely needs an SSRF-hardened fetcher).",
    )
    local_media_lifetime_s: float | None = option(
        None,
        optional(positive_number()),
        "Delete local media not downloaded for this long (seconds); null keeps it for ever.",
    )
    remote_media_lifetime_s: float | None = option(
        None,
        optional(positive_number()),
        "Delete cached remote media not accessed for this long (for federation media, later).",
    )
    cleanup_interval_s: float = option(
        3600.0,
        positive_number(maximum=7 * 24 * 3600),
        "How often expired reservations, retention and unreferenced files are cleaned up.",
    )
