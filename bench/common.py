"""Shared helpers for the HTTP benchmarks and the integration tests.

* :func:`free_port`, :func:`generate_config`, :func:`update_config`: prepare a server's data directory
  with the real ``sc-homeserver generate-config`` command, then adjust options in the YAML.
* :class:`ServerProcess`: runs ``sc-homeserver run`` as a child process with its output captured to a
  file, waits until ``GET /_matrix/client/versions`` answers, and stops it with SIGTERM.
* :class:`PostgresDatabases`: creates and drops throwaway PostgreSQL databases.
* :func:`run_load` and :class:`LoadResult`: a small closed-loop HTTP load generator (asyncio + aiohttp,
  one keep-alive connection per worker) that reports requests/s and latency percentiles.

Nothing here imports the homeserver: servers are driven only through their command line and HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

VERSIONS_PATH = "/_matrix/client/versions"
CHEAP_ARGON2: dict[str, Any] = {"auth": {"argon2": {"time_cost": 1, "memory_cost_kib": 1024}}}


class ServerStartError(RuntimeError):
    """The server process exited or did not become ready in time (the message ends with its log tail)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bound to port 0 and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def homeserver_command() -> list[str]:
    """The ``sc-homeserver`` console script next to the running interpreter (else ``python -m``)."""
    script = Path(sys.executable).parent / "sc-homeserver"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "homeserver.app.main"]


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Runs ``sc-homeserver ARGS`` to completion and returns its exit code and output."""
    return subprocess.run(
        [*homeserver_command(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Returns ``base`` with ``overrides`` merged in (nested mappings are merged, not replaced)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def update_config(path: Path, overrides: Mapping[str, Any]) -> None:
    """Merges ``overrides`` into the YAML config at ``path`` (its comments are lost)."""
    current = yaml.safe_load(path.read_text()) or {}
    path.write_text(yaml.safe_dump(deep_merge(current, overrides), sort_keys=False))


def generate_config(
    data_dir: Path,
    *,
    server_name: str,
    port: int,
    database_url: str | None = None,
    registration: str = "open",
    rate_limits: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Writes a config with ``sc-homeserver generate-config`` and applies ``overrides``.

    Args:
        data_dir: the data directory (created by the command).
        server_name: the Matrix server name.
        port: the loopback port to listen on.
        database_url: a PostgreSQL URL; SQLite in ``data_dir`` when ``None``.
        registration: ``open``, ``token`` or ``closed``.
        rate_limits: False writes ``ratelimits.enabled: false`` (lockout stays on).
        overrides: options merged into the generated YAML.

    Returns:
        The path of ``homeserver.yaml``.

    Raises:
        RuntimeError: the command failed.
    """
    args = ["generate-config", "--server-name", server_name, "--data-dir", str(data_dir)]
    args += ["--listen", f"127.0.0.1:{port}", "--registration", registration]
    if database_url is not None:
        args += ["--database-url", database_url]
    if not rate_limits:
        args.append("--no-rate-limits")
    done = run_cli(*args)
    if done.returncode != 0:
        raise RuntimeError(f"generate-config failed ({done.returncode}): {done.stderr.strip()}")
    path = Path(done.stdout.strip())
    if overrides:
        update_config(path, overrides)
    return path


def _get_status(url: str, timeout: float) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return None


class ServerProcess:
    """One ``sc-homeserver run`` child process, its output captured to ``log_path``.

    Args:
        config_path: the server's ``homeserver.yaml``.
        base_url: where it listens, e.g. ``http://127.0.0.1:8008``.
        log_path: file receiving the process's standard output and error.
        command: the full command line to run instead of ``sc-homeserver run --config CONFIG``
            (e.g. another homeserver for side-by-side benchmarks).
    """

    def __init__(
        self, config_path: Path, base_url: str, log_path: Path, command: list[str] | None = None
    ) -> None:
        self.config_path = config_path
        self.base_url = base_url.rstrip("/")
        self.log_path = log_path
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self._terminated = False

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self.process is None:
            raise RuntimeError("the server is not running")
        return self.process.pid

    def start(self, ready_timeout: float = 30.0) -> None:
        """Starts the process and waits until it answers ``GET /_matrix/client/versions``.

        Raises:
            ServerStartError: it exited early or was not ready within ``ready_timeout`` seconds
                (the process is killed in the latter case).
        """
        with self.log_path.open("ab") as log:
            command = self.command or [*homeserver_command(), "run", "--config", str(self.config_path)]
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + ready_timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.exit_code = self.process.returncode
                raise ServerStartError(f"server exited with {self.exit_code} at start-up\n{self.tail()}")
            if _get_status(self.base_url + VERSIONS_PATH, timeout=2.0) == 200:
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        self.kill()
        raise ServerStartError(f"server not ready after {ready_timeout:.0f}s\n{self.tail()}")

    def terminate(self) -> None:
        """Sends SIGTERM once (does not wait).

        A second SIGTERM could arrive after the reactor has restored the default handler and kill
        the process mid-shutdown, so it is never sent twice.
        """
        if self.process is not None and self.process.poll() is None and not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> int:
        """Sends SIGTERM and waits for the exit; returns the exit code.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds (it is then killed).
        """
        if self.process is None:
            raise RuntimeError("the server was never started")
        if self.exit_code is not None:
            return self.exit_code
        self.terminate()
        try:
            self.exit_code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.exit_code

    def kill(self) -> None:
        """Kills the process (SIGKILL) and reaps it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process is not None:
            self.exit_code = self.process.returncode

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the captured output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        """Everything the process has written so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process has used so far (Linux ``/proc``; ``None`` elsewhere)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, RuntimeError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


class PostgresDatabases:
    """Creates and drops throwaway databases on the PostgreSQL server at ``admin_url``.

    Args:
        admin_url: a URL whose user may CREATE/DROP DATABASE, e.g.
            ``postgresql://postgres@127.0.0.1:5432/postgres``.

    Raises:
        Exception: the server is unreachable (whatever psycopg2 raises).
    """

    def __init__(self, admin_url: str) -> None:
        import psycopg2

        self.admin_url = admin_url
        self._conn = psycopg2.connect(admin_url, connect_timeout=3)
        self._conn.autocommit = True
        self._count = 0

    def url_for(self, name: str) -> str:
        """The admin URL pointing at database ``name`` instead."""
        parts = urllib.parse.urlsplit(self.admin_url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + name))

    def create(self, prefix: str = "sc_it", *, c_locale: bool = False) -> tuple[str, str]:
        """Creates an empty database; returns its name and URL.

        Args:
            prefix: start of the database name (the process id and a counter follow).
            c_locale: use the ``C`` collation and character type (Synapse refuses other locales).
        """
        self._count += 1
        name = f"{prefix}_{os.getpid()}_{self._count}"
        locale = " LC_COLLATE 'C' LC_CTYPE 'C'" if c_locale else ""
        with self._conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\'{locale}')
        return name, self.url_for(name)

    def drop(self, name: str) -> None:
        """Drops database ``name``, disconnecting anyone still using it."""
        with self._conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        """Closes the admin connection."""
        self._conn.close()


# --------------------------------------------------------------------------- HTTP helpers


def http_json(
    method: str, url: str, body: Any = None, *, token: str | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """One blocking JSON request (urllib, a new connection); returns the status and decoded body."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as e:
        status, raw = int(e.code), e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def register_user(base_url: str, localpart: str, password: str) -> dict[str, Any]:
    """Registers ``localpart`` with m.login.dummy (open registration); returns the response body.

    Raises:
        RuntimeError: registration failed.
    """
    body = {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}
    status, answer = http_json("POST", base_url + "/_matrix/client/v3/register", body)
    if status != 200 or not isinstance(answer, dict):
        raise RuntimeError(f"registering {localpart} failed: {status} {answer!r}")
    return answer


def login_body(user: str, password: str) -> dict[str, Any]:
    """A ``POST /login`` body for a password login."""
    return {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}


# --------------------------------------------------------------------------- load generator


@dataclass(frozen=True)
class RequestSpec:
    """One request of a load test (``body`` is sent as JSON when not ``None``)."""

    method: str
    path: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class LoadResult:
    """Outcome of :func:`run_load`: latencies in seconds and the statuses seen."""

    duration_s: float
    latencies: list[float]
    statuses: collections.Counter[int]
    errors: int = 0
    client_cpu_s: float = 0.0

    @property
    def requests(self) -> int:
        """Completed requests (any status)."""
        return len(self.latencies)

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, p: float) -> float:
        """The ``p``-th latency percentile (nearest rank) in seconds; 0 without samples."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        rank = max(1, min(len(ordered), round(p / 100.0 * len(ordered) + 0.5)))
        return ordered[rank - 1]

    def summary(self) -> str:
        """One line: rate, p50/p99 latency, statuses and errors."""
        statuses = ", ".join(f"{code}x{n}" for code, n in sorted(self.statuses.items()))
        return (
            f"{self.rate:8.1f} req/s  p50 {self.percentile(50) * 1000:7.2f} ms  "
            f"p99 {self.percentile(99) * 1000:7.2f} ms  n={self.requests} [{statuses}]"
            + (f" errors={self.errors}" if self.errors else "")
        )


RequestFactory = Callable[[int, int], RequestSpec]


async def _worker(
    session: Any, base_url: str, make: RequestFactory, worker: int, until: float, result: LoadResult
) -> None:
    import aiohttp

    n = 0
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        spec = make(worker, n)
        n += 1
        start = loop.time()
        try:
            async with session.request(
                spec.method, base_url + spec.path, json=spec.body, headers=dict(spec.headers)
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            result.errors += 1
            continue
        result.latencies.append(loop.time() - start)
        result.statuses[status] += 1


async def _run_load_async(
    base_url: str, make: RequestFactory, concurrency: int, duration_s: float, warmup_s: float
) -> LoadResult:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        if warmup_s > 0:
            warm = LoadResult(0.0, [], collections.Counter())
            until = loop.time() + warmup_s
            await asyncio.gather(*(_worker(session, base_url, make, w, until, warm) for w in range(concurrency)))
        result = LoadResult(0.0, [], collections.Counter())
        cpu_start, start = time.process_time(), loop.time()
        until = start + duration_s
        await asyncio.gather(*(_worker(session, base_url, make, w, until, result) for w in range(concurrency)))
        result.duration_s = loop.time() - start
        result.client_cpu_s = time.process_time() - cpu_start
    return result


def run_load(
    base_url: str,
    make: RequestFactory,
    *,
    concurrency: int = 10,
    duration_s: float = 10.0,
    warmup_s: float = 1.0,
) -> LoadResult:
    """Closed-loop load: ``concurrency`` workers, each on its own keep-alive connection, send requests
    back to back for ``duration_s`` seconds (after ``warmup_s`` seconds that are not measured).

    Args:
        base_url: e.g. ``http://127.0.0.1:8008``.
        make: ``make(worker_index, request_index)`` returns the next request of that worker.
        concurrency: number of connections.
        duration_s: measured seconds.
        warmup_s: unmeasured seconds first (connections opened, caches warm).

    Returns:
        Latencies, statuses and the client's own CPU time (to show the client is not the bottleneck).
    """
    return asyncio.run(_run_load_async(base_url, make, concurrency, duration_s, warmup_s))


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Polls ``predicate`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def iter_lines(text: str, needle: str) -> Iterator[str]:
    """The lines of ``text`` containing ``needle``."""
    return (line for line in text.splitlines() if needle in line)



# --------------------------------------------------------------------------- profiling


class SpyRecorder:
    """Samples a running process with ``py-spy record`` (raw "collapsed stack" output) while in use.

    py-spy is a bench-only tool (``pip install py-spy``); when it is missing, :meth:`start` returns
    False and nothing is recorded. Sampling runs with ``--nonblocking``, so the target is never paused,
    but it still costs CPU: take figures and profiles in separate runs.

    Args:
        pid: the process to sample.
        output: the file receiving the collapsed stacks (one ``frame;frame;... count`` line each).
        rate: samples per second.
        idle: also sample threads that are waiting (on the database, a lock, epoll): shows where
            wall-clock time goes, not only CPU time.
    """

    def __init__(self, pid: int, output: Path, rate: int = 200, idle: bool = False) -> None:
        self.pid = pid
        self.output = output
        self.rate = rate
        self.idle = idle
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        """Starts sampling; False when py-spy is not installed."""
        spy = Path(sys.executable).parent / "py-spy"
        if not spy.exists():
            return False
        self.output.parent.mkdir(parents=True, exist_ok=True)
        command = [str(spy), "record", "--nonblocking", "--format", "raw", "--rate", str(self.rate)]
        command += ["--output", str(self.output), "--pid", str(self.pid)] + (["--idle"] if self.idle else [])
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Stops sampling (SIGINT makes py-spy write its output) and waits for the file."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None


def summarize_collapsed(path: Path, top: int = 15, only: tuple[str, ...] = ()) -> str:
    """A text summary of a py-spy raw profile: the functions with the most samples on top of the
    stack (self) and anywhere in it (inclusive), as a share of all samples.

    Args:
        path: the collapsed-stack file written by :class:`SpyRecorder`.
        top: rows per table.
        only: when given, the inclusive table lists only frames whose text contains one of these
            (e.g. ``("homeserver/", "sc_proto/")``).
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no profile at {path})"
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if not only or any(needle in frame for needle in only):
                inclusive[frame] += count
    if total == 0:
        return f"(empty profile at {path})"
    rows = [f"{total} samples; self (top of stack):"]
    rows += [f"  {100.0 * n / total:5.1f}%  {frame[:150]}" for frame, n in own.most_common(top)]
    rows.append("inclusive" + (f" ({', '.join(only)} frames)" if only else "") + ":")
    rows += [f"  {100.0 * n / total:5.1f}%  {frame[:150]}" for frame, n in inclusive.most_common(top)]
    return "\n".join(rows)


def check_comparison_args(parser: Any, args: Any, scenarios: Any) -> None:
    """Splits and checks ``--scenarios``/``--servers`` and keeps ``--url`` on loopback, for the side-by-side
    benchmarks (sets ``args.scenario_list`` and ``args.server_list``; errors through ``parser``)."""
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    if unknown := set(args.scenario_list) - set(scenarios):
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    if unknown := set(args.server_list) - {"ours", "synapse"}:
        parser.error(f"unknown servers: {sorted(unknown)}")
    if args.url and urllib.parse.urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--url must be a loopback address (this benchmark only sends traffic to 127.0.0.1)")
