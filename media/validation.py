"""Content validation: the real type from magic bytes, declared types, allow lists, safe image decoding.

Theory of operation
-------------------
An upload's type is *detected* from its first bytes (:func:`detect_content_type`), never taken from
the client (audit STORAGE-2 / SEC-12). The declared ``Content-Type`` is then only a hint: it must be
absent, ``application/octet-stream``, or one of the spellings of the detected type
(:func:`check_declared_type`); anything else is refused, so a file cannot be smuggled in under a type
it does not have. The allow list is checked against the detected type (STORAGE-1 / SEC-2).

Detection covers exactly the types the server accepts by default; everything else is
``application/octet-stream``. Text counts as ``text/plain`` only when it is valid UTF-8 without NUL
bytes and does not open like markup (HTML, SVG, XML are detected as such and are not allowed by
default, so they are never stored, and the serving code never sends them inline either: SEC-13).

Images are opened with Pillow off the reactor thread by :func:`inspect_image`: dimensions are read
from the header and checked against a pixel budget *before* any decoding, then the image is fully
decoded once so truncated or malformed files are refused at upload time.
"""

from __future__ import annotations

import fnmatch
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass

from sc_proto.errors import Codes, MatrixError

SNIFF_BYTES = 8192
"""How much of the file's start detection looks at."""

OCTET_STREAM = "application/octet-stream"
"""Content of no recognised type: in particular the ciphertext of end-to-end encrypted attachments."""

EXECUTABLE = "application/x-executable"
"""ELF, Mach-O and PE programs (never allowed by default)."""
_EXECUTABLE_MAGIC = frozenset({b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe"})

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ODT = "application/vnd.oasis.opendocument.text"
ODS = "application/vnd.oasis.opendocument.spreadsheet"
ODP = "application/vnd.oasis.opendocument.presentation"
EPUB = "application/epub+zip"

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""Types Pillow decodes (checked at upload, thumbnailed)."""

_ZIP_FAMILY = frozenset({"application/zip", DOCX, XLSX, PPTX, ODT, ODS, ODP, EPUB})

# Detected type -> the declared spellings that agree with it (besides the type itself).
_ALIASES: dict[str, frozenset[str]] = {
    "image/png": frozenset({"image/apng"}),
    "image/jpeg": frozenset({"image/jpg", "image/pjpeg"}),
    "application/pdf": frozenset({"application/x-pdf"}),
    "video/mp4": frozenset({"audio/mp4", "audio/x-m4a", "audio/m4a", "video/x-m4v", "video/quicktime",
                            "video/3gpp", "audio/3gpp", "audio/aac"}),
    "audio/mp4": frozenset({"video/mp4", "audio/x-m4a", "audio/m4a", "audio/aac"}),
    "video/quicktime": frozenset({"video/mp4"}),
    "video/webm": frozenset({"audio/webm"}),
    "video/x-matroska": frozenset({"audio/x-matroska", "video/webm", "audio/webm"}),
    "audio/ogg": frozenset({"video/ogg", "application/ogg", "audio/opus", "audio/vorbis"}),
    "audio/mpeg": frozenset({"audio/mp3", "audio/mpeg3", "audio/x-mpeg-3", "audio/x-mp3"}),
    "audio/wav": frozenset({"audio/wave", "audio/x-wav", "audio/vnd.wave", "audio/x-pn-wav"}),
    "text/plain": frozenset({"text/csv", "text/markdown", "text/x-markdown", "text/tab-separated-values",
                             "text/x-log", "application/json"}),
    "application/zip": frozenset({"application/x-zip-compressed", *(_ZIP_FAMILY - {"application/zip"})}),
}
for _specific in _ZIP_FAMILY - {"application/zip"}:
    _ALIASES[_specific] = frozenset({"application/zip", "application/x-zip-compressed"})

_MARKUP_PREFIXES = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<svg", b"<iframe", b"<?xml")


# ---------------------------------------------------------------------- detection


def detect_content_type(head: bytes, path: str | None = None) -> str:
    """Detects a file's type from its first bytes.

    Args:
        head: the first :data:`SNIFF_BYTES` bytes (or the whole file if shorter).
        path: the whole file on disk, to tell zip-based office documents apart (optional).

    Returns:
        The MIME type, or ``application/octet-stream`` when it is not one the server knows.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav"}.get(head[8:12], OCTET_STREAM)
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _iso_bmff_type(head[8:12])
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return _ebml_type(head)
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or _is_mpeg_audio_frame(head):
        return "audio/mpeg"
    if head.startswith(b"PK\x03\x04"):
        return _zip_type(head, path)
    if _is_executable(head):
        return EXECUTABLE
    return _text_type(head)


def _is_executable(head: bytes) -> bool:
    if head[:4] in _EXECUTABLE_MAGIC:
        return True
    # PE (Windows): "MZ", then the offset of the "PE\0\0" header at 0x3c.
    if head.startswith(b"MZ") and len(head) >= 0x40:
        offset = struct.unpack("<I", head[0x3C:0x40])[0]
        return head[offset : offset + 4] == b"PE\x00\x00"
    return False


def _iso_bmff_type(brand: bytes) -> str:
    if brand == b"qt  ":
        return "video/quicktime"
    if brand in (b"M4A ", b"M4B ", b"M4P "):
        return "audio/mp4"
    return "video/mp4"


def _ebml_type(head: bytes) -> str:
    # The EBML header holds a DocType element (id 0x4282): "webm" or "matroska".
    index = head.find(b"\x42\x82", 4, 64)
    if index < 0:
        return OCTET_STREAM
    rest = head[index + 3 : index + 3 + 8]
    if rest.startswith(b"webm"):
        return "video/webm"
    if rest.startswith(b"matroska"):
        return "video/x-matroska"
    return OCTET_STREAM


def _is_mpeg_audio_frame(head: bytes) -> bool:
    if len(head) < 4 or head[0] != 0xFF or (head[1] & 0xE0) != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 0x3, (head[1] >> 1) & 0x3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 0x3
    # Reject reserved values so random bytes starting 0xFFE. are not taken for MP3.
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def _zip_type(head: bytes, path: str | None) -> str:
    # ODF and EPUB store an uncompressed "mimetype" member first (offset 30 of the local header).
    if head[30:38] == b"mimetype":
        declared = head[38:38 + 80].split(b"PK", 1)[0]
        for kind in (ODT, ODS, ODP, EPUB):
            if declared.startswith(kind.encode("ascii")):
                return kind
    if path is not None:
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist()[:10_000])
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return "application/zip"
        if "[Content_Types].xml" in names:
            for prefix, kind in (("word/", DOCX), ("xl/", XLSX), ("ppt/", PPTX)):
                if any(name.startswith(prefix) for name in names):
                    return kind
    return "application/zip"


def _text_type(head: bytes) -> str:
    if not head or b"\x00" in head:
        return OCTET_STREAM
    body = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut by the sniff window is fine; anything else is binary.
        if len(head) < SNIFF_BYTES or error.start < len(body) - 4:
            return OCTET_STREAM
        text = body[: error.start].decode("utf-8")
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b")
    if controls > len(text) // 100:
        return OCTET_STREAM
    lowered = text.lstrip().lower().encode("utf-8")
    if lowered.startswith(_MARKUP_PREFIXES):
        if lowered.startswith(b"<svg") or b"<svg" in lowered[:1024]:
            return "image/svg+xml"
        if lowered.startswith(b"<?xml"):
            return "application/xml"
        return "text/html"
    return "text/plain"


# ---------------------------------------------------------------------- declared types and allow list


def normalise_content_type(value: str | None) -> str | None:
    """Returns the lower-case ``type/subtype`` of a header value (parameters dropped), or None."""
    if value is None:
        return None
    base = value.split(";", 1)[0].strip().lower()
    return base or None


def check_declared_type(declared: str | None, detected: str) -> str:
    """Checks the client's declared type against the detected one; returns the type to store.

    The declared spelling is kept when it agrees (``text/csv`` for a text file, ``audio/mp4`` for an
    MP4 container) so clients get back what they sent; otherwise the detected type is stored.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when the declared type contradicts the content.
    """
    base = normalise_content_type(declared)
    if base is None or base == OCTET_STREAM or base == detected:
        return detected
    if base in _ALIASES.get(detected, frozenset()):
        return base
    raise MatrixError(
        400,
        Codes.INVALID_PARAM,
        f"The declared Content-Type {base!r} does not match the content ({detected})",
    )


def is_allowed(content_type: str, allowed: Iterable[str]) -> bool:
    """Whether ``content_type`` matches the allow list (entries may end in ``/*``)."""
    return any(fnmatch.fnmatchcase(content_type, pattern) for pattern in allowed)


def check_allowed(detected: str, allowed: Iterable[str]) -> None:
    """Refuses a detected type that is not on the allow list.

    Raises:
        MatrixError: 403 ``M_FORBIDDEN`` (the spec's answer for "the server does not permit the file type").
    """
    if not is_allowed(detected, allowed):
        raise MatrixError(403, Codes.FORBIDDEN, f"Files of type {detected} are not allowed")


# ---------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageInfo:
    """What an image upload decodes to.

    Attributes:
        width: pixels.
        height: pixels.
        frames: number of frames (more than one: animated).
    """

    width: int
    height: int
    frames: int


def image_dimensions(head: bytes) -> tuple[int, int] | None:
    """Reads PNG/GIF dimensions from the header without Pillow (a cheap pre-check), else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return int(width), int(height)
    return None


def inspect_image(path: str, max_pixels: int) -> ImageInfo:
    """Opens and fully decodes an image (blocking: run it in a thread).

    The pixel budget is checked from the header before decoding, so a decompression bomb is refused
    without allocating its pixels.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for an undecodable image or one above ``max_pixels``.
    """
    from PIL import Image

    try:
        # Image.open reads only the header (and itself refuses sizes past Pillow's own bomb limit).
        with Image.open(path) as image:
            width, height = image.size
            if width <= 0 or height <= 0 or width * height > max_pixels:
                raise MatrixError(400, Codes.INVALID_PARAM, f"Image is too large ({width}x{height} pixels)")
            frames = int(getattr(image, "n_frames", 1) or 1)
            image.load()
    except MatrixError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MatrixError(400, Codes.INVALID_PARAM, "Image is too large") from None
    except Exception:
        # Pillow raises many kinds of errors for malformed files (OSError, SyntaxError, ValueError...).
        raise MatrixError(400, Codes.INVALID_PARAM, "The image could not be decoded") from None
    return ImageInfo(width, height, frames)
