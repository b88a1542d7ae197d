"""Fixtures that run every storage test on SQLite and, when configured, on PostgreSQL.

* ``SC_TEST_POSTGRES`` unset: only SQLite (PostgreSQL variants are skipped).
* ``SC_TEST_POSTGRES=postgresql://postgres@127.0.0.1:5432/postgres``: PostgreSQL variants run too.
  A template database holding the current schema is created once per session; each test module gets
  a throwaway database cloned from it (or from ``template0`` for empty databases), dropped afterwards.
  If the server is unreachable the variants are skipped, unless ``CI=true``, where that is a failure.
* PostgreSQL variants carry the ``postgres`` marker, so ``pytest -m "not postgres"`` runs SQLite only.

Fixtures: ``database`` (an empty database) and ``prepared_database`` (the current schema applied; use
this for store tests). Both yield a :class:`tests.storage.harness.TestDatabase`.
"""

from __future__ import annotations

import inspect
import itertools
import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from homeserver.storage.migrations import prepare_database
from tests.storage.harness import TestDatabase, get_success

_ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
_BOOKKEEPING = ("schema_version", "schema_compat_version", "applied_deltas")
_counter = itertools.count()


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> pytest.Class | None:
    """Collect ``FooTests`` classes (STYLE.md naming) as well as pytest's default ``Test*``."""
    if inspect.isclass(obj) and name.endswith("Tests") and not name.startswith(("Test", "_")):
        return pytest.Class.from_parent(collector, name=name, obj=obj)  # type: ignore[no-any-return]
    return None


class PostgresServer:
    """Admin access to the test PostgreSQL server (autocommit, for CREATE/DROP DATABASE)."""

    def __init__(self, url: str) -> None:
        import psycopg2

        self.url = url
        self._conn = psycopg2.connect(url, connect_timeout=3)
        self._conn.autocommit = True
        self.template: str | None = None
        self.template_tables: frozenset[str] = frozenset()

    def url_for(self, dbname: str) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))

    def create(self, template: str) -> str:
        name = f"sc_test_{os.getpid()}_{next(_counter)}"
        with self._conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop(self, name: str) -> None:
        with self._conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self._conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server from ``SC_TEST_POSTGRES``, with a template holding the current schema."""
    url = os.environ.get("SC_TEST_POSTGRES")
    if not url:
        pytest.skip("SC_TEST_POSTGRES is not set")
    try:
        server = PostgresServer(url)
    except Exception as exc:
        message = f"PostgreSQL at SC_TEST_POSTGRES is unreachable: {type(exc).__name__}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    template = server.create("template0")
    db = TestDatabase("postgres", server.url_for(template))
    try:
        get_success(prepare_database(db.make_pool()))
    except BaseException:
        db.close_pools()
        server.drop(template)
        server.close()
        raise
    db.close_pools()
    server.template = template
    server.template_tables = frozenset(row[0] for row in _pg_admin_txn(db.url, [_LIST_TABLES]))
    yield server
    server.drop(template)
    server.close()


@pytest.fixture(scope="module")
def _pg_empty_db(request: pytest.FixtureRequest) -> Iterator[str]:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create("template0")
    yield server.url_for(name)
    server.drop(name)


@pytest.fixture(scope="module")
def _pg_prepared_db(request: pytest.FixtureRequest) -> Iterator[str]:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    assert server.template is not None
    name = server.create(server.template)
    yield server.url_for(name)
    server.drop(name)


def _pg_admin_txn(url: str, statements: list[str]) -> Any:
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=3)
    try:
        with conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


@pytest.fixture(params=_ENGINES)
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[TestDatabase]:
    """An empty database on each engine (reset before every test)."""
    if request.param == "sqlite":
        db = TestDatabase("sqlite", f"sqlite://{tmp_path / 'test.db'}")
    else:
        url = request.getfixturevalue("_pg_empty_db")
        _pg_admin_txn(url, ["DROP SCHEMA IF EXISTS public CASCADE", "CREATE SCHEMA public"])
        db = TestDatabase("postgres", url)
    yield db
    db.close_pools()


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[TestDatabase]:
    """An empty PostgreSQL database (for PostgreSQL-only tests, which must be marked ``postgres``)."""
    url = request.getfixturevalue("_pg_empty_db")
    _pg_admin_txn(url, ["DROP SCHEMA IF EXISTS public CASCADE", "CREATE SCHEMA public"])
    db = TestDatabase("postgres", url)
    yield db
    db.close_pools()


@pytest.fixture(params=_ENGINES)
def prepared_database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[TestDatabase]:
    """A database with the current schema on each engine; data and scratch tables reset after each test."""
    if request.param == "sqlite":
        db = TestDatabase("sqlite", f"sqlite://{tmp_path / 'test.db'}")
        get_success(prepare_database(db.make_pool()))
        db.close_pools()
        yield db
        db.close_pools()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = request.getfixturevalue("_pg_prepared_db")
    db = TestDatabase("postgres", url)
    yield db
    db.close_pools()
    template_tables = server.template_tables
    tables = [row[0] for row in _pg_admin_txn(url, [_LIST_TABLES])]
    cleanup = [f'DROP TABLE "{t}" CASCADE' for t in tables if t not in template_tables]
    data_tables = [t for t in tables if t in template_tables and t not in _BOOKKEEPING]
    if data_tables:
        cleanup.append("TRUNCATE " + ", ".join(f'"{t}"' for t in data_tables))
    if cleanup:
        _pg_admin_txn(url, cleanup)


_LIST_TABLES = (
    "SELECT table_name FROM information_schema.tables"
    " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
)
