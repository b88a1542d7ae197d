"""Real homeservers over TLS on loopback, ready to federate: Synapse and SecureConnect (issue 13).

Synapse is a test tool, never a project dependency: ``.ci/install-synapse`` puts a pinned
``matrix-synapse`` into its own virtualenv and ``.ci/run`` exports that venv's interpreter as
``SC_TEST_SYNAPSE``. :func:`synapse_python` returns it, skipping the test when it is unset (failing
under ``CI=true``, like PostgreSQL and Redis in ``conftest.py``).

Every server here:

* is named ``127.0.0.1:<port>``: an IP literal with an explicit port, which the spec's server
  discovery resolves without DNS, ``.well-known`` or SRV (both Synapse and our resolver connect
  straight to that address; docs/adr/0018-federation-tests-against-synapse.md);
* listens on that port with TLS (a self-signed certificate made by :func:`write_self_signed_certificate`)
  serving the client, federation and key APIs;
* accepts unverified certificates from its peers and may connect to loopback addresses
  (``federation_verify_certificates: false`` / ``federation.verify_certificates: false`` and the
  ``127.0.0.0/8``, ``::1/128`` IP allow-list), fetches keys from the origin only (no notary), and
  has its rate limits out of reach.

:func:`start_synapse` and :func:`start_secureconnect` return a :class:`Homeserver` whose
:meth:`Homeserver.register` gives a :class:`MatrixClient` (thin urllib wrappers: create/join rooms,
send, ``/messages``, ``/state``, polling helpers). :func:`attach_logs` makes the log tails of
module-scoped servers appear in a failed test's report.

A cross-server test module (issue 13) looks like::

    @pytest.fixture(scope="module")
    def servers(tmp_path_factory):
        python = harness.synapse_python()  # skip, or fail in CI, before anything starts
        base = tmp_path_factory.mktemp("fed")
        syn, ours = harness.start_parallel(
            lambda: harness.start_synapse(base / "syn", python=python),
            lambda: harness.start_secureconnect(base / "ours", ready_paths=harness.READY_PATHS),
        )
        yield syn, ours
        assert not harness.stop_all([syn, ours])

    def test_synapse_user_joins_our_room(servers, request):
        syn, ours = servers
        harness.attach_logs(request.node, servers)
        alice, bob = ours.register(), syn.register()
        room_id = alice.create_room(alias="lobby")
        bob.join(f"#lobby:{ours.server_name}")
        alice.send_message(room_id, "hi")
        bob.wait_for_message(room_id, "hi")

Remote effects are asynchronous on both sides (Synapse stages inbound PDUs and handles them after
answering ``/send``): wait with the ``wait_for_*`` helpers or :func:`poll`, never a fixed sleep.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.common import (
    CHEAP_ARGON2,
    ServerProcess,
    ServerStartError,
    deep_merge,
    free_port,
    generate_config,
    homeserver_command,
)
from homeserver.config.federation import DEFAULT_IP_RANGE_BLACKLIST
from sc_proto.crypto.keys import generate_signing_key, write_signing_keys

SYNAPSE_ENV = "SC_TEST_SYNAPSE"
LOOPBACK_RANGES = ("127.0.0.0/8", "::1/128")
FEDERATION_BLOCKLIST_WITHOUT_LOOPBACK = [
    cidr for cidr in DEFAULT_IP_RANGE_BLACKLIST if cidr not in LOOPBACK_RANGES
]
READY_PATHS = ("/_matrix/client/versions", "/_matrix/federation/v1/version", "/_matrix/key/v2/server")
SYNAPSE_READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
_SERVERS_ATTR = "_sc_servers"  # read by conftest.pytest_runtest_makereport

_UNLIMITED = {"per_second": 1_000_000, "burst_count": 1_000_000}
SYNAPSE_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _UNLIMITED,
    "rc_registration": _UNLIMITED,
    "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED, "failed_attempts": _UNLIMITED},
    "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
    "rc_joins_per_room": _UNLIMITED,
    "rc_invites": {"per_room": _UNLIMITED, "per_user": _UNLIMITED, "per_issuer": _UNLIMITED},
    "rc_admin_redaction": _UNLIMITED,
    "rc_presence": {"per_user": _UNLIMITED},
    "rc_room_creation": _UNLIMITED,
    "rc_key_requests": _UNLIMITED,
    "rc_profile": _UNLIMITED,
    "rc_user_directory": _UNLIMITED,
    # Inbound federation: no sleeping or rejecting however busy a peer is.
    "rc_federation": {
        "window_size": 1000,
        "sleep_limit": 1_000_000,
        "sleep_delay": 1,
        "reject_limit": 1_000_000,
        "concurrent": 1_000,
    },
    "federation_rr_transactions_per_room_per_second": 1_000_000,
}


def in_ci() -> bool:
    """Whether this is a CI run (``CI=true``): missing tools then fail tests instead of skipping them."""
    return os.environ.get("CI") == "true"


def synapse_python() -> Path:
    """The interpreter of the Synapse venv named by ``SC_TEST_SYNAPSE``.

    Skips the calling test when the variable is unset or wrong; fails it instead under ``CI=true``.
    """
    value = os.environ.get(SYNAPSE_ENV)
    problem = None
    if not value:
        problem = f"{SYNAPSE_ENV} is not set (run .ci/install-synapse and export its output)"
    elif not Path(value).is_file():
        problem = f"{SYNAPSE_ENV}={value} is not a file"
    if problem is not None:
        if in_ci():
            pytest.fail(problem + " (required when CI=true)")
        pytest.skip(problem)
    assert value is not None
    return Path(value)


def synapse_version(python: Path) -> str:
    """The version of Synapse installed for ``python``."""
    done = subprocess.run(
        [str(python), "-c", "import synapse; print(synapse.__version__)"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


# --------------------------------------------------------------------------- TLS and HTTP


def loopback_tls_context() -> ssl.SSLContext:
    """A client TLS context that accepts any certificate: only for the self-signed test servers."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def write_self_signed_certificate(
    directory: Path, hosts: Iterable[str] = ("localhost", "127.0.0.1", "::1")
) -> tuple[Path, Path]:
    """Writes ``tls.crt`` and ``tls.key`` (EC P-256, one day valid) for ``hosts`` into ``directory``.

    Returns:
        The certificate and private key paths (PEM).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, next(iter(hosts), "localhost"))])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def https_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One JSON request over HTTP(S), certificates not verified; returns the status and decoded body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=loopback_tls_context()) as response:
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as e:
        status, raw = int(e.code), e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def _answers(url: str) -> bool:
    try:
        status, _ = https_json("GET", url, timeout=2.0)
    except (OSError, ValueError):
        return False
    return status == 200


def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Calls ``predicate`` until it returns something truthy, which is returned.

    Raises:
        AssertionError: still falsy after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class TlsServerProcess(ServerProcess):
    """A :class:`ServerProcess` that is ready once every path in ``ready_paths`` answers 200 over HTTPS."""

    def __init__(
        self,
        config_path: Path,
        base_url: str,
        log_path: Path,
        command: list[str] | None = None,
        ready_paths: Iterable[str] = READY_PATHS,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(config_path, base_url, log_path, command)
        self.ready_paths = tuple(ready_paths)
        self.env = dict(env) if env is not None else None

    def start(self, ready_timeout: float = 30.0) -> None:
        """Starts the process and waits for every ready path.

        Raises:
            ServerStartError: it exited early or was not ready in time (it is then killed).
        """
        with self.log_path.open("ab") as log:
            command = self.command or [*homeserver_command(), "run", "--config", str(self.config_path)]
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )
        deadline = time.monotonic() + ready_timeout
        pending = list(self.ready_paths)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.exit_code = self.process.returncode
                raise ServerStartError(f"server exited with {self.exit_code} at start-up\n{self.tail()}")
            while pending and _answers(self.base_url + pending[0]):
                pending.pop(0)
            if not pending:
                return
            time.sleep(0.1)
        self.kill()
        raise ServerStartError(
            f"server not ready after {ready_timeout:.0f}s (waiting for {pending})\n{self.tail()}"
        )


# --------------------------------------------------------------------------- client helpers


class MatrixClient:
    """A logged-in user of a test server, over the Client-Server API (blocking urllib calls)."""

    def __init__(self, base_url: str, user_id: str, access_token: str, password: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.user_id = user_id
        self.access_token = access_token
        self.password = password
        self._txn = 0

    def request(self, method: str, path: str, body: Any = None, *, expect: int | None = 200) -> Any:
        """Sends an authenticated request; returns the JSON body.

        Raises:
            AssertionError: the status is not ``expect`` (``None`` accepts any and returns ``(status, body)``).
        """
        status, answer = https_json(method, self.base_url + path, body, token=self.access_token)
        if expect is None:
            return status, answer
        assert status == expect, f"{method} {path} as {self.user_id}: {status} {answer!r}"
        return answer

    def create_room(self, *, alias: str | None = None, public: bool = True, **extra: Any) -> str:
        """Creates a room (public chat preset and listed in the directory by default); returns its ID."""
        body: dict[str, Any] = {"preset": "public_chat" if public else "private_chat", **extra}
        if public:
            body.setdefault("visibility", "public")
        if alias is not None:
            body["room_alias_name"] = alias
        return str(self.request("POST", "/_matrix/client/v3/createRoom", body)["room_id"])

    def join(self, room_id_or_alias: str, via: Iterable[str] = ()) -> str:
        """Joins a room by ID or alias (``via`` servers for a remote room ID); returns the room ID."""
        query = urllib.parse.urlencode([("via", server) for server in via])
        path = "/_matrix/client/v3/join/" + urllib.parse.quote(room_id_or_alias, safe="")
        return str(self.request("POST", path + (f"?{query}" if query else ""), {})["room_id"])

    def invite(self, room_id: str, user_id: str) -> None:
        """Invites ``user_id`` into ``room_id``."""
        self.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/invite", {"user_id": user_id})

    def leave(self, room_id: str) -> None:
        """Leaves ``room_id``."""
        self.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/leave", {})

    def send_message(self, room_id: str, body: str, msgtype: str = "m.text") -> str:
        """Sends an ``m.room.message``; returns its event ID."""
        return self.send_event(room_id, "m.room.message", {"msgtype": msgtype, "body": body})

    def send_event(self, room_id: str, event_type: str, content: Mapping[str, Any]) -> str:
        """Sends a message event of any type; returns its event ID."""
        self._txn += 1
        txn = f"t{self._txn}.{time.monotonic_ns()}"
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/send/{_q(event_type)}/{txn}"
        return str(self.request("PUT", path, dict(content))["event_id"])

    def set_state(
        self, room_id: str, event_type: str, content: Mapping[str, Any], state_key: str = ""
    ) -> str:
        """Sends a state event; returns its event ID."""
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}"
        return str(self.request("PUT", path, dict(content))["event_id"])

    def messages(self, room_id: str, *, direction: str = "b", limit: int = 50) -> list[dict[str, Any]]:
        """One page of ``/messages`` from the end (``b``) or the start (``f``) of the room."""
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/messages?dir={direction}&limit={limit}"
        return list(self.request("GET", path)["chunk"])

    def state(self, room_id: str) -> list[dict[str, Any]]:
        """The room's current state events."""
        return list(self.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state"))

    def joined_members(self, room_id: str) -> set[str]:
        """User IDs joined to the room, as this server sees it."""
        answer = self.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/joined_members")
        return set(answer["joined"])

    def joined_rooms(self) -> set[str]:
        """Room IDs this user has joined."""
        return set(self.request("GET", "/_matrix/client/v3/joined_rooms")["joined_rooms"])

    def resolve_alias(self, alias: str) -> dict[str, Any]:
        """``GET /directory/room/{alias}``: ``room_id`` and ``servers``."""
        return dict(self.request("GET", "/_matrix/client/v3/directory/room/" + _q(alias)))

    def wait_for_message(self, room_id: str, body: str, timeout: float = 20.0) -> dict[str, Any]:
        """Polls ``/messages`` until an ``m.room.message`` with ``body`` shows up; returns that event."""

        def find() -> dict[str, Any] | None:
            status, answer = self.request(
                "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/messages?dir=b&limit=100", expect=None
            )
            if status != 200:
                return None
            for event in answer["chunk"]:
                if event.get("type") == "m.room.message" and event.get("content", {}).get("body") == body:
                    return dict(event)
            return None

        return dict(poll(find, timeout, what=f"message {body!r} in {room_id} on {self.base_url}"))

    def wait_for_member(self, room_id: str, user_id: str, timeout: float = 20.0) -> None:
        """Polls ``/joined_members`` until ``user_id`` is joined."""

        def joined() -> bool:
            status, answer = self.request(
                "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/joined_members", expect=None
            )
            return status == 200 and user_id in answer.get("joined", {})

        poll(joined, timeout, what=f"{user_id} joined to {room_id} on {self.base_url}")


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# --------------------------------------------------------------------------- servers


class Homeserver:
    """A running test homeserver (Synapse or SecureConnect) named ``127.0.0.1:<port>``."""

    kind = "homeserver"

    def __init__(self, process: TlsServerProcess, server_name: str, data_dir: Path) -> None:
        self.process = process
        self.server_name = server_name
        self.data_dir = data_dir
        self._users = 0

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:<port>``."""
        return self.process.base_url

    @property
    def log_path(self) -> Path:
        """The captured output of the process."""
        return self.process.log_path

    def tail(self, lines: int = 60) -> str:
        """The last lines of the process's output."""
        return self.process.tail(lines)

    def user_id(self, localpart: str) -> str:
        """``@localpart:server_name``."""
        return f"@{localpart}:{self.server_name}"

    def register(self, localpart: str | None = None, password: str = "harness-password-1") -> MatrixClient:
        """Registers a new user and returns it logged in (a fresh localpart when none is given)."""
        raise NotImplementedError

    def login(self, localpart: str, password: str) -> MatrixClient:
        """Logs an existing user in with a password (a new device)."""
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        }
        status, answer = https_json("POST", self.base_url + "/_matrix/client/v3/login", body)
        assert status == 200, f"login {localpart} on {self.base_url}: {status} {answer!r}"
        return MatrixClient(self.base_url, answer["user_id"], answer["access_token"], password)

    def _next_localpart(self, localpart: str | None) -> str:
        self._users += 1
        return localpart or f"u{self._users}_{secrets.token_hex(3)}"

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; returns the exit code (the process is killed if it hangs)."""
        try:
            return self.process.stop(timeout)
        except subprocess.TimeoutExpired:
            return -9

    def __repr__(self) -> str:
        return f"<{self.kind} {self.server_name}>"


class SynapseHomeserver(Homeserver):
    """A Synapse process started by :func:`start_synapse`."""

    kind = "synapse"

    def __init__(
        self, process: TlsServerProcess, server_name: str, data_dir: Path, shared_secret: str
    ) -> None:
        super().__init__(process, server_name, data_dir)
        self.shared_secret = shared_secret

    def register(
        self, localpart: str | None = None, password: str = "harness-password-1", *, admin: bool = False
    ) -> MatrixClient:
        """Registers through the shared-secret admin API (``/_synapse/admin/v1/register``)."""
        localpart = self._next_localpart(localpart)
        url = self.base_url + "/_synapse/admin/v1/register"
        status, answer = https_json("GET", url)
        assert status == 200, f"register nonce: {status} {answer!r}"
        nonce = answer["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(
            b"\x00".join(p.encode() for p in (nonce, localpart, password, "admin" if admin else "notadmin"))
        )
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        status, answer = https_json("POST", url, body)
        assert status == 200, f"register {localpart} on {self.base_url}: {status} {answer!r}"
        return MatrixClient(self.base_url, answer["user_id"], answer["access_token"], password)


class SecureConnectHomeserver(Homeserver):
    """A ``sc-homeserver`` process started by :func:`start_secureconnect`."""

    kind = "secureconnect"

    def register(self, localpart: str | None = None, password: str = "harness-password-1") -> MatrixClient:
        """Registers with ``m.login.dummy`` (the harness turns open registration on)."""
        localpart = self._next_localpart(localpart)
        body = {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}
        status, answer = https_json("POST", self.base_url + "/_matrix/client/v3/register", body)
        assert status == 200, f"register {localpart} on {self.base_url}: {status} {answer!r}"
        return MatrixClient(self.base_url, answer["user_id"], answer["access_token"], password)


def synapse_config(data_dir: Path, port: int, shared_secret: str) -> dict[str, Any]:
    """The whole Synapse config of a loopback federation test server (written, not generated)."""
    cert, key = write_self_signed_certificate(data_dir)
    signing_key = data_dir / "signing.key"
    signing_key.write_text(write_signing_keys([generate_signing_key("a_" + secrets.token_hex(2))]))
    signing_key.chmod(0o600)
    server_name = f"127.0.0.1:{port}"
    listener = {
        "port": port,
        "bind_addresses": ["127.0.0.1"],
        "type": "http",
        "tls": True,
        "x_forwarded": False,
        "resources": [{"names": ["client", "federation", "keys"], "compress": False}],
    }
    return {
        "server_name": server_name,
        "public_baseurl": f"https://{server_name}/",
        "pid_file": str(data_dir / "homeserver.pid"),
        "listeners": [listener],
        "tls_certificate_path": str(cert),
        "tls_private_key_path": str(key),
        "database": {"name": "sqlite3", "args": {"database": str(data_dir / "homeserver.db")}},
        "log_config": str(_synapse_log_config(data_dir)),
        "media_store_path": str(data_dir / "media"),
        "signing_key_path": str(signing_key),
        "registration_shared_secret": shared_secret,
        "enable_registration": False,
        "report_stats": False,
        "enable_metrics": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_verify_certificates": False,
        "ip_range_whitelist": list(LOOPBACK_RANGES),
        # Synapse checks IP-literal server names against this list alone (its allow-list only applies
        # to resolved host names), so loopback must be left out of it rather than allowed.
        "federation_ip_range_blacklist": FEDERATION_BLOCKLIST_WITHOUT_LOOPBACK,
        "allow_public_rooms_over_federation": True,
        "allow_public_rooms_without_auth": True,
        "room_list_publication_rules": [{"action": "allow"}],
        "alias_creation_rules": [{"action": "allow"}],
        "presence": {"enabled": False},
        "url_preview_enabled": False,
        "dynamic_thumbnails": False,
        "bcrypt_rounds": 4,
        "background_updates": {"sleep_enabled": False, "background_update_duration_ms": 500},
        **SYNAPSE_RATE_LIMITS,
    }


def _synapse_log_config(data_dir: Path) -> Path:
    """Synapse's log config: INFO to stdout (captured in ``stdout.log``), the federation client at DEBUG off."""
    config = {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(request)s %(message)s"}},
        "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter", "request": ""}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["context"],
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {"synapse.storage.SQL": {"level": "WARNING"}, "twisted": {"level": "WARNING"}},
        "root": {"level": "INFO", "handlers": ["console"]},
        "disable_existing_loggers": False,
    }
    path = data_dir / "log.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_synapse(
    data_dir: Path,
    *,
    python: Path | None = None,
    port: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    ready_timeout: float = SYNAPSE_READY_TIMEOUT_S,
) -> SynapseHomeserver:
    """Writes a config into ``data_dir`` and starts Synapse on ``127.0.0.1:<port>`` with TLS.

    Args:
        data_dir: created; holds the config, keys, certificate, SQLite database and ``stdout.log``.
        python: the Synapse venv's interpreter (default :func:`synapse_python`, which may skip).
        port: the loopback port (a free one when ``None``).
        overrides: merged into the config (nested mappings merged).
        ready_timeout: seconds to wait for the client, federation and key APIs.

    Raises:
        ServerStartError: Synapse exited or was not ready in time.
    """
    python = python or synapse_python()
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    shared_secret = secrets.token_hex(16)
    config = deep_merge(synapse_config(data_dir, port, shared_secret), overrides or {})
    config_path = data_dir / "homeserver.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [str(python), "-m", "synapse.app.homeserver", "--config-path", str(config_path)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    process = TlsServerProcess(
        config_path, f"https://127.0.0.1:{port}", data_dir / "stdout.log", command, env=env
    )
    process.start(ready_timeout)
    return SynapseHomeserver(process, str(config["server_name"]), data_dir, shared_secret)


def secureconnect_overrides(port: int, cert: Path, key: Path) -> dict[str, Any]:
    """Config options that turn a generated SecureConnect config into a loopback federation test server."""
    listener = {
        "bind_address": "127.0.0.1",
        "port": port,
        "tls": True,
        "tls_certificate_path": str(cert),
        "tls_private_key_path": str(key),
    }
    return {
        "server": {"listeners": [listener], "public_baseurl": f"https://127.0.0.1:{port}/"},
        "federation": {"verify_certificates": False, "ip_range_whitelist": list(LOOPBACK_RANGES)},
    }


def start_secureconnect(
    data_dir: Path,
    *,
    port: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    ready_paths: Iterable[str] = ("/_matrix/client/versions",),
    ready_timeout: float = 30.0,
) -> SecureConnectHomeserver:
    """Generates a config with ``sc-homeserver generate-config`` and starts it on ``127.0.0.1:<port>`` with TLS.

    Open registration, rate limits off, cheap Argon2. Until federation lands, readiness means the
    client API answers; pass ``ready_paths=READY_PATHS`` to wait for the federation and key APIs too.

    Raises:
        ServerStartError: the server exited or was not ready in time.
    """
    port = port or free_port()
    server_name = f"127.0.0.1:{port}"
    cert, key = write_self_signed_certificate(data_dir / "tls")
    merged = deep_merge(deep_merge(CHEAP_ARGON2, secureconnect_overrides(port, cert, key)), overrides or {})
    config_path = generate_config(data_dir, server_name=server_name, port=port, overrides=merged)
    process = TlsServerProcess(
        config_path, f"https://127.0.0.1:{port}", data_dir / "server.log", ready_paths=ready_paths
    )
    process.start(ready_timeout)
    return SecureConnectHomeserver(process, server_name, data_dir)


def start_parallel(*starters: Callable[[], Homeserver]) -> list[Homeserver]:
    """Runs several ``start_*`` calls at once (Synapse's start-up is mostly waiting on SQLite).

    Raises:
        Exception: the first failure, after every server that did start has been stopped.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(starters)) as pool:
        futures = [pool.submit(starter) for starter in starters]
    started = [f.result() for f in futures if f.exception() is None]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        stop_all(started)
        raise errors[0]  # type: ignore[misc]
    return started


def attach_logs(item: pytest.Item, servers: Iterable[Homeserver]) -> None:
    """Makes ``conftest.py`` attach these servers' log tails to ``item``'s report if it fails."""
    attached: list[Any] = getattr(item, _SERVERS_ATTR, None) or []
    attached.extend(server.process for server in servers)
    setattr(item, _SERVERS_ATTR, attached)


def stop_all(servers: Iterable[Homeserver]) -> list[str]:
    """Stops every server; returns a line for each that did not exit 0."""
    problems = []
    for server in servers:
        code = server.stop()
        if code != 0:
            problems.append(f"{server!r} exited with {code}\n{server.tail(30)}")
    return problems


if __name__ == "__main__":  # pragma: no cover - manual use: start one Synapse and keep it running
    import tempfile

    home = start_synapse(Path(tempfile.mkdtemp(prefix="synapse-harness-")))
    print(home.server_name, home.base_url, home.data_dir, file=sys.stderr)
    try:
        assert home.process.process is not None
        home.process.process.wait()
    except KeyboardInterrupt:
        home.stop()
