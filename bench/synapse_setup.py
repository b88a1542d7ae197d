"""Runs a throwaway Synapse for side-by-side benchmarks (never a project dependency).

* :func:`ensure_synapse_venv` creates ``bench/.synapse-venv`` (gitignored) and installs
  ``matrix-synapse[postgres]`` from PyPI into it, once.
* :func:`generate_synapse_config` writes a config with Synapse's own ``--generate-config`` for the
  server name ``bench.local`` and then adjusts it: one plain-HTTP client listener on 127.0.0.1, SQLite
  in the data directory or a fresh PostgreSQL database, open registration without verification,
  every ``rc_*`` rate limit raised out of reach, ``report_stats: false``, no trusted key servers
  (nothing ever leaves the machine), presence off (SecureConnect has none yet, so a chat benchmark
  compares like with like), cheap bcrypt (user setup is not what is measured) and background
  updates without pauses; :func:`start_synapse` waits until they are all done (a fresh database
  otherwise lacks a dozen indexes for the first minute).
* :func:`start_synapse` does all of that and starts it; the returned :class:`SynapseServer` has the
  base URL and stops the process (and drops its database) on :meth:`SynapseServer.close`.

Run: ``python bench/synapse_setup.py [--db sqlite|postgres] [--port N] [--data-dir DIR]`` starts one
and prints its URL, then keeps it running until Ctrl-C. PostgreSQL: ``--postgres-url`` or
``SC_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PostgresDatabases, ServerProcess, free_port  # after the sys.path insert

BENCH_DIR = Path(__file__).resolve().parent
VENV_DIR = BENCH_DIR / ".synapse-venv"
SERVER_NAME = "bench.local"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
SYNAPSE_REQUIREMENT = "matrix-synapse[postgres]"
READY_TIMEOUT_S = 120.0

# Rate limiters Synapse knows (a name it does not know is ignored, so extra ones are harmless).
_UNLIMITED = {"per_second": 1_000_000, "burst_count": 1_000_000}
RATE_LIMITS: dict[str, Any] = {
    "rc_message": _UNLIMITED,
    "rc_registration": _UNLIMITED,
    "rc_registration_token_validity": _UNLIMITED,
    "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED, "failed_attempts": _UNLIMITED},
    "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
    "rc_joins_per_room": _UNLIMITED,
    "rc_invites": {"per_room": _UNLIMITED, "per_user": _UNLIMITED, "per_issuer": _UNLIMITED},
    "rc_third_party_invite": _UNLIMITED,
    "rc_admin_redaction": _UNLIMITED,
    "rc_3pid_validation": _UNLIMITED,
    "rc_presence": {"per_user": _UNLIMITED},
    "rc_delayed_event_mgmt": _UNLIMITED,
    "rc_room_creation": _UNLIMITED,
    "rc_reports": _UNLIMITED,
    "rc_media_create": _UNLIMITED,
    "rc_key_requests": _UNLIMITED,
    "rc_profile": _UNLIMITED,
    "rc_user_directory": _UNLIMITED,
}


def venv_python(venv: Path = VENV_DIR) -> Path:
    """The interpreter of the Synapse virtualenv."""
    return venv / "bin" / "python"


def synapse_installed(venv: Path = VENV_DIR) -> bool:
    """Whether ``venv`` exists and can import synapse."""
    python = venv_python(venv)
    if not python.exists():
        return False
    done = subprocess.run(
        [str(python), "-c", "import synapse.app.homeserver"], capture_output=True, timeout=120, check=False
    )
    return done.returncode == 0


def synapse_version(venv: Path = VENV_DIR) -> str:
    """The installed Synapse version (``"?"`` when it cannot be read)."""
    done = subprocess.run(
        [str(venv_python(venv)), "-c", "import synapse; print(synapse.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return (done.stdout.split() or ["?"])[0]


def ensure_synapse_venv(venv: Path = VENV_DIR, python: str = sys.executable) -> Path:
    """Creates ``venv`` and installs Synapse into it unless that was done already.

    Returns:
        The venv's interpreter.

    Raises:
        RuntimeError: venv creation or the pip install failed (the message ends with pip's output).
    """
    if synapse_installed(venv):
        return venv_python(venv)
    if not venv_python(venv).exists():
        done = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"creating {venv} failed: {done.stderr.strip()}")
    print(f"installing {SYNAPSE_REQUIREMENT} into {venv} (a few minutes, once)...", file=sys.stderr)
    done = subprocess.run(
        [str(venv_python(venv)), "-m", "pip", "install", "--quiet", SYNAPSE_REQUIREMENT],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0 or not synapse_installed(venv):
        raise RuntimeError(
            f"pip install {SYNAPSE_REQUIREMENT} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
        )
    return venv_python(venv)


def database_section(database_url: str | None, data_dir: Path) -> dict[str, Any]:
    """Synapse's ``database`` section: SQLite in ``data_dir`` or the PostgreSQL database at the URL."""
    if database_url is None:
        return {"name": "sqlite3", "args": {"database": str(data_dir / "homeserver.db")}}
    parts = urllib.parse.urlsplit(database_url)
    args: dict[str, Any] = {
        "user": urllib.parse.unquote(parts.username or "postgres"),
        "database": parts.path.lstrip("/"),
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "cp_min": 5,
        "cp_max": 10,
    }
    if parts.password:
        args["password"] = urllib.parse.unquote(parts.password)
    return {"name": "psycopg2", "args": args}


def config_overrides(port: int, database_url: str | None, data_dir: Path) -> dict[str, Any]:
    """The options :func:`generate_synapse_config` sets on top of Synapse's generated config."""
    listener = {
        "port": port,
        "bind_addresses": ["127.0.0.1"],
        "type": "http",
        "tls": False,
        "x_forwarded": False,
        "resources": [{"names": ["client"], "compress": False}],
    }
    return {
        "listeners": [listener],
        "database": database_section(database_url, data_dir),
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "presence": {"enabled": False},
        "bcrypt_rounds": 4,
        "url_preview_enabled": False,
        # A fresh database still has dozens of background updates (mostly index creation), one per
        # second by default; run them back to back, and start_synapse waits for them to finish.
        "background_updates": {"sleep_enabled": False, "background_update_duration_ms": 500},
        **RATE_LIMITS,
    }


def generate_synapse_config(
    python: Path, data_dir: Path, *, port: int, database_url: str | None = None
) -> Path:
    """Writes ``data_dir/homeserver.yaml`` with Synapse's generator, then applies :func:`config_overrides`.

    Raises:
        RuntimeError: the generator failed.
    """
    import yaml

    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "homeserver.yaml"
    args = [str(python), "-m", "synapse.app.homeserver", "--server-name", SERVER_NAME]
    args += ["--config-path", str(config), "--data-directory", str(data_dir)]
    args += ["--generate-config", "--report-stats=no"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=data_dir, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"synapse --generate-config failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    current = yaml.safe_load(config.read_text()) or {}
    current.update(config_overrides(port, database_url, data_dir))
    config.write_text(yaml.safe_dump(current, sort_keys=False))
    return config


def pending_background_updates(database_url: str | None, data_dir: Path) -> int:
    """How many rows Synapse's ``background_updates`` table still has (-1 if it cannot be read yet)."""
    try:
        if database_url is None:
            import sqlite3

            with sqlite3.connect(data_dir / "homeserver.db", timeout=5) as conn:
                return int(conn.execute("SELECT COUNT(*) FROM background_updates").fetchone()[0])
        import psycopg2

        conn = psycopg2.connect(database_url, connect_timeout=3)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM background_updates")
                row = cur.fetchone()
                return int(row[0]) if row else -1
        finally:
            conn.close()
    except Exception:  # table not created yet, database locked...: ask again later
        return -1


def wait_for_background_updates(database_url: str | None, data_dir: Path, timeout: float) -> bool:
    """Polls until Synapse has run every background update (so its indexes exist); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pending_background_updates(database_url, data_dir) == 0:
            return True
        time.sleep(0.5)
    return False


@dataclass
class SynapseServer:
    """A running Synapse started by :func:`start_synapse`."""

    process: ServerProcess
    data_dir: Path
    version: str
    _cleanup: list[Any] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        """E.g. ``http://127.0.0.1:PORT``."""
        return str(self.process.base_url)

    def close(self) -> None:
        """Stops the process (SIGTERM, then SIGKILL after 30 s) and removes its database/data."""
        try:
            self.process.stop(30)
        except subprocess.TimeoutExpired:
            pass
        finally:
            for action in reversed(self._cleanup):
                action()
            self._cleanup.clear()


def start_synapse(
    *,
    db: str = "sqlite",
    postgres_url: str = DEFAULT_POSTGRES,
    data_dir: Path | None = None,
    port: int | None = None,
) -> SynapseServer:
    """Installs Synapse if needed, generates a fresh config and database, and starts it.

    Args:
        db: ``sqlite`` or ``postgres`` (a fresh database with the C locale Synapse requires).
        postgres_url: an admin URL that may CREATE/DROP DATABASE.
        data_dir: where the config, keys, SQLite file and log go (a temporary directory, removed on
            close, when ``None``).
        port: the loopback port (a free one when ``None``).

    Returns:
        The running server; call ``close()`` when done.

    Raises:
        RuntimeError: installation, config generation or start-up failed.
    """
    python = ensure_synapse_venv()
    cleanup: list[Any] = []
    if data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="synapse-bench-"))
        cleanup.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
        data_dir = tmp / "synapse"
    database_url = None
    try:
        if db == "postgres":
            pg = PostgresDatabases(postgres_url)
            db_name, database_url = pg.create("synapse_bench", c_locale=True)
            cleanup.append(pg.close)
            cleanup.append(lambda: pg.drop(db_name))
        port = port or free_port()
        config = generate_synapse_config(python, data_dir, port=port, database_url=database_url)
        command = [str(python), "-m", "synapse.app.homeserver", "--config-path", str(config)]
        process = ServerProcess(config, f"http://127.0.0.1:{port}", data_dir / "stdout.log", command=command)
        process.start(ready_timeout=READY_TIMEOUT_S)
        cleanup.append(process.kill)
        if not wait_for_background_updates(database_url, data_dir, READY_TIMEOUT_S):
            raise RuntimeError(f"Synapse's background updates did not finish in {READY_TIMEOUT_S:.0f} s")
        cleanup.pop()
    except BaseException:
        for action in reversed(cleanup):
            action()
        raise
    return SynapseServer(process, data_dir, synapse_version(), cleanup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("SC_TEST_POSTGRES", DEFAULT_POSTGRES))
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None, help="kept after exit when given")
    parser.add_argument("--install-only", action="store_true", help="create the venv and exit")
    args = parser.parse_args(argv)
    if args.install_only:
        print(ensure_synapse_venv())
        return 0
    server = start_synapse(db=args.db, postgres_url=args.postgres_url, data_dir=args.data_dir, port=args.port)
    print(
        f"Synapse {server.version} on {args.db}: {server.base_url} (data in {server.data_dir}); Ctrl-C stops it"
    )
    sys.stdout.flush()
    try:
        assert server.process.process is not None
        server.process.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
