"""Media repository benchmark, optionally side by side with Synapse.

Measures over real HTTP against a fresh server process (loopback, one user):

* upload throughput (MB/s): ``--files`` uploads of ``--size-mb`` MB each, ``--concurrency`` at a time;
* download throughput (MB/s): every file downloaded ``--rounds`` times through the authenticated
  ``/_matrix/client/v1/media/download`` endpoint, bytes checked;
* image uploads per second (``--images`` JPEGs of 1600x1200; both servers generate their thumbnail
  sizes at upload, SecureConnect in the background after answering) and thumbnail requests per
  second (96x96 crop of each image, right after the uploads, then again once all are stored);
* in process (SecureConnect only): thumbnail generations per second with Pillow (the 5 spec sizes).

Run: ``python bench/media.py [--servers ours,synapse] [--db sqlite|postgres] [--files 20]
[--size-mb 20] [--concurrency 4] [--images 30] [--rounds 2]``. Figures are wall-clock on whatever
else the machine runs; compare runs made back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # after the sys.path insert: needs the repository root
    CHEAP_ARGON2,
    PostgresDatabases,
    ServerProcess,
    free_port,
    generate_config,
    register_user,
)

SERVER_NAME = "bench.local"
DEFAULT_POSTGRES = os.environ.get("SC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "bench-password-123"


def jpeg(seed: int, size: tuple[int, int] = (1600, 1200)) -> bytes:
    """A photo-like JPEG (noise over a gradient, so it compresses like a real picture)."""
    from PIL import Image

    base = Image.linear_gradient("L").resize(size).convert("RGB")
    noise = Image.effect_noise(size, 40 + seed % 20).convert("RGB")
    out = io.BytesIO()
    Image.blend(base, noise, 0.3).save(out, format="JPEG", quality=85)
    return out.getvalue()


async def bounded(concurrency: int, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs))


async def measure(base_url: str, args: argparse.Namespace) -> dict[str, float]:
    """Runs every HTTP scenario against one server; returns the figures."""
    import aiohttp

    token = register_user(base_url, "bench" + secrets.token_hex(4), PASSWORD)["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    figures: dict[str, float] = {}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def upload(data: bytes, content_type: str) -> str:
            async with session.post(
                f"{base_url}/_matrix/media/v3/upload", data=data, headers={**auth, "Content-Type": content_type}
            ) as response:
                body = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"upload failed: {response.status} {body}")
                return str(body["content_uri"])[len("mxc://"):]

        async def fetch(path: str) -> bytes:
            async with session.get(f"{base_url}/_matrix/client/v1/media/{path}", headers=auth) as response:
                data = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"GET {path} failed: {response.status} {data[:200]!r}")
                return data

        size = int(args.size_mb * 1024 * 1024)
        files = [b"%PDF-1.7\n" + os.urandom(size) for _ in range(args.files)]
        total_mb = sum(len(f) for f in files) / 1024 / 1024
        start = time.perf_counter()
        ids = await bounded(args.concurrency, [partial(upload, f, "application/pdf") for f in files])
        figures["upload MB/s"] = total_mb / (time.perf_counter() - start)

        start = time.perf_counter()
        jobs: list[Callable[[], Awaitable[Any]]] = [partial(fetch, f"download/{i}") for i in ids] * args.rounds
        bodies = await bounded(args.concurrency, jobs)
        figures["download MB/s"] = total_mb * args.rounds / (time.perf_counter() - start)
        expected = {i: f for i, f in zip(ids, files, strict=True)}
        if any(body != expected[i] for i, body in zip(ids * args.rounds, bodies, strict=True)):
            raise RuntimeError("a download differed from its upload")

        images = [jpeg(i) for i in range(args.images)]
        start = time.perf_counter()
        image_ids = await bounded(args.concurrency, [partial(upload, d, "image/jpeg") for d in images])
        figures["image uploads/s"] = len(images) / (time.perf_counter() - start)
        for label in ("thumbnail GETs/s (first)", "thumbnail GETs/s (again)"):
            if label.endswith("(again)"):
                # Let background thumbnail generation finish, so this pass measures serving alone.
                await asyncio.sleep(len(images) * 5 / args.thumbnail_rate + 2)
            start = time.perf_counter()
            await bounded(
                args.concurrency, [partial(fetch, f"thumbnail/{i}?width=96&height=96&method=crop") for i in image_ids]
            )
            figures[label] = len(image_ids) / (time.perf_counter() - start)
    return figures


def thumbnail_rate(count: int) -> float:
    """In-process: spec-size thumbnails generated per second from a 1600x1200 JPEG."""
    from homeserver.config.media import DEFAULT_THUMBNAIL_SIZES
    from media.thumbnails import make_thumbnail

    with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
        f.write(jpeg(1))
        f.flush()
        start = time.perf_counter()
        made = 0
        for _ in range(count):
            for size in DEFAULT_THUMBNAIL_SIZES:
                make_thumbnail(f.name, size.width, size.height, size.method, False, 32_000_000)
                made += 1
        return made / (time.perf_counter() - start)


def start_ours(db: str, postgres_url: str, tmp: Path, cleanup: list[Callable[[], None]]) -> ServerProcess:
    database_url = None
    if db == "postgres":
        pg = PostgresDatabases(postgres_url)
        name, database_url = pg.create("sc_media_bench")
        cleanup.append(pg.close)
        cleanup.append(lambda: pg.drop(name))
    port = free_port()
    overrides = {**CHEAP_ARGON2, "ratelimits": {"enabled": False}, "media": {"max_upload_size": "200M"}}
    config = generate_config(tmp / "ours", server_name=SERVER_NAME, port=port, database_url=database_url, overrides=overrides)
    server = ServerProcess(config, f"http://127.0.0.1:{port}", tmp / "ours.log")
    server.start(ready_timeout=60)
    cleanup.append(server.kill)
    return server


def run_one(kind: str, args: argparse.Namespace) -> dict[str, float]:
    cleanup: list[Callable[[], None]] = []
    with tempfile.TemporaryDirectory(prefix="sc-media-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            if kind == "ours":
                base_url = start_ours(args.db, args.postgres_url, tmp, cleanup).base_url
                label = f"ours ({args.db})"
            else:
                from bench.synapse_setup import start_synapse

                synapse = start_synapse(db=args.db, postgres_url=args.postgres_url, data_dir=tmp / "synapse")
                cleanup.append(synapse.close)
                base_url, label = synapse.base_url, f"synapse {synapse.version} ({args.db})"
            print(f"{label}: {base_url}", flush=True)
            figures = asyncio.run(measure(base_url, args))
            for name, value in figures.items():
                print(f"  {name:36s} {value:10.1f}", flush=True)
            return figures
        finally:
            for action in reversed(cleanup):
                action()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="ours", help="comma-separated: ours, synapse")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=30)
    args = parser.parse_args(argv)
    args.thumbnail_rate = thumbnail_rate(max(1, args.images // 5))
    print(f"in process: {args.thumbnail_rate:.1f} thumbnails/s (Pillow, 1600x1200 JPEG)")
    results = {kind: run_one(kind, args) for kind in args.servers.split(",")}
    if "ours" in results and "synapse" in results:
        print("ratio ours/synapse:")
        for name in results["ours"]:
            print(f"  {name:36s} {results['ours'][name] / results['synapse'][name]:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
