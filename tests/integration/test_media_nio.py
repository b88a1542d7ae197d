"""Media through matrix-nio and aiohttp against a real server process (SQLite and PostgreSQL).

matrix-nio 0.26 uploads with ``POST /_matrix/media/v3/upload`` and downloads and thumbnails through
the authenticated ``/_matrix/client/v1/media`` endpoints; headers, ranges and the frozen legacy
endpoints are checked with aiohttp beside it.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    MemoryDownloadResponse,
    ThumbnailResponse,
    UploadError,
    UploadResponse,
)

from bench.common import ServerProcess
from tests.integration.conftest import ServerFactory

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-battery"
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), timeout=120))


def png(size: tuple[int, int] = (640, 480)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


async def logged_in(server: ServerProcess, store: Path, localpart: str) -> AsyncClient:
    config = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False, max_limit_exceeded=0, max_timeouts=0)
    store.mkdir(parents=True, exist_ok=True)
    client = AsyncClient(server.base_url, localpart, config=config, store_path=str(store))
    await client.register(localpart, PASSWORD)
    return client


async def upload(client: AsyncClient, data: bytes, content_type: str, filename: str) -> UploadResponse | UploadError:
    response, _keys = await client.upload(io.BytesIO(data), content_type=content_type, filename=filename, filesize=len(data))
    return response


async def authed_get(server: ServerProcess, token: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            server.base_url + path, headers={"Authorization": f"Bearer {token}", **(headers or {})}
        ) as response:
            return response.status, response.headers, await response.read()


class MediaNioTests:
    def test_upload_and_download_round_trips(self, homeserver_any_db: ServerProcess, tmp_path: Path) -> None:
        """nio uploads and downloads; downloads are byte-identical (whole, ranged, 8 MB); thumbnails work;
        the frozen legacy endpoint answers 404 and the authenticated one 401 without a token."""
        server = homeserver_any_db

        async def scenario() -> None:
            client = await logged_in(server, tmp_path / "alice", "alice")
            try:
                image = png()
                uploaded = await upload(client, image, "image/png", "photo.png")
                assert isinstance(uploaded, UploadResponse), uploaded
                server_name, media_id = uploaded.content_uri[len("mxc://"):].split("/")
                status, headers, body = await authed_get(server, client.access_token, f"/_matrix/client/v1/media/download/{server_name}/{media_id}")
                assert (status, body) == (200, image)
                assert headers["Content-Disposition"] == 'inline; filename="photo.png"'
                assert headers["X-Content-Type-Options"] == "nosniff"
                assert headers["Content-Security-Policy"].startswith("sandbox;")
                status, _, thumb = await authed_get(
                    server, client.access_token, f"/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}?width=96&height=96&method=crop"
                )
                assert status == 200 and thumb.startswith(b"\x89PNG")

                big = b"%PDF-1.7\n" + os.urandom(8 * 1024 * 1024)
                uploaded = await upload(client, big, "application/pdf", "big.pdf")
                assert isinstance(uploaded, UploadResponse), uploaded
                path = "/_matrix/client/v1/media/download/" + uploaded.content_uri[len("mxc://"):]
                status, headers, body = await authed_get(server, client.access_token, path)
                assert (status, len(body), body == big) == (200, len(big), True)
                assert headers["Content-Disposition"] == 'attachment; filename="big.pdf"'
                status, headers, body = await authed_get(server, client.access_token, path, {"Range": "bytes=5000000-5000999"})
                assert (status, body) == (206, big[5_000_000:5_001_000])

                downloaded = await client.download(mxc=f"mxc://{server_name}/{media_id}")
                assert isinstance(downloaded, MemoryDownloadResponse) and downloaded.body == image
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"{server.base_url}/_matrix/media/v3/download/{server_name}/{media_id}") as legacy:
                        assert (legacy.status, (await legacy.json())["errcode"]) == (404, "M_NOT_FOUND")
                    async with session.get(f"{server.base_url}{path}") as anonymous:
                        assert anonymous.status == 401
                refused = await upload(client, b"<html><script>alert(1)</script></html>", "text/html", "x.html")
                assert isinstance(refused, UploadError) and refused.status_code == "M_FORBIDDEN"
            finally:
                await client.close()

        run(scenario)

    def test_limits_and_open_legacy_endpoints(self, server_factory: ServerFactory, tmp_path: Path) -> None:
        """An upload over max_upload_size is 413 M_TOO_LARGE; with legacy media open, unauthenticated downloads work."""
        server = server_factory(overrides={"media": {"max_upload_size": "1M", "legacy_unauthenticated_media": "open"}})

        async def scenario() -> None:
            client = await logged_in(server, tmp_path / "bob", "bob")
            try:
                # The server answers 413 from the headers and closes the connection without reading the body;
                # a client that waits for "100 Continue" (as large uploads should) reads the answer.
                async with aiohttp.ClientSession() as session:
                    async with session.post(
                        f"{server.base_url}/_matrix/media/v3/upload", data=b"%PDF-1.7\n" + b"\0" * (2 * 1024 * 1024),
                        headers={"Authorization": f"Bearer {client.access_token}", "Content-Type": "application/pdf"},
                        expect100=True,
                    ) as too_big:
                        assert (too_big.status, (await too_big.json())["errcode"]) == (413, "M_TOO_LARGE")
                image = png((300, 200))
                uploaded = await upload(client, image, "image/png", "p.png")
                assert isinstance(uploaded, UploadResponse)
                server_name, media_id = uploaded.content_uri[len("mxc://"):].split("/")
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"{server.base_url}/_matrix/media/v3/download/{server_name}/{media_id}") as legacy:
                        assert (legacy.status, await legacy.read()) == (200, image)
                thumbnail = await client.thumbnail(server_name, media_id, 32, 32)
                assert isinstance(thumbnail, ThumbnailResponse) and thumbnail.content_type == "image/png"
            finally:
                await client.close()

        run(scenario)
