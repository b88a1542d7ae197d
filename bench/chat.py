"""Chat benchmarks over the Client-Server API, side by side: SecureConnect ("ours") and Synapse.

Scenarios (figures only; nothing is asserted):

* ``send``: message send throughput with 1, 10 and 50 concurrent senders in one room (closed loop,
  each sender waits for its ``PUT .../send`` before the next): messages/s and p50/p95/p99 latency.
* ``fanout``: 10, 50 and 200 users long-poll ``/sync`` in one room; one user sends; the latency is
  from just before the send until each listener's ``/sync`` has returned the event (p50/p95, and the
  p50 of "the last listener has it").
* ``sync``: a user in 100 rooms with 10 messages each: initial sync (a fresh login each time, as a new
  device would; response size too) and incremental sync after one new message.
* ``messages``: ``/messages`` back-pagination in pages of 50 through a 5,000-event room.

Every loop is bounded in count and time; all traffic goes to 127.0.0.1 over keep-alive connections
(asyncio + aiohttp). Users are registered with ``/register`` + ``m.login.dummy``, so the server needs
open registration without verification and no (or very high) rate limits.

Run: ``python bench/chat.py [--servers ours,synapse] [--db sqlite|postgres] [--quick]`` starts the
servers itself (Synapse in ``bench/.synapse-venv``, see synapse_setup.py), or
``python bench/chat.py --url http://127.0.0.1:8008`` measures a running homeserver of any kind.
``--scenarios send,fanout,sync,messages`` picks scenarios; ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # after the sys.path insert: needs the repository root
    CHEAP_ARGON2,
    PostgresDatabases,
    ServerProcess,
    SpyRecorder,
    check_comparison_args,
    free_port,
    generate_config,
    summarize_collapsed,
)

API = "/_matrix/client/v3"
PASSWORD = "bench-password-" + secrets.token_hex(4)
SERVER_NAME = "bench.local"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LONG_POLL_MS = 30_000
SCENARIOS = ("send", "fanout", "sync", "messages")


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is (``--quick`` shrinks everything)."""

    senders: tuple[int, ...] = (1, 10, 50)
    send_seconds: float = 10.0
    send_cap: int = 20_000
    listeners: tuple[int, ...] = (10, 50, 200)
    fanout_messages: int = 20
    rooms: int = 100
    room_messages: int = 10
    initial_syncs: int = 5
    incremental_syncs: int = 30
    history: int = 5_000
    page: int = 50
    pagination_passes: int = 2
    scenario_timeout: float = 900.0


FULL = Sizes()
QUICK = Sizes(
    senders=(1, 10),
    send_seconds=2.0,
    send_cap=2_000,
    listeners=(10, 50),
    fanout_messages=5,
    rooms=20,
    room_messages=3,
    initial_syncs=3,
    incremental_syncs=10,
    history=500,
    pagination_passes=1,
    scenario_timeout=300.0,
)


@dataclass
class Metric:
    """One figure of one scenario."""

    scenario: str
    name: str
    value: float
    unit: str
    higher_is_better: bool


@dataclass
class Report:
    """Everything measured on one server."""

    label: str
    url: str
    metrics: list[Metric] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, scenario: str, name: str, value: float, unit: str, higher_is_better: bool = False) -> None:
        self.metrics.append(Metric(scenario, name, value, unit, higher_is_better))


def load_average() -> str:
    """The host's 1/5/15-minute load averages (other work on the machine skews every figure)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


class RequestFailed(RuntimeError):
    """A request did not answer 200 (the message names the endpoint, status and a body excerpt)."""


def percentile(samples: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``samples``; 0 without samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(p / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------- a minimal client


class Http:
    """One keep-alive aiohttp session to one server, shared by every simulated user."""

    def __init__(self, base_url: str, session: Any) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        params: dict[str, str] | None = None,
        timeout_s: float = 120.0,
    ) -> tuple[dict[str, Any], int]:
        """Sends one request; returns the decoded JSON object and the body's size in bytes.

        Raises:
            RequestFailed: any status but 200, or a body that is not a JSON object.
        """
        import aiohttp

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method,
            self.base_url + path,
            json=body,
            params=params,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            raw = await response.read()
            if response.status != 200:
                raise RequestFailed(f"{method} {path.split('?')[0]}: {response.status} {raw[:300]!r}")
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise RequestFailed(f"{method} {path}: not JSON: {raw[:200]!r}") from None
        if not isinstance(decoded, dict):
            raise RequestFailed(f"{method} {path}: not a JSON object: {raw[:200]!r}")
        return decoded, len(raw)


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


@dataclass
class User:
    """A logged-in user (one access token, i.e. one device)."""

    http: Http
    user_id: str
    token: str
    _txn: int = 0

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        answer, _size = await self.http.call(method, API + path, body, token=self.token, **kwargs)
        return answer

    async def create_room(self, name: str) -> str:
        answer = await self.call("POST", "/createRoom", {"preset": "public_chat", "name": name})
        return str(answer["room_id"])

    async def join(self, room_id: str) -> None:
        await self.call("POST", f"/rooms/{quote(room_id)}/join", {})

    async def send(self, room_id: str, body: str) -> str:
        self._txn += 1
        path = f"/rooms/{quote(room_id)}/send/m.room.message/b{secrets.token_hex(4)}.{self._txn}"
        answer = await self.call("PUT", path, {"msgtype": "m.text", "body": body})
        return str(answer["event_id"])

    async def sync(self, since: str | None = None, timeout_ms: int = 0) -> tuple[dict[str, Any], int]:
        params = {"timeout": str(timeout_ms)}
        if since is not None:
            params["since"] = since
        return await self.http.call(
            "GET", API + "/sync", token=self.token, params=params, timeout_s=timeout_ms / 1000 + 120
        )

    async def messages(self, room_id: str, start: str | None, limit: int) -> dict[str, Any]:
        params = {"dir": "b", "limit": str(limit)}
        if start is not None:
            params["from"] = start
        return await self.call("GET", f"/rooms/{quote(room_id)}/messages", params=params)


async def register(http: Http, localpart: str) -> User:
    body = {"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    answer, _ = await http.call("POST", API + "/register", body)
    return User(http, str(answer["user_id"]), str(answer["access_token"]))


async def login(http: Http, user_id: str) -> User:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": PASSWORD,
    }
    answer, _ = await http.call("POST", API + "/login", body)
    return User(http, user_id, str(answer["access_token"]))


async def bounded_gather(
    factories: Sequence[Callable[[], Awaitable[Any]]], concurrency: int = 10
) -> list[Any]:
    """Runs the coroutine factories with at most ``concurrency`` in flight; results in order."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(factory: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await factory()

    return list(await asyncio.gather(*(one(f) for f in factories)))


class Population:
    """Registers users on demand (prefix unique per run) and keeps them for later scenarios."""

    def __init__(self, http: Http) -> None:
        self.http = http
        self.prefix = f"b{secrets.token_hex(3)}"
        self.users: list[User] = []

    async def first(self, count: int) -> list[User]:
        missing = range(len(self.users), count)
        self.users += await bounded_gather(
            [partial(register, self.http, f"{self.prefix}u{i}") for i in missing]
        )
        return self.users[:count]

    async def room_with(self, members: list[User], name: str) -> tuple[User, str]:
        """A fresh public room created by a fresh user, joined by ``members``; returns (creator, room)."""
        creator = await register(self.http, f"{self.prefix}{name}{secrets.token_hex(2)}")
        room_id = await creator.create_room(name)
        await bounded_gather([partial(m.join, room_id) for m in members])
        return creator, room_id


def timeline_bodies(sync_body: dict[str, Any], room_id: str) -> list[str]:
    """The ``content.body`` strings in ``room_id``'s joined timeline of one sync response."""
    room = sync_body.get("rooms", {}).get("join", {}).get(room_id, {})
    events = room.get("timeline", {}).get("events", [])
    return [e["content"]["body"] for e in events if isinstance(e.get("content", {}).get("body"), str)]


# --------------------------------------------------------------------------- scenarios


async def closed_loop_sends(
    senders: list[User], room_id: str, seconds: float, cap: int
) -> tuple[list[float], list[str], float]:
    """Every sender sends back to back for ``seconds`` (at most ``cap`` each); returns the latencies,
    the errors and the elapsed time."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: list[str] = []
    start = loop.time()
    until = start + seconds

    async def sender(user: User) -> None:
        for i in range(cap):
            if loop.time() >= until or len(errors) > 10:
                return
            t0 = loop.time()
            try:
                await user.send(room_id, f"message {i}")
            except (RequestFailed, asyncio.TimeoutError, OSError) as exc:
                errors.append(str(exc))
                continue
            latencies.append(loop.time() - t0)

    await asyncio.gather(*(sender(s) for s in senders))
    return latencies, errors, loop.time() - start


async def scenario_send(pop: Population, sizes: Sizes, report: Report) -> None:
    """(a) Closed-loop send throughput and latency with 1, 10, 50 concurrent senders in one room."""
    for n in sizes.senders:
        senders = await pop.first(n)
        _, room_id = await pop.room_with(senders, f"send{n}")
        await asyncio.gather(*(s.send(room_id, "warm-up") for s in senders))
        latencies, errors, elapsed = await closed_loop_sends(
            senders, room_id, sizes.send_seconds, max(1, sizes.send_cap // n)
        )
        label = f"send x{n}"
        report.add(label, "throughput", len(latencies) / elapsed, "msg/s", True)
        for p in (50, 95, 99):
            report.add(label, f"latency p{p}", percentile(latencies, p) * 1000, "ms")
        if errors:
            report.add(label, "errors", len(errors), "count")
            print(f"    {label}: {len(errors)} errors, first: {errors[0]}")


async def initial_since(user: User) -> str:
    body, _ = await user.sync(None, 0)
    return str(body["next_batch"])


class Fanout:
    """One fan-out run: ``listeners`` long-poll /sync in ``room_id`` and note when each message arrives."""

    def __init__(self, listeners: list[User], room_id: str, messages: int) -> None:
        self.listeners = listeners
        self.room_id = room_id
        self.received: list[dict[int, float]] = [{} for _ in listeners]
        self.counts = [0] * messages
        self.all_seen = [asyncio.Event() for _ in range(messages)]
        self.max_polls = messages * 4 + 20

    async def listen(self, index: int, since: str) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.max_polls):
            body, _ = await self.listeners[index].sync(since, LONG_POLL_MS)
            now = loop.time()
            since = str(body["next_batch"])
            for text in timeline_bodies(body, self.room_id):
                if not text.startswith("fanout "):
                    continue
                k = int(text.split()[1])
                if k in self.received[index]:
                    continue
                self.received[index][k] = now
                self.counts[k] += 1
                if self.counts[k] == len(self.listeners):
                    self.all_seen[k].set()

    async def run(self, sender: User, tokens: list[str], pause_s: float) -> list[float]:
        """Sends the messages one at a time, each after every listener had the previous one (or 30 s);
        returns the send times."""
        loop = asyncio.get_running_loop()
        tasks = [asyncio.ensure_future(self.listen(i, t)) for i, t in enumerate(tokens)]
        sent_at: list[float] = []
        try:
            for k in range(len(self.counts)):
                await asyncio.sleep(pause_s)  # every listener back in its long-poll before the next send
                sent_at.append(loop.time())
                await sender.send(self.room_id, f"fanout {k}")
                try:
                    await asyncio.wait_for(self.all_seen[k].wait(), timeout=30)
                except asyncio.TimeoutError:
                    print(f"    message {k} reached {self.counts[k]}/{len(self.listeners)} listeners in 30 s")
                failed = [t for t in tasks if t.done() and t.exception() is not None]
                if failed:
                    raise RuntimeError(f"a listener failed: {failed[0].exception()}")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return sent_at


async def scenario_fanout(pop: Population, sizes: Sizes, report: Report) -> None:
    """(b) Latency from send until every long-polling listener's /sync has returned the event."""
    for n in sizes.listeners:
        listeners = await pop.first(n)
        sender, room_id = await pop.room_with(listeners, f"fan{n}")
        tokens = await bounded_gather([partial(initial_since, u) for u in listeners])
        fanout = Fanout(listeners, room_id, sizes.fanout_messages)
        sent_at = await fanout.run(sender, tokens, 0.3 + n / 500)
        received, counts = fanout.received, fanout.counts
        lat = [r[k] - sent_at[k] for r in received for k in r if k < len(sent_at)]
        last = [
            max(r[k] for r in received if k in r) - sent_at[k] for k in range(len(sent_at)) if counts[k] == n
        ]
        label = f"fanout x{n}"
        report.add(label, "delivery p50", percentile(lat, 50) * 1000, "ms")
        report.add(label, "delivery p95", percentile(lat, 95) * 1000, "ms")
        report.add(label, "last listener p50", percentile(last, 50) * 1000, "ms")
        missed = n * len(sent_at) - len(lat)
        if missed:
            report.add(label, "missed deliveries", missed, "count")


async def scenario_sync(pop: Population, sizes: Sizes, report: Report) -> None:
    """(c) Initial sync (fresh device) and incremental sync for a user in many rooms."""
    owner = await register(pop.http, f"{pop.prefix}syncer")
    # One createRoom at a time, as a client does. (Concurrent createRoom calls by one user with the
    # same body gave SecureConnect a 500: identical v12 create events, hence one room ID.)
    rooms = [partial(owner.create_room, f"room {i}") for i in range(sizes.rooms)]
    room_ids = await bounded_gather(rooms, 1)
    await bounded_gather(
        [partial(owner.send, r, f"hello {j}") for r in room_ids for j in range(sizes.room_messages)]
    )
    label = f"sync {sizes.rooms} rooms"
    initial: list[float] = []
    size = 0
    since = ""
    for _ in range(sizes.initial_syncs):
        device = await login(pop.http, owner.user_id)  # a new device: no server-side response cache helps
        t0 = time.perf_counter()
        body, size = await device.sync(None, 0)
        initial.append(time.perf_counter() - t0)
        joined = len(body.get("rooms", {}).get("join", {}))
        if joined != sizes.rooms:
            raise RuntimeError(f"initial sync returned {joined} joined rooms, expected {sizes.rooms}")
        since = str(body["next_batch"])
    report.add(label, "initial p50", percentile(initial, 50) * 1000, "ms")
    report.add(label, "initial max", max(initial) * 1000, "ms")
    report.add(label, "initial size", size / 1024, "KiB")
    incremental: list[float] = []
    for i in range(sizes.incremental_syncs):
        room_id = room_ids[i % len(room_ids)]
        await owner.send(room_id, f"incremental {i}")
        t0 = time.perf_counter()
        body, _ = await owner.sync(since, 0)
        incremental.append(time.perf_counter() - t0)
        if f"incremental {i}" not in timeline_bodies(body, room_id):
            raise RuntimeError(f"incremental sync {i} did not contain the new message")
        since = str(body["next_batch"])
    report.add(label, "incremental p50", percentile(incremental, 50) * 1000, "ms")
    report.add(label, "incremental p95", percentile(incremental, 95) * 1000, "ms")


async def scenario_messages(pop: Population, sizes: Sizes, report: Report) -> None:
    """(d) Back-pagination through a large room in pages of ``sizes.page``."""
    owner = await register(pop.http, f"{pop.prefix}historian")
    room_id = await owner.create_room("history")
    await bounded_gather([partial(owner.send, room_id, f"history {i}") for i in range(sizes.history)], 20)
    body, _ = await owner.sync(None, 0)
    newest = str(body["next_batch"])
    label = f"messages {sizes.history} ev"
    pages: list[float] = []
    seen = events = 0
    for _ in range(sizes.pagination_passes):
        token: str | None = newest
        seen = 0
        for _ in range(sizes.history // sizes.page + 20):
            t0 = time.perf_counter()
            page = await owner.messages(room_id, token, sizes.page)
            pages.append(time.perf_counter() - t0)
            chunk = page.get("chunk", [])
            seen += len(chunk)
            end = page.get("end")
            if not chunk or end is None or end == token:
                break
            token = str(end)
        events += seen
    if seen < sizes.history:
        raise RuntimeError(f"back-pagination returned {seen} events, expected at least {sizes.history}")
    report.add(label, f"page of {sizes.page} p50", percentile(pages, 50) * 1000, "ms")
    report.add(label, f"page of {sizes.page} p95", percentile(pages, 95) * 1000, "ms")
    report.add(label, "events/s", events / sum(pages), "ev/s", True)


SCENARIO_FUNCS: dict[str, Callable[[Population, Sizes, Report], Awaitable[None]]] = {
    "send": scenario_send,
    "fanout": scenario_fanout,
    "sync": scenario_sync,
    "messages": scenario_messages,
}


async def measure_server(
    label: str,
    base_url: str,
    scenarios: list[str],
    sizes: Sizes,
    process: ServerProcess | None,
    profile_dir: Path | None = None,
) -> Report:
    """Runs the scenarios against one server; a failing scenario is recorded and the next one runs.

    With ``profile_dir`` (and a local ``process``), each scenario is sampled with py-spy and a
    summary of the profile is printed.
    """
    import aiohttp

    report = Report(label, base_url)
    report.notes.append(f"load average before: {load_average()}")
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        pop = Population(Http(base_url, session))
        for name in scenarios:
            print(f"  {label}: {name}...", flush=True)
            cpu_before = process.cpu_seconds() if process is not None else None
            wall = time.monotonic()
            spy = None
            if profile_dir is not None and process is not None:
                output = profile_dir / f"{label.split()[0]}-{name}.txt"
                spy = SpyRecorder(process.pid, output, idle=bool(os.environ.get("BENCH_PROFILE_IDLE")))
                if not spy.start():
                    print("    (py-spy is not installed: pip install py-spy)")
                    spy = None
            try:
                await asyncio.wait_for(SCENARIO_FUNCS[name](pop, sizes, report), sizes.scenario_timeout)
            except Exception as exc:  # one broken scenario must not hide the others' figures
                reason = f"{type(exc).__name__}: {exc}"[:400]
                report.failures[name] = reason
                print(f"    FAILED: {reason}")
                if os.environ.get("BENCH_TRACEBACK"):
                    traceback.print_exc()
                continue
            finally:
                if spy is not None:
                    spy.stop()
                    print(summarize_collapsed(spy.output, only=("homeserver/", "sc_proto/", "synapse/")))
            cpu_after = process.cpu_seconds() if process is not None else None
            if cpu_before is not None and cpu_after is not None:
                report.add(name, "server CPU (incl. setup)", cpu_after - cpu_before, "s")
            report.add(name, "wall time (incl. setup)", time.monotonic() - wall, "s")
    report.notes.append(f"load average after: {load_average()}")
    return report


# --------------------------------------------------------------------------- servers


def start_ours(db: str, postgres_url: str, tmp: Path, cleanup: list[Callable[[], None]]) -> ServerProcess:
    """Starts SecureConnect on ``db`` (fresh database), rate limits off, cheap Argon2 (setup only)."""
    database_url = None
    if db == "postgres":
        pg = PostgresDatabases(postgres_url)
        db_name, database_url = pg.create("sc_chat_bench")
        cleanup.append(pg.close)
        cleanup.append(lambda: pg.drop(db_name))
    port = free_port()
    config = generate_config(
        tmp / "ours", server_name=SERVER_NAME, port=port, database_url=database_url, overrides=CHEAP_ARGON2
    )
    server = ServerProcess(config, f"http://127.0.0.1:{port}", tmp / "ours.log")
    server.start(ready_timeout=60)
    return server


def run_one(kind: str, args: argparse.Namespace, sizes: Sizes, scenarios: list[str]) -> Report:
    """Starts ``kind`` (ours or synapse), measures it and stops it."""
    cleanup: list[Callable[[], None]] = []
    with tempfile.TemporaryDirectory(prefix="sc-chat-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            if kind == "ours":
                process = start_ours(args.db, args.postgres_url, tmp, cleanup)
                cleanup.append(process.kill)  # a no-op after the graceful stop below
                label, log = f"ours ({args.db})", process.log_path
            else:
                from bench.synapse_setup import start_synapse

                synapse = start_synapse(db=args.db, postgres_url=args.postgres_url, data_dir=tmp / "synapse")
                cleanup.append(synapse.close)
                process, log = synapse.process, synapse.data_dir / "homeserver.log"
                label = f"synapse {synapse.version} ({args.db})"
            print(f"{label}: {process.base_url}", flush=True)
            profile_dir = Path(args.profile) if args.profile else None
            report = asyncio.run(
                measure_server(label, process.base_url, scenarios, sizes, process, profile_dir)
            )
            if kind == "ours" and (code := process.stop(30)) != 0:
                print(f"  ours exited with {code}; log tail:\n{process.tail(20)}")
            if args.keep_logs:
                target = Path(args.keep_logs) / f"{kind}-{args.db}.log"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(log.read_bytes() if log.exists() else b"")
            return report
        finally:
            for action in reversed(cleanup):
                action()


# --------------------------------------------------------------------------- output


def print_report(report: Report) -> None:
    print(f"\n== {report.label}  {report.url} ==")
    print(f"{'scenario':<22} {'metric':<26} {'value':>12}  unit")
    for m in report.metrics:
        print(f"{m.scenario:<22} {m.name:<26} {m.value:>12.2f}  {m.unit}")
    for name, reason in report.failures.items():
        print(f"{name:<22} FAILED: {reason}")
    for note in report.notes:
        print(f"  ({note})")


def print_ratio(ours: Report, theirs: Report) -> None:
    """ours/synapse per metric; the last column says whether that ratio is good (>1 or <1)."""
    print(f"\n== ratio {ours.label} / {theirs.label} ==")
    print(f"{'scenario':<22} {'metric':<26} {'ours':>10} {'synapse':>10} {'ratio':>7}  better")
    other = {(m.scenario, m.name): m for m in theirs.metrics}
    for m in ours.metrics:
        t = other.get((m.scenario, m.name))
        if t is None:
            continue
        ratio = m.value / t.value if t.value else float("nan")
        better = "higher" if m.higher_is_better else "lower"
        print(f"{m.scenario:<22} {m.name:<26} {m.value:>10.2f} {t.value:>10.2f} {ratio:>7.2f}  {better}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="measure this running homeserver (any implementation) instead")
    parser.add_argument("--servers", default="ours,synapse", help="comma list of: ours, synapse")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("SC_TEST_POSTGRES", DEFAULT_POSTGRES))
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma list of: " + ", ".join(SCENARIOS)
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--keep-logs", help="copy each server's log into this directory")
    parser.add_argument(
        "--profile", help="sample each local server with py-spy per scenario into this directory"
    )
    args = parser.parse_args(argv)
    check_comparison_args(parser, args, SCENARIOS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    print(f"chat benchmark ({'quick' if args.quick else 'full'}); host: {os.cpu_count()} CPUs", flush=True)
    if args.url:
        reports = [asyncio.run(measure_server("external", args.url, args.scenario_list, sizes, None))]
    else:
        reports = [run_one(kind, args, sizes, args.scenario_list) for kind in args.server_list]
    for report in reports:
        print_report(report)
    by_kind = {r.label.split()[0]: r for r in reports}
    if "ours" in by_kind and "synapse" in by_kind:
        print_ratio(by_kind["ours"], by_kind["synapse"])
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in reports], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
