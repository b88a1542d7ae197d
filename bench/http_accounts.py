"""Benchmark: account endpoints over real HTTP against one ``sc-homeserver`` process.

Measures requests/s and p50/p99 latency of ``GET /account/whoami`` and ``POST /login`` (password) with
``--concurrency`` keep-alive connections for ``--duration`` seconds each, on SQLite and/or PostgreSQL.
The server is started with rate limits off (``generate-config --no-rate-limits``) and the DEFAULT
Argon2 parameters, so the login figures include the real, deliberately expensive password hash.
Each connection logs in as its own user (the lockout accounting refuses more than
``auth.lockout.max_failed_attempts`` concurrent password checks per user).

The server's and the client's CPU use are printed too: when the client uses much less than one core
while the server is busy, the client is not the bottleneck. Prints figures; asserts nothing.

Run: ``python bench/http_accounts.py [--db sqlite|postgres|both] [--concurrency 10] [--duration 10]``
or ``python bench/http_accounts.py --url http://HOST:PORT`` against a running server (open
registration, rate limits off). PostgreSQL: ``--postgres-url`` or ``SC_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); a throwaway database is created and dropped.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # after the sys.path insert: needs the repository root
    LoadResult,
    PostgresDatabases,
    RequestSpec,
    ServerProcess,
    free_port,
    generate_config,
    http_json,
    login_body,
    register_user,
    run_load,
)

LOGIN = "/_matrix/client/v3/login"
WHOAMI = "/_matrix/client/v3/account/whoami"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--url", help="benchmark this running server instead of starting one")
    parser.add_argument("--postgres-url", default=os.environ.get("SC_TEST_POSTGRES", DEFAULT_POSTGRES))
    parser.add_argument("--concurrency", type=int, default=10, help="connections (default 10)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per endpoint (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (default 1)")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--concurrency must be >= 1, --duration > 0, --warmup >= 0")
    return args


def prepare_users(base_url: str, count: int) -> tuple[list[str], list[str], str]:
    """Registers ``count`` users; returns their localparts, one access token each, and the password."""
    password = "bench-" + secrets.token_urlsafe(12)
    run_id = secrets.token_hex(3)
    users = [f"bench{run_id}u{i}" for i in range(count)]
    tokens = [register_user(base_url, user, password)["access_token"] for user in users]
    return users, tokens, password


def describe(label: str, result: LoadResult, server_cpu_s: float | None) -> str:
    client = 100.0 * result.client_cpu_s / result.duration_s
    server = "n/a" if server_cpu_s is None else f"{100.0 * server_cpu_s / result.duration_s:5.0f}%"
    return f"  {label:<22} {result.summary()}  cpu: server {server}, client {client:3.0f}%"


def measure(
    server: ServerProcess | None, base_url: str, args: argparse.Namespace, db_label: str
) -> None:
    """Runs the whoami and login phases against ``base_url`` and prints one line each."""
    users, tokens, password = prepare_users(base_url, args.concurrency)
    status, versions = http_json("GET", base_url + "/_matrix/client/versions")
    if status != 200:
        raise RuntimeError(f"server at {base_url} is not answering /versions: {status} {versions!r}")
    print(f"{db_label}: {args.concurrency} connections, {args.duration:g}s per endpoint ({args.warmup:g}s warm-up)")

    def whoami(worker: int, _n: int) -> RequestSpec:
        return RequestSpec("GET", WHOAMI, headers={"Authorization": f"Bearer {tokens[worker]}"})

    def login(worker: int, _n: int) -> RequestSpec:
        return RequestSpec("POST", LOGIN, login_body(users[worker], password))

    phases: list[tuple[str, Any]] = [("GET /account/whoami", whoami), ("POST /login", login)]
    for label, make in phases:
        cpu_before = server.cpu_seconds() if server is not None else None
        result = run_load(
            base_url, make, concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup
        )
        cpu_after = server.cpu_seconds() if server is not None else None
        # The server's CPU over warm-up + measurement, scaled to the measured part.
        server_cpu = None
        if cpu_before is not None and cpu_after is not None:
            server_cpu = (cpu_after - cpu_before) * result.duration_s / (result.duration_s + args.warmup)
        print(describe(label, result, server_cpu))


def run_local(db: str, args: argparse.Namespace) -> None:
    """Starts a server on ``db``, measures it, stops it (and drops its PostgreSQL database)."""
    pg: PostgresDatabases | None = None
    db_name = None
    database_url = None
    if db == "postgres":
        try:
            pg = PostgresDatabases(args.postgres_url)
        except Exception as exc:
            print(f"postgres: skipped, cannot connect to {args.postgres_url}: {type(exc).__name__}: {exc}")
            return
        db_name, database_url = pg.create("sc_bench")
    try:
        with tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp:
            port = free_port()
            config = generate_config(
                Path(tmp) / "hs", server_name="bench.test", port=port, database_url=database_url
            )
            server = ServerProcess(config, f"http://127.0.0.1:{port}", Path(tmp) / "server.log")
            server.start()
            try:
                measure(server, server.base_url, args, db)
            finally:
                code = server.stop(30)
                if code != 0:
                    print(f"  (server exited with {code}; log tail:)\n{server.tail(20)}")
    finally:
        if pg is not None and db_name is not None:
            pg.drop(db_name)
            pg.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        "Rate limits off; Argon2 at the server's configured cost (DEFAULT when started here: time_cost 3, "
        "memory 64 MiB, parallelism 1): every login pays one real password hash, so login throughput "
        f"is bounded by the hash, not HTTP. Host: {os.cpu_count()} CPUs; 100% = one core."
    )
    if args.url:
        measure(None, args.url.rstrip("/"), args, f"external {args.url}")
        return 0
    for db in (("sqlite", "postgres") if args.db == "both" else (args.db,)):
        run_local(db, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
