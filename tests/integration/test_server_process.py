"""The ``sc-homeserver`` command line and HTTP edge cases against a real process and socket."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bench.common import (
    ServerProcess,
    free_port,
    generate_config,
    http_json,
    login_body,
    register_user,
    run_cli,
    wait_for,
)
from homeserver.config.loader import load_config
from tests.integration.conftest import SERVER_NAME, ServerFactory

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-battery"
LOGIN = "/_matrix/client/v3/login"
MAX_BODY = 1024 * 1024  # server.max_request_body_size default


def raw_exchange(server: ServerProcess, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], Any]:
    """Sends a raw HTTP/1.1 request on a new socket; returns status, headers and the JSON body.

    Send errors are ignored (the server may answer and close before reading everything).
    """
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head + body)
        except OSError:
            pass
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header_blob, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = header_blob.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(payload) if payload else None


def post_head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Connection: close\r\n{extra}\r\n").encode()


class GenerateConfigTests:
    def test_generate_config_prints_path_and_writes_loadable_files(self, tmp_path: Path) -> None:
        """generate-config prints the config's path and writes a loadable config and a private signing key."""
        data_dir = tmp_path / "hs"
        done = run_cli("generate-config", "--server-name", SERVER_NAME, "--data-dir", str(data_dir))
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout == f"{data_dir / 'homeserver.yaml'}\n"
        config = load_config(data_dir / "homeserver.yaml")
        assert config.server.server_name == SERVER_NAME
        assert config.registration.mode == "closed"
        key = data_dir / "signing.key"
        assert key.read_text().startswith("ed25519 a_")
        assert key.stat().st_mode & 0o077 == 0

    def test_generate_config_refuses_bad_input(self, tmp_path: Path) -> None:
        """A bad server name is a usage error (exit 2), without a traceback or any file written."""
        done = run_cli("generate-config", "--server-name", "bad name", "--data-dir", str(tmp_path / "d"))
        assert done.returncode == 2
        assert "server_name" in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "d").exists()

    def test_version(self) -> None:
        """``version`` prints the program name and version."""
        done = run_cli("version")
        assert done.returncode == 0 and done.stdout.startswith("sc-homeserver ")


class RegisterUserTests:
    def test_register_user_admin_can_log_in(self, homeserver: ServerProcess) -> None:
        """register-user --admin (run beside the live server) creates an admin who can log in."""
        config = str(homeserver.config_path)
        done = run_cli("register-user", "--config", config, "boss", "--password", PASSWORD, "--admin")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"created @boss:{SERVER_NAME} (admin)"
        assert PASSWORD not in done.stdout + done.stderr
        status, body = http_json("POST", homeserver.base_url + LOGIN, login_body("boss", PASSWORD))
        assert status == 200, body
        assert body["user_id"] == f"@boss:{SERVER_NAME}"
        with sqlite3.connect(homeserver.config_path.parent / "homeserver.db") as db:
            rows = db.execute("SELECT user_id, is_admin FROM users ORDER BY user_id").fetchall()
        assert rows == [(f"@boss:{SERVER_NAME}", 1)]

    def test_register_user_refuses_duplicates_and_weak_passwords(self, homeserver: ServerProcess) -> None:
        """An existing user or a password failing the policy: exit 1 with an error, no traceback."""
        config = str(homeserver.config_path)
        assert run_cli("register-user", "--config", config, "carol", "--password", PASSWORD).returncode == 0
        again = run_cli("register-user", "--config", config, "carol", "--password", PASSWORD)
        assert again.returncode == 1 and "already exists" in again.stderr
        weak = run_cli("register-user", "--config", config, "dave", "--password", "short")
        assert weak.returncode == 1 and weak.stderr.startswith("error: ")
        for done in (again, weak):
            assert "Traceback" not in done.stderr


class BadConfigTests:
    @pytest.mark.parametrize(
        ("overrides", "text"),
        [
            ({"database": {"pool_max": "ten"}}, None),
            ({"server": {"no_such_option": 1}}, None),
            (None, "server: [unclosed\n"),
        ],
        ids=["bad-value", "unknown-option", "bad-yaml"],
    )
    def test_run_with_bad_config_exits_2(self, tmp_path: Path, overrides: Any, text: str | None) -> None:
        """``run`` with an invalid config exits 2 with "error in config" on stderr and no traceback."""
        path = generate_config(tmp_path / "hs", server_name=SERVER_NAME, port=free_port(), overrides=overrides)
        if text is not None:
            path.write_text(text)
        done = run_cli("run", "--config", str(path), timeout=30)
        assert done.returncode == 2, done.stderr
        assert "error in config" in done.stderr
        assert "Traceback" not in done.stderr + done.stdout

    def test_run_with_missing_config_exits_2(self, tmp_path: Path) -> None:
        """A config path that does not exist is a config error too."""
        done = run_cli("run", "--config", str(tmp_path / "missing.yaml"), timeout=30)
        assert done.returncode == 2 and "error in config" in done.stderr
        assert "Traceback" not in done.stderr


class ShutdownTests:
    def test_sigterm_lets_inflight_requests_finish(self, server_factory: ServerFactory) -> None:
        """SIGTERM during a burst of (deliberately slow, default-Argon2) logins: every one is answered, exit 0."""
        server = server_factory(cheap_argon2=False)
        # At most 5 concurrent logins per user: more would be refused by the lockout reservation.
        users = ["alice", "bob", "carol"]
        for user in users:
            register_user(server.base_url, user, PASSWORD)
        results: list[int | BaseException] = []
        lock = threading.Lock()

        def attempt(user: str) -> None:
            try:
                outcome: int | BaseException = http_json(
                    "POST", server.base_url + LOGIN, login_body(user, PASSWORD)
                )[0]
            except BaseException as e:
                outcome = e
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=attempt, args=(user,)) for user in users for _ in range(5)]
        for thread in threads:
            thread.start()

        def answered() -> int:
            return server.log_text().count(f"POST {LOGIN} ")

        assert wait_for(lambda: answered() >= 1, timeout=30), "no login completed"
        server.terminate()
        before_sigterm = answered()
        for thread in threads:
            thread.join(30)
        assert before_sigterm < len(threads), "every login finished before SIGTERM; the test proved nothing"
        assert results == [200] * len(threads)
        assert server.stop(10) == 0
        assert "Traceback" not in server.log_text()


class LockoutRaceTests:
    def test_concurrent_wrong_passwords_never_exceed_the_lockout_limit(self, homeserver: ServerProcess) -> None:
        """RACE-5/7: 40 concurrent wrong passwords get at most 5 403s, the rest 429; then the account is locked."""
        register_user(homeserver.base_url, "alice", PASSWORD)

        async def burst() -> list[tuple[int, Any]]:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=40)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one() -> tuple[int, Any]:
                    body = login_body("alice", "wrong-password")
                    async with session.post(homeserver.base_url + LOGIN, json=body) as response:
                        return response.status, await response.json(content_type=None)

                return await asyncio.gather(*(one() for _ in range(40)))

        answers = asyncio.run(burst())
        codes = [code for code, _ in answers]
        assert len(codes) == 40
        assert set(codes) <= {403, 429}, codes
        assert 1 <= codes.count(403) <= 5, codes
        for code, body in answers:
            expected = "M_FORBIDDEN" if code == 403 else "M_LIMIT_EXCEEDED"
            assert body["errcode"] == expected
        status, body = http_json("POST", homeserver.base_url + LOGIN, login_body("alice", PASSWORD))
        assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")
        assert body["retry_after_ms"] > 0

    def test_concurrent_right_passwords_up_to_the_limit_all_succeed(self, homeserver: ServerProcess) -> None:
        """max_failed_attempts (5) concurrent correct logins all succeed, and the account stays usable."""
        register_user(homeserver.base_url, "alice", PASSWORD)
        url = homeserver.base_url + LOGIN
        with ThreadPoolExecutor(5) as pool:
            codes = list(pool.map(lambda _: http_json("POST", url, login_body("alice", PASSWORD))[0], range(5)))
        assert codes == [200] * 5
        assert http_json("POST", url, login_body("alice", PASSWORD))[0] == 200


class HttpErrorTests:
    def test_unknown_endpoint_is_404_unrecognized(self, homeserver: ServerProcess) -> None:
        """An unknown path answers 404 M_UNRECOGNIZED."""
        status, body = http_json("GET", homeserver.base_url + "/_matrix/client/v3/no/such/endpoint")
        assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")

    def test_wrong_method_is_405(self, homeserver: ServerProcess) -> None:
        """A known path with the wrong method answers 405 M_UNRECOGNIZED and lists the allowed methods."""
        head = b"DELETE /_matrix/client/v3/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        status, headers, body = raw_exchange(homeserver, head)
        assert (status, body["errcode"]) == (405, "M_UNRECOGNIZED")
        assert "POST" in headers["allow"]

    def test_malformed_json_is_400_not_json(self, homeserver: ServerProcess) -> None:
        """A body that is not JSON answers 400 M_NOT_JSON."""
        for bad in (b"{not json", b"\xff\xfe", b"", b'{"type": "m.login.password"'):
            status, body = http_json("POST", homeserver.base_url + LOGIN, bad)
            assert (status, body["errcode"]) == (400, "M_NOT_JSON"), bad
        # NaN is not JSON either; the server parses it and then rejects the value (M_BAD_JSON).
        status, body = http_json("POST", homeserver.base_url + LOGIN, b'{"a": NaN}')
        assert (status, body["errcode"]) in {(400, "M_NOT_JSON"), (400, "M_BAD_JSON")}

    def test_oversized_declared_body_is_413(self, homeserver: ServerProcess) -> None:
        """A Content-Length above max_request_body_size is refused at once with 413 M_TOO_LARGE."""
        status, headers, body = raw_exchange(homeserver, post_head(LOGIN, f"Content-Length: {MAX_BODY + 1}\r\n"))
        assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
        assert headers["connection"].lower() == "close"

    def test_oversized_chunked_body_is_413(self, homeserver: ServerProcess) -> None:
        """A chunked body growing past max_request_body_size is refused with 413 M_TOO_LARGE."""
        chunk = b"x" * 65536
        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        body_bytes = framed * (MAX_BODY // len(chunk) + 1) + b"0\r\n\r\n"
        status, _, body = raw_exchange(homeserver, post_head(LOGIN, "Transfer-Encoding: chunked\r\n"), body_bytes)
        assert (status, body["errcode"]) == (413, "M_TOO_LARGE")

    def test_overlong_request_line_is_414(self, homeserver: ServerProcess) -> None:
        """A 70,000-character path gets 414 M_TOO_LARGE on the real socket, not a dropped connection (issue 12)."""
        head = b"GET /_matrix/client/v3/rooms/!r:x/state/m.custom/" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        status, headers, body = raw_exchange(homeserver, head)
        assert (status, body["errcode"]) == (414, "M_TOO_LARGE")
        assert headers["connection"].lower() == "close"

    def test_oversized_headers_are_431(self, homeserver: ServerProcess) -> None:
        """Headers over the limit get 431 M_TOO_LARGE with a Matrix body (issue 12)."""
        head = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        status, _, body = raw_exchange(homeserver, head)
        assert (status, body["errcode"]) == (431, "M_TOO_LARGE")

    def test_server_survives_the_errors(self, homeserver: ServerProcess) -> None:
        """After garbage on the socket the server still answers normal requests."""
        port = int(homeserver.base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"\x00\x01 NOT HTTP AT ALL\r\n\r\n")
            sock.recv(65536)
        status, body = http_json("GET", homeserver.base_url + "/_matrix/client/versions")
        assert status == 200 and "versions" in body
