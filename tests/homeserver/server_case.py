"""A test case that builds the whole homeserver (composition root) on the fake reactor.

The database is SQLite in memory, or — when ``SC_TEST_POSTGRES`` is set (``tox -e postgres``) — a fresh
PostgreSQL database per test, cloned from a template that holds the current schema. The same tests thus
run on both engines. When ``SC_TEST_POSTGRES`` is set but the server is unreachable, tests skip, except
under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import urllib.parse
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import MemoryReactorClock

from homeserver.api.ports import RemotePorts
from homeserver.app.composition import Homeserver, build_homeserver
from homeserver.config.loader import parse_config
from homeserver.http.site import SCSite
from sc_proto.crypto.keys import generate_signing_key
from tests.unittest import FakeChannel, HomeserverTestCase

_pg_template: dict[str, str] = {}
_BOOKKEEPING = frozenset({"schema_version", "schema_compat_version", "applied_deltas"})
_seeded: set[str] = set()
_sqlite_template: dict[str, str] = {}


def _pg_admin(url: str) -> Any:
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=3)
    conn.autocommit = True
    return conn


def _url_for(url: str, dbname: str) -> str:
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/" + dbname))


def postgres_url_for_test() -> str | None:
    """Returns a clean PostgreSQL database for one test; None when PostgreSQL is not configured.

    One database per test process holds the current schema; before each test every data table is
    truncated (much faster than creating a database per test).
    """
    base = os.environ.get("SC_TEST_POSTGRES")
    if not base:
        return None
    if "url" not in _pg_template:
        try:
            conn = _pg_admin(base)
        except Exception as exc:
            import pytest

            message = f"PostgreSQL at SC_TEST_POSTGRES is unreachable: {exc}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        name = f"sc_hs_{os.getpid()}"
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            conn.close()
        _pg_template["url"] = _url_for(base, name)
        _prepare_schema(_pg_template["url"])
        atexit.register(_drop_database, base, name)
        _seeded.update(_tables_with_rows(_pg_template["url"]))
    url = _pg_template["url"]
    conn = _pg_admin(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
            # Tables the migrations seeded (counters) keep their rows; everything else starts empty.
            tables = [r[0] for r in cur.fetchall() if r[0] not in _BOOKKEEPING and r[0] not in _seeded]
            if tables:
                cur.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables))
    finally:
        conn.close()
    return url


def _tables_with_rows(url: str) -> set[str]:
    conn = _pg_admin(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
            seeded = set()
            for (table,) in cur.fetchall():
                cur.execute(f'SELECT EXISTS (SELECT 1 FROM "{table}")')
                if cur.fetchone()[0]:
                    seeded.add(table)
            return seeded
    finally:
        conn.close()


def _drop_database(base: str, name: str) -> None:
    try:
        conn = _pg_admin(base)
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
    except Exception:
        pass


def _prepare_schema(url: str) -> None:
    from homeserver.storage.engines import DatabaseSettings, create_engine
    from homeserver.storage.migrations import prepare_database
    from homeserver.storage.pool import DatabasePool

    pool = DatabasePool(create_engine(DatabaseSettings(url=url)), None, run_in_thread=False)
    results: list[Any] = []
    ensureDeferred(prepare_database(pool)).addBoth(results.append)
    ensureDeferred(pool.close()).addBoth(lambda _: None)
    if results and hasattr(results[0], "raiseException"):
        results[0].raiseException()


TEST_SIGNING_KEY = generate_signing_key("test")

TEST_SERVER_NAME = "test:8448"
"""The server name of every full-homeserver test; new tests build user IDs from it (``f"@alice:{TEST_SERVER_NAME}"``)."""

# Cheap password hashing and no rate limits unless a test asks for them.
BASE_CONFIG: dict[str, Any] = {
    "server": {"server_name": TEST_SERVER_NAME, "public_baseurl": "https://matrix.test/"},
    "auth": {"argon2": {"time_cost": 1, "memory_cost_kib": 8, "parallelism": 1}},
    "ratelimits": {"enabled": False},
    "registration": {"mode": "open", "password_policy": {"minimum_length": 8}},
    # Local behaviour only: federation tests (tests/federation) enable it with their own I/O edges.
    "federation": {"enabled": False},
}


class FullHomeserverTestCase(HomeserverTestCase):
    """Runs requests against the real composition root with a synchronous database pool."""

    hs: Homeserver

    def default_config(self) -> dict[str, Any]:
        return {k: dict(v) for k, v in BASE_CONFIG.items()}

    def make_homeserver(self, reactor: MemoryReactorClock, clock: Any) -> Homeserver:
        raw = dict(self.config)
        self._pg_url = postgres_url_for_test()
        database = dict(raw.get("database", {}))
        database["url"] = self._pg_url or (os.environ.get("SC_TEST_SQLITE_URL") or self._sqlite_url_for_test())
        database.setdefault("sqlite_synchronous", "NORMAL")
        raw["database"] = database
        config = parse_config(raw, "/nonexistent")
        hs = self.get_success(
            build_homeserver(
                config, reactor, clock=clock, threaded=False, signing_key=TEST_SIGNING_KEY, ports=self.make_ports()
            )
        )
        self.addCleanup(lambda: ensureDeferred(hs.pool.close()))
        return hs

    def make_ports(self) -> RemotePorts | None:
        """The outward ports the homeserver gets (None: local-only); override to inject fakes."""
        return None

    def _sqlite_url_for_test(self) -> str:
        """A private SQLite file copied from a template that already holds the schema (much faster
        than applying every schema delta to a fresh database for each test)."""
        if "path" not in _sqlite_template:
            folder = tempfile.mkdtemp(prefix="sc-test-template-")
            atexit.register(shutil.rmtree, folder, True)
            path = os.path.join(folder, "template.db")
            _prepare_schema("sqlite://" + path)
            _sqlite_template["path"] = path
        folder = tempfile.mkdtemp(prefix="sc-test-")
        self.addCleanup(shutil.rmtree, folder, True)
        path = os.path.join(folder, "homeserver.db")
        shutil.copyfile(_sqlite_template["path"], path)
        return "sqlite://" + path

    def create_resource(self) -> Any:
        return self.hs.resource

    def create_site(self) -> SCSite:
        return self.hs.site

    # ------------------------------------------------------------------ helpers

    def register_user(self, localpart: str, password: str = "p4ssw0rd-long", *, admin: bool = False) -> str:
        """Creates an account directly; returns its user ID."""
        return self.get_success(self.hs.create_user(localpart, password, admin=admin))

    def login(self, localpart: str, password: str = "p4ssw0rd-long", **extra: Any) -> dict[str, Any]:
        """Logs in with a password; returns the response body (asserting 200)."""
        channel = self.make_request(
            "POST",
            "/_matrix/client/v3/login",
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
             "password": password, **extra},
        )
        assert channel.code == 200, channel.json_body
        body: dict[str, Any] = channel.json_body
        return body

    def whoami(self, token: str) -> FakeChannel:
        return self.make_request("GET", "/_matrix/client/v3/account/whoami", access_token=token)
