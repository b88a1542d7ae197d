"""Type detection from magic bytes, declared-type checks, the allow list and safe image decoding."""

from __future__ import annotations

import os
from typing import Any

import pytest

from media.validation import (
    DOCX,
    EXECUTABLE,
    OCTET_STREAM,
    ODT,
    check_allowed,
    check_declared_type,
    detect_content_type,
    image_dimensions,
    inspect_image,
    is_allowed,
    normalise_content_type,
)
from sc_proto.errors import MatrixError
from tests.media import samples

DETECTED = {
    "PDF": "application/pdf", "MP4": "video/mp4", "MOV": "video/quicktime", "M4A": "audio/mp4",
    "WEBM": "video/webm", "MKV": "video/x-matroska", "OGG": "audio/ogg", "MP3_ID3": "audio/mpeg",
    "MP3_FRAME": "audio/mpeg", "WAV": "audio/wav", "TEXT": "text/plain", "HTML": "text/html",
    "SVG": "image/svg+xml", "XML_SVG": "image/svg+xml", "ELF": EXECUTABLE, "PE": EXECUTABLE,
    "MACHO": EXECUTABLE,
}


class DetectionTests:
    @pytest.mark.parametrize("name", sorted(DETECTED))
    def test_magic_bytes(self, name: str) -> None:
        """Each sample is detected as its real type."""
        assert detect_content_type(getattr(samples, name)) == DETECTED[name]

    @pytest.mark.parametrize("fmt,expected", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("WEBP", "image/webp")])
    def test_images(self, fmt: str, expected: str) -> None:
        """Real images made by Pillow are detected."""
        assert detect_content_type(samples.image_bytes(fmt)) == expected

    def test_office_documents(self, tmp_path: Any) -> None:
        """ODF is told from its stored mimetype member; OOXML from the archive's names (needs the file)."""
        odt = samples.zip_bytes({"content.xml": b"<x/>"}, mimetype=ODT)
        assert detect_content_type(odt) == ODT
        docx = samples.zip_bytes({"[Content_Types].xml": b"<x/>", "word/document.xml": b"<x/>"})
        path = str(tmp_path / "f")
        with open(path, "wb") as f:
            f.write(docx)
        assert detect_content_type(docx[:8192], path) == DOCX
        assert detect_content_type(docx) == "application/zip"
        assert detect_content_type(samples.zip_bytes({"a.txt": b"hi"}), path=None) == "application/zip"

    def test_text_edge_cases(self) -> None:
        """NUL bytes, invalid UTF-8 and control-heavy data are binary; a cut multi-byte character at the window end is text."""
        assert detect_content_type(b"abc\x00def") == OCTET_STREAM
        assert detect_content_type(b"\xff\xfe\x00a") == OCTET_STREAM
        assert detect_content_type(b"\x01\x02\x03\x04" * 10) == OCTET_STREAM
        assert detect_content_type(b"") == OCTET_STREAM
        window = ("é" * 4095).encode() + b"a" + "é".encode()[:1]
        assert len(window) == 8192
        assert detect_content_type(window) == "text/plain"
        assert detect_content_type(b"\xef\xbb\xbfhello") == "text/plain"
        assert detect_content_type(b"   \n<HTML><body>x") == "text/html"

    def test_random_bytes_are_not_misdetected_as_mp3(self) -> None:
        """0xFFE. with reserved header fields is not taken for an MP3 frame."""
        assert detect_content_type(b"\xff\xff\xff\xff" + os.urandom(16)) == OCTET_STREAM
        assert detect_content_type(b"MZ" + b"\x00" * 100) == OCTET_STREAM  # "MZ" alone is not a program


class DeclaredTypeTests:
    def test_agreeing_declarations(self) -> None:
        """Absent, generic or alias declarations agree; the declared alias is what is stored."""
        assert check_declared_type(None, "image/png") == "image/png"
        assert check_declared_type("application/octet-stream", "image/png") == "image/png"
        assert check_declared_type("IMAGE/JPG; foo=bar", "image/jpeg") == "image/jpg"
        assert check_declared_type("text/csv", "text/plain") == "text/csv"
        assert check_declared_type("audio/x-wav", "audio/wav") == "audio/x-wav"
        assert check_declared_type("application/zip", DOCX) == "application/zip"
        assert check_declared_type(DOCX, "application/zip") == DOCX

    @pytest.mark.parametrize("declared,detected", [
        ("image/png", "text/html"), ("text/html", "text/plain"), ("image/svg+xml", "text/plain"),
        ("application/javascript", "text/plain"), ("image/jpeg", "application/pdf"), ("video/mp4", "audio/ogg"),
    ])
    def test_contradictions_refused(self, declared: str, detected: str) -> None:
        """A declared type that contradicts the content is 400 M_INVALID_PARAM (STORAGE-2)."""
        with pytest.raises(MatrixError) as raised:
            check_declared_type(declared, detected)
        assert (raised.value.http_status, raised.value.errcode.value) == (400, "M_INVALID_PARAM")

    def test_normalise(self) -> None:
        """Parameters and case are dropped; empty is None."""
        assert normalise_content_type(" Text/Plain ; charset=UTF-8") == "text/plain"
        assert normalise_content_type("") is None
        assert normalise_content_type(None) is None

    def test_allow_list(self) -> None:
        """Exact entries and type/* wildcards; others are 403 M_FORBIDDEN (STORAGE-1)."""
        assert is_allowed("image/png", ["image/*"])
        assert not is_allowed("text/html", ["image/*", "text/plain"])
        check_allowed("text/plain", ["text/plain"])
        with pytest.raises(MatrixError) as raised:
            check_allowed("text/html", ["text/plain"])
        assert raised.value.http_status == 403


class ImageInspectionTests:
    def test_decodes_and_measures(self, tmp_path: Any) -> None:
        """A good image gives its size and frame count."""
        path = str(tmp_path / "a.gif")
        with open(path, "wb") as f:
            f.write(samples.animated_gif((30, 20), frames=4))
        info = inspect_image(path, 10_000)
        assert (info.width, info.height, info.frames) == (30, 20, 4)

    def test_pixel_budget_and_garbage(self, tmp_path: Any) -> None:
        """Images above the budget and undecodable files are 400 M_INVALID_PARAM."""
        path = str(tmp_path / "a.png")
        with open(path, "wb") as f:
            f.write(samples.image_bytes("PNG", (100, 100)))
        with pytest.raises(MatrixError):
            inspect_image(path, 9_999)
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
        with pytest.raises(MatrixError):
            inspect_image(path, 10**9)

    def test_header_dimensions(self) -> None:
        """PNG and GIF sizes are read from headers without Pillow; other formats give None."""
        assert image_dimensions(samples.image_bytes("PNG", (7, 9))) == (7, 9)
        assert image_dimensions(samples.image_bytes("GIF", (7, 9))) == (7, 9)
        assert image_dimensions(samples.PDF) is None
