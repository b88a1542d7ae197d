"""Range parsing and Content-Disposition (RFC 9110, RFC 6266, spec "Serving inline content")."""

from __future__ import annotations

import pytest

from media.serving import RangeNotSatisfiableError, content_disposition, content_type_header, parse_range


class RangeTests:
    @pytest.mark.parametrize("header,expected", [
        (None, None), (b"bytes=0-9", (0, 9)), (b"bytes=5-", (5, 99)), (b"bytes=-10", (90, 99)),
        (b"bytes=-1000", (0, 99)), (b"bytes=90-1000", (90, 99)), (b"items=0-1", None), (b"bytes=0-1,3-4", None),
        (b"bytes=5-2", None), (b"bytes=a-b", None), (b"bytes", None), (b"bytes=-", None), (b"bytes=1-2-3", None),
    ])
    def test_parse(self, header: bytes | None, expected: tuple[int, int] | None) -> None:
        """Valid single ranges are clamped to the content; anything else means the whole content."""
        assert parse_range(header, 100) == expected

    @pytest.mark.parametrize("header,size", [(b"bytes=100-", 100), (b"bytes=150-200", 100), (b"bytes=-0", 100), (b"bytes=0-", 0)])
    def test_unsatisfiable(self, header: bytes, size: int) -> None:
        """Ranges starting past the end are 416."""
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(header, size)


class DispositionTests:
    def test_inline_only_for_safe_types(self) -> None:
        """Images, audio, video and plain text are inline; HTML, SVG, JS, PDF, zip are attachments (SEC-13)."""
        for safe in ("image/png", "video/mp4", "audio/ogg", "text/plain", "text/csv"):
            assert content_disposition(safe, None) == b"inline"
        for unsafe in ("text/html", "image/svg+xml", "application/javascript", "application/pdf", "application/zip"):
            assert content_disposition(unsafe, None) == b"attachment"

    def test_filenames(self) -> None:
        """ASCII names are quoted; quotes, backslashes and non-ASCII use filename* (RFC 5987 encoding)."""
        assert content_disposition("image/png", "a b.png") == b'inline; filename="a b.png"'
        assert content_disposition("image/png", 'a"b') == b"inline; filename*=utf-8''a%22b"
        assert content_disposition("image/png", "ü.png") == b"inline; filename*=utf-8''%C3%BC.png"
        assert content_disposition("text/html", "x\\y") == b"attachment; filename*=utf-8''x%5Cy"

    def test_content_type_header(self) -> None:
        """Text gets a UTF-8 charset; others are unchanged."""
        assert content_type_header("text/plain") == b"text/plain; charset=utf-8"
        assert content_type_header("image/png") == b"image/png"
