"""WebSocket sync push versus long-poll ``/sync``: fan-out latency and idle memory per connection.

Scenarios (each against a fresh ``sc-homeserver`` process on loopback):

* ``fanout``: N listeners (10, 50, 200 by default; one user and device each) are in one room; a sender
  posts ``--messages`` messages one at a time. The latency of a delivery is the time from the send
  request until a listener has the event: for WebSocket listeners when the ``sync`` frame arrives
  (each frame is acked at once), for long-poll listeners when their ``GET /sync`` returns it.
* ``idle``: N idle connections (2,000 by default; ``--idle 10000`` for the SecureConnect target), each
  with its own device: WebSocket connections that authenticated and wait, or ``GET /sync`` requests
  long-polling with a five-minute timeout. The server's RSS is read from ``/proc`` before and after
  (once it stopped growing); the figure is the delta divided by N. One server per kind, so memory
  freed by one kind is not reused by the other.

Clients are asyncio + aiohttp in this process; everything is bounded by ``--time-limit``. The
process's open-file limit is raised to its hard limit (each connection is a socket on both sides).

Usage: ``python bench/ws_push.py [--db sqlite|postgres] [--listeners 10,50,200] [--messages 10]
[--idle 2000] [--scenarios fanout,idle] [--time-limit 900]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    CHEAP_ARGON2,
    PostgresDatabases,
    ServerProcess,
    deep_merge,
    free_port,
    generate_config,
)

WS_PATH = "/_sc/client/v1/sync/ws"
V3 = "/_matrix/client/v3"
PASSWORD = "bench-password-1"
LONG_POLL_MS = 290_000
SERVER_OVERRIDES: dict[str, Any] = {
    "websocket": {"max_connections_per_user": 1_000_000, "max_connections_per_ip": 1_000_000},
}


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (0 without samples)."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def bounded(factories: list[Callable[[], Awaitable[Any]]], limit: int = 32) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(factory: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(one(f) for f in factories))


class Client:
    """HTTP helpers over one aiohttp session (no connection limit: long polls each need one)."""

    def __init__(self, base_url: str, session: Any) -> None:
        self.base_url = base_url
        self.session = session

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None,
                   params: dict[str, str] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.base_url + path, json=body, headers=headers,
                                        params=params) as response:
            answer: dict[str, Any] = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: {response.status} {answer}")
            return answer

    async def register(self, localpart: str) -> str:
        body = {"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
        return str((await self.call("POST", f"{V3}/register", body))["access_token"])

    async def login(self, localpart: str) -> str:
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
                "password": PASSWORD}
        return str((await self.call("POST", f"{V3}/login", body))["access_token"])

    async def since(self, token: str) -> str:
        flt = json.dumps({"room": {"timeline": {"limit": 1}}})
        return str((await self.call("GET", f"{V3}/sync", token=token, params={"filter": flt}))["next_batch"])

    async def send(self, token: str, room_id: str, text: str) -> None:
        path = f"{V3}/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}"
        await self.call("PUT", path, {"msgtype": "m.text", "body": text}, token)

    async def ws_start(self, token: str, since: str) -> Any:
        ws = await self.session.ws_connect(self.base_url.replace("http", "ws", 1) + WS_PATH, autoping=True)
        await ws.send_json({"type": "auth", "access_token": token, "since": since})
        ready = await ws.receive_json(timeout=60)
        if ready.get("type") != "ready":
            raise RuntimeError(f"websocket refused: {ready}")
        return ws


def texts(body: dict[str, Any], room_id: str) -> list[str]:
    events = body.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {}).get("events", [])
    return [e["content"].get("body", "") for e in events if e.get("type") == "m.room.message"]


# --------------------------------------------------------------------------- fan-out


class Deliveries:
    """When each listener saw each message."""

    def __init__(self, listeners: int, messages: int) -> None:
        self.listeners = listeners
        self.seen: list[dict[int, float]] = [{} for _ in range(listeners)]
        self.counts = [0] * messages
        self.complete = [asyncio.Event() for _ in range(messages)]
        self.ready = 0
        self.all_ready = asyncio.Event()

    def listening(self) -> None:
        self.ready += 1
        if self.ready == self.listeners:
            self.all_ready.set()

    def note(self, index: int, body: dict[str, Any], room_id: str) -> None:
        now = time.perf_counter()
        for text in texts(body, room_id):
            if not text.startswith("fanout "):
                continue
            k = int(text.split()[1])
            if k < len(self.counts) and k not in self.seen[index]:
                self.seen[index][k] = now
                self.counts[k] += 1
                if self.counts[k] == self.listeners:
                    self.complete[k].set()


async def ws_listener(client: Client, index: int, token: str, since: str, room_id: str, got: Deliveries) -> None:
    ws = await client.ws_start(token, since)
    got.listening()
    try:
        async for message in ws:
            frame = json.loads(message.data)
            if frame.get("type") == "sync":
                got.note(index, frame["body"], room_id)
                await ws.send_json({"type": "ack", "next_batch": frame["next_batch"]})
    finally:
        await ws.close()


async def poll_listener(client: Client, index: int, token: str, since: str, room_id: str, got: Deliveries) -> None:
    got.listening()  # its first long poll is on its way
    while True:
        body = await client.call("GET", f"{V3}/sync", token=token,
                                 params={"since": since, "timeout": str(30_000)})
        got.note(index, body, room_id)
        since = str(body["next_batch"])


async def fanout(client: Client, kind: str, n: int, messages: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    sender = await client.register(f"s{kind}{n}{tag}")
    room_id = str((await client.call("POST", f"{V3}/createRoom", {"preset": "public_chat"}, sender))["room_id"])
    tokens = await bounded([lambda i=i: client.register(f"l{kind}{n}{tag}{i}") for i in range(n)])
    await bounded([lambda t=t: client.call("POST", f"{V3}/join/{room_id}", {}, t) for t in tokens])
    sinces = await bounded([lambda t=t: client.since(t) for t in tokens])
    got = Deliveries(n, messages)
    listen = ws_listener if kind == "websocket" else poll_listener
    tasks = [asyncio.ensure_future(listen(client, i, t, s, room_id, got)) for i, (t, s) in enumerate(zip(tokens, sinces, strict=True))]
    sent_at: list[float] = []
    try:
        await asyncio.wait_for(got.all_ready.wait(), timeout=120)
        await asyncio.sleep(1.0 + n / 200)  # every request or auth frame has reached the server
        for k in range(messages):
            sent_at.append(time.perf_counter())
            await client.send(sender, room_id, f"fanout {k}")
            try:
                await asyncio.wait_for(got.complete[k].wait(), timeout=30)
            except asyncio.TimeoutError:
                print(f"    {kind} x{n}: message {k} reached {got.counts[k]}/{n} in 30 s")
            failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
            if failed:
                raise RuntimeError(f"a listener failed: {failed[0].exception()!r}")
            await asyncio.sleep(0.2 + n / 1000)  # long-pollers back in their poll
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    lat = [seen[k] - sent_at[k] for seen in got.seen for k in seen]
    last = [max(s[k] for s in got.seen if k in s) - sent_at[k] for k in range(messages) if got.counts[k] == n]
    return {"p50_ms": percentile(lat, 50) * 1000, "p95_ms": percentile(lat, 95) * 1000,
            "last_p50_ms": percentile(last, 50) * 1000, "missed": float(n * messages - len(lat))}


# --------------------------------------------------------------------------- idle memory


async def idle_memory(client: Client, server: ServerProcess, kind: str, n: int, deadline: float) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    # One user per connection (repeated logins of one user would meet the login lockout).
    tokens = await bounded([lambda i=i: client.register(f"idle{tag}{i}") for i in range(n)])
    since = await client.since(tokens[0])
    await asyncio.sleep(2)
    before = rss_kib(server.pid)
    opened: list[Any] = []
    tasks: list[asyncio.Future[Any]] = []
    started = time.perf_counter()
    if kind == "websocket":
        opened = await bounded([lambda t=t: client.ws_start(t, since) for t in tokens], limit=64)
    else:
        params = {"since": since, "timeout": str(LONG_POLL_MS)}
        for token in tokens:
            tasks.append(asyncio.ensure_future(client.call("GET", f"{V3}/sync", token=token, params=params)))
            if len(tasks) % 64 == 0:
                await asyncio.sleep(0.01)
    open_s = time.perf_counter() - started
    after = rss_kib(server.pid)
    while time.perf_counter() < deadline:  # wait until the server stopped growing
        await asyncio.sleep(2)
        now = rss_kib(server.pid)
        if now - after < 256:
            after = max(after, now)
            break
        after = now
    for ws in opened:
        await ws.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"connections": float(n), "rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
            "kib_per_connection": (after - before) / n, "open_s": open_s}


# --------------------------------------------------------------------------- driver


def start_server(tmp: Path, db: str, pg: PostgresDatabases | None, name: str) -> tuple[ServerProcess, str | None]:
    database_url = db_name = None
    if db == "postgres":
        assert pg is not None
        db_name, database_url = pg.create("sc_bench_ws")
    port = free_port()
    config = generate_config(tmp / name, server_name="bench.local", port=port, database_url=database_url,
                             overrides=deep_merge(CHEAP_ARGON2, SERVER_OVERRIDES))
    server = ServerProcess(config, f"http://127.0.0.1:{port}", tmp / name / "server.log")
    server.start()
    return server, db_name


async def with_client(base_url: str, run: Callable[[Client], Awaitable[Any]]) -> Any:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return await run(Client(base_url, session))


def run_on_fresh_server(args: argparse.Namespace, tmp: Path, pg: PostgresDatabases | None, name: str,
                        run: Callable[[Client, ServerProcess], Awaitable[Any]]) -> Any:
    server, db_name = start_server(tmp, args.db, pg, name)
    try:
        return asyncio.run(with_client(server.base_url, lambda c: run(c, server)))
    finally:
        server.stop(30)
        if db_name is not None and pg is not None:
            pg.drop(db_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--listeners", default="10,50,200")
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--scenarios", default="fanout,idle")
    parser.add_argument("--time-limit", type=float, default=900.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    deadline = time.perf_counter() + args.time_limit
    print(f"open-file limit: {raise_fd_limit()}; load average {os.getloadavg()[0]:.2f}")
    pg = PostgresDatabases(os.environ["SC_TEST_POSTGRES"]) if args.db == "postgres" else None
    figures: dict[str, Any] = {}
    scenarios = args.scenarios.split(",")
    with tempfile.TemporaryDirectory(prefix="sc-ws-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        if "fanout" in scenarios:
            for n in (int(x) for x in args.listeners.split(",")):
                for kind in ("websocket", "longpoll"):
                    if time.perf_counter() > deadline:
                        print("time limit reached")
                        break

                    async def fan(c: Client, _s: ServerProcess, kind: str = kind, n: int = n) -> Any:
                        return await fanout(c, kind, n, args.messages)

                    result = run_on_fresh_server(args, tmp, pg, f"fan-{kind}-{n}", fan)
                    figures[f"fanout {kind} x{n}"] = result
                    print(f"fanout {kind:9} x{n:<4} delivery p50 {result['p50_ms']:7.1f} ms  p95 "
                          f"{result['p95_ms']:7.1f} ms  last listener p50 {result['last_p50_ms']:7.1f} ms"
                          f"  missed {result['missed']:.0f}")
        if "idle" in scenarios:
            for kind in ("websocket", "longpoll"):
                if time.perf_counter() > deadline:
                    print("time limit reached")
                    break

                async def idle(c: Client, s: ServerProcess, kind: str = kind) -> Any:
                    return await idle_memory(c, s, kind, args.idle, deadline)

                result = run_on_fresh_server(args, tmp, pg, f"idle-{kind}", idle)
                figures[f"idle {kind}"] = result
                print(f"idle {kind:9} x{args.idle}: RSS {result['rss_before_mib']:.1f} -> "
                      f"{result['rss_after_mib']:.1f} MiB = {result['kib_per_connection']:.1f} KiB per connection"
                      f" (opened in {result['open_s']:.1f} s)")
    if pg is not None:
        pg.close()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
