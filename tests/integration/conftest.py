"""Fixtures that run real ``sc-homeserver`` processes on loopback.

* ``homeserver``: a server on SQLite in a fresh data directory.
* ``homeserver_any_db``: the same, parametrised over SQLite and PostgreSQL. The PostgreSQL variant
  (marked ``postgres``) needs ``SC_TEST_POSTGRES`` (an admin URL, e.g.
  ``postgresql://postgres@127.0.0.1:5432/postgres``); each server gets a fresh database, dropped at
  teardown. Without a reachable PostgreSQL the variant is skipped, unless ``CI=true``, where it fails.
* ``server_factory``: starts more servers with config overrides (e.g. default Argon2 cost).

Every server binds 127.0.0.1 on a port found by binding port 0, uses open registration, rate limits
off (lockout on: the ``--no-rate-limits`` default) and cheap Argon2 parameters unless overridden. Its
output goes to ``server.log`` in its data directory; when a test fails, the log's tail is attached
to the report. Teardown sends SIGTERM and asserts that the process exits 0 within 10 s.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.common import (
    CHEAP_ARGON2,
    PostgresDatabases,
    ServerProcess,
    deep_merge,
    free_port,
    generate_config,
)

SERVER_NAME = "it.test"
SHUTDOWN_TIMEOUT_S = 10.0
_SERVERS_ATTR = "_sc_servers"

ServerFactory = Callable[..., ServerProcess]


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> pytest.Class | None:
    """Collect ``FooTests`` classes (STYLE.md naming) as well as pytest's default ``Test*``."""
    if inspect.isclass(obj) and name.endswith("Tests") and not name.startswith(("Test", "_")):
        return pytest.Class.from_parent(collector, name=name, obj=obj)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Attaches the tail of every server log of a failed test to its report."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed:
        for server in getattr(item, _SERVERS_ATTR, []):
            report.sections.append((f"server log tail ({server.log_path})", server.tail(60)))


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    """Admin access to the PostgreSQL server at ``SC_TEST_POSTGRES`` (skip or, in CI, fail without it)."""
    url = os.environ.get("SC_TEST_POSTGRES")
    if not url:
        if _in_ci():
            pytest.fail("SC_TEST_POSTGRES is not set (required when CI=true)")
        pytest.skip("SC_TEST_POSTGRES is not set")
    try:
        databases = PostgresDatabases(url)
    except Exception as exc:
        message = f"PostgreSQL at SC_TEST_POSTGRES is unreachable: {type(exc).__name__}: {exc}"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    yield databases
    databases.close()


class _Servers:
    """Starts servers for one test and stops them (gracefully, asserted) at teardown."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self._request = request
        self._tmp_path = tmp_path
        self._running: list[ServerProcess] = []
        self._databases: list[str] = []
        setattr(request.node, _SERVERS_ATTR, self._running)

    def start(
        self,
        *,
        db: str = "sqlite",
        overrides: Mapping[str, Any] | None = None,
        cheap_argon2: bool = True,
        name: str | None = None,
    ) -> ServerProcess:
        """Generates a config and starts a server; returns it once it is ready."""
        data_dir = self._tmp_path / (name or f"hs{len(self._running)}")
        database_url = None
        if db == "postgres":
            pg: PostgresDatabases = self._request.getfixturevalue("postgres_databases")
            db_name, database_url = pg.create()
            self._databases.append(db_name)
        port = free_port()
        merged = deep_merge(CHEAP_ARGON2, overrides or {}) if cheap_argon2 else dict(overrides or {})
        config = generate_config(
            data_dir, server_name=SERVER_NAME, port=port, database_url=database_url, overrides=merged
        )
        server = ServerProcess(config, f"http://127.0.0.1:{port}", data_dir / "server.log")
        self._running.append(server)
        server.start()
        return server

    def close(self) -> None:
        failures: list[str] = []
        for server in self._running:
            if server.process is None:
                continue
            try:
                code = server.stop(SHUTDOWN_TIMEOUT_S)
            except Exception as exc:  # the process hung: it has been killed
                failures.append(f"{server.base_url} did not stop within {SHUTDOWN_TIMEOUT_S}s: {exc}")
                continue
            if code != 0:
                failures.append(f"{server.base_url} exited with {code} after SIGTERM\n{server.tail()}")
        if self._databases:
            pg: PostgresDatabases = self._request.getfixturevalue("postgres_databases")
            for db_name in self._databases:
                pg.drop(db_name)
        if failures:
            pytest.fail("\n".join(failures))


@pytest.fixture
def server_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerFactory]:
    """``server_factory(db="sqlite"|"postgres", overrides={...}, cheap_argon2=True)`` starts a server."""
    servers = _Servers(request, tmp_path)
    yield servers.start
    servers.close()


@pytest.fixture
def homeserver(server_factory: ServerFactory) -> ServerProcess:
    """A running server on SQLite."""
    return server_factory()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def homeserver_any_db(request: pytest.FixtureRequest, server_factory: ServerFactory) -> ServerProcess:
    """A running server, once on SQLite and once on PostgreSQL."""
    return server_factory(db=request.param)
