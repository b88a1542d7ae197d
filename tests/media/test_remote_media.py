"""Remote media downloads go through the ``RemoteMediaFetcher`` port (ADR 0009)."""

from __future__ import annotations

from typing import Any

from homeserver.api.ports import RemoteMedia, RemotePorts
from sc_proto.errors import Codes, MatrixError
from tests.homeserver.fake_ports import FakePorts
from tests.media.test_media_api import MediaTestCase

REMOTE = "remote.example"


class RemoteMediaTests(MediaTestCase):
    def make_ports(self) -> RemotePorts:
        self.fake = FakePorts()
        return self.fake.ports()

    def test_download_fetches_through_the_port(self) -> None:
        """The port gets the server, media ID, the upload cap and the client's timeout; its bytes are served."""
        self.fake.media.answers["fetch"] = RemoteMedia("text/plain", b"hello", "note.txt")
        channel = self.download(f"{REMOTE}/abc123", suffix="?timeout_ms=1500")
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.result["body"], b"hello")
        self.assertEqual(channel.headers.getRawHeaders(b"Content-Type"), [b"text/plain; charset=utf-8"])
        max_bytes = self.hs.config.media.max_upload_size
        self.assertEqual(self.fake.media.called("fetch"), [(REMOTE, "abc123", max_bytes, 1500)])

    def test_port_errors_are_relayed(self) -> None:
        """404 and 502 from the remote server reach the client as they are."""
        for error in (MatrixError(404, Codes.NOT_FOUND, "gone"), MatrixError(502, Codes.UNKNOWN, "unreachable")):
            self.fake.media.answers["fetch"] = error
            channel = self.download(f"{REMOTE}/abc123")
            self.assertEqual(channel.code, error.http_status)
            self.assertEqual(channel.json_body["errcode"], error.errcode.value)

    def test_unchecked_content_type_is_not_echoed(self) -> None:
        """A malformed remote Content-Type becomes application/octet-stream."""
        self.fake.media.answers["fetch"] = RemoteMedia("text/html\r\nX-Evil: 1", b"<b>x</b>")
        channel = self.download(f"{REMOTE}/abc123")
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.headers.getRawHeaders(b"Content-Type"), [b"application/octet-stream"])

    def test_oversized_answer_is_refused(self) -> None:
        """A port answer above the cap is a 502, never served."""
        cap = self.hs.config.media.max_upload_size

        def too_big(server: str, media_id: str, max_bytes: int, timeout_ms: int) -> Any:
            return RemoteMedia("application/octet-stream", b"x" * (cap + 1))

        self.fake.media.answers["fetch"] = too_big
        channel = self.download(f"{REMOTE}/abc123")
        self.assertEqual(channel.code, 502)
