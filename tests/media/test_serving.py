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


class _FakeRequest:
    """Records writes; pauses its producer after ``pause_after`` writes (a full transport buffer)."""

    def __init__(self, pause_after: int | None = None) -> None:
        self.written: list[bytes] = []
        self.finished = False
        self.producer: object = None
        self.pause_after = pause_after
        self.channel = None

    def registerProducer(self, producer: object, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.pause_after is not None and len(self.written) % self.pause_after == 0:
            self.producer.pauseProducing()  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.finished = True


class FileProducerTests:
    def test_streams_the_range_with_back_pressure(self) -> None:
        """The producer stops when paused, continues when resumed, writes exactly the range, then finishes."""
        import io

        from media.serving import CHUNK_SIZE, FileProducer

        data = bytes(range(256)) * (CHUNK_SIZE // 64)  # four chunks
        source = io.BytesIO(data)
        request = _FakeRequest(pause_after=1)
        producer = FileProducer(request, source, 10, len(data) - 20)  # type: ignore[arg-type]
        producer.start()
        assert len(request.written) == 1 and not request.finished
        while not request.finished:
            producer.resumeProducing()
        assert b"".join(request.written) == data[10:-10]
        assert producer.done.called and source.closed and request.producer is None

    def test_client_disconnect_stops_and_closes(self) -> None:
        """stopProducing (the client went away) closes the file and never finishes the request."""
        import io

        from media.serving import FileProducer

        source = io.BytesIO(b"x" * 1_000_000)
        request = _FakeRequest(pause_after=1)
        producer = FileProducer(request, source, 0, 1_000_000)  # type: ignore[arg-type]
        producer.start()
        producer.stopProducing()
        producer.resumeProducing()
        assert source.closed and producer.done.called and not request.finished
        assert len(request.written) == 1
