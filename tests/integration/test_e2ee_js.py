"""End-to-end encryption through matrix-js-sdk's Rust crypto (Element's stack) against a real server.

The scenario is ``tests/integration/js/e2ee_scenario.mjs``, run by Node 22 (the ``node`` npm package
puts it in ``node_modules/.bin``; matrix-js-sdk 43 needs it). Alice and bob register, log in and
initialise Rust crypto with an in-memory store; both bootstrap cross-signing (UIA with their
password); alice creates a megolm-encrypted room and invites bob, who joins; alice sends a message
and bob's client decrypts it; alice sends bob an Olm to-device message; alice backs up her room keys
and restores them. The script prints one ``RESULT <json>`` line that this test checks: the exact
plaintext, ciphertext on the wire and in the server's store, cross-signed devices, the to-device
message and the key backup.

The JavaScript dependencies are installed on first use with ``npm ci`` (from the lock file, into the
gitignored ``js/node_modules``, reused while the lock file is unchanged). When npm, the registry or
Node 22 is unavailable the test skips, except under ``CI=true``, where it fails. Every step is bounded:
the install, the script's own overall timeout and the subprocess timeout around it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any, NoReturn

import pytest

from bench.common import ServerProcess

pytestmark = pytest.mark.integration

JS_DIR = Path(__file__).resolve().parent / "js"
SCRIPT = JS_DIR / "e2ee_scenario.mjs"
NODE = JS_DIR / "node_modules" / ".bin" / "node"
STAMP = JS_DIR / "node_modules" / ".sc-installed-lock-sha256"
NPM_CI_TIMEOUT_S = 150.0
SCRIPT_TIMEOUT_MS = 90_000
SCENARIO_TIMEOUT_S = SCRIPT_TIMEOUT_MS / 1000 + 20.0
MIN_NODE_MAJOR = 22
# Endpoints outside E2EE that the script may answer itself while the server lacks them (see the
# script). None any more: the server has GET /pushrules/, so a shimmed answer now fails the test.
TOLERATED_SHIMS: set[str] = set()
SECRET = {"body": "to-device secret ✓", "n": 42}  # as sent by the script
PLAINTEXT = "Top secret — ünïcødé ✓ 🔐 line1\nline2 \"quoted\" <b>not html</b>"


def _unavailable(message: str) -> NoReturn:
    """Skips, or fails under ``CI=true`` (CI machines reach the npm registry)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (required when CI=true)")
    pytest.skip(message)


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((JS_DIR / name).read_bytes())
    return digest.hexdigest()


def _installed(digest: str) -> bool:
    try:
        return NODE.exists() and STAMP.read_text().strip() == digest
    except OSError:
        return False


def _npm_ci(npm: str, digest: str) -> None:
    """``npm ci`` under a file lock (parallel test processes install once); stamps the lock digest."""
    lock_path = Path(tempfile.gettempdir()) / f"sc-e2ee-js-{digest[:16]}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed(digest):
            return
        command = [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"]
        try:
            done = subprocess.run(
                command, cwd=JS_DIR, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            _unavailable(f"npm ci did not finish within {NPM_CI_TIMEOUT_S:.0f}s")
        if done.returncode != 0 or not NODE.exists():
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            _unavailable(f"npm ci failed with {done.returncode}:\n{tail}")
        STAMP.write_text(digest + "\n")


@pytest.fixture(scope="session")
def node22() -> Path:
    """The Node 22 binary of ``js/node_modules``, installing the dependencies first if needed."""
    digest = _lock_digest()
    if not _installed(digest):
        npm = shutil.which("npm")
        if npm is None:
            _unavailable("npm is not installed")
        _npm_ci(npm, digest)
    try:
        version = subprocess.run(
            [str(NODE), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        _unavailable(f"{NODE} does not run: {exc}")
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE_MAJOR:
        _unavailable(f"{NODE} is {version}, matrix-js-sdk needs Node {MIN_NODE_MAJOR}")
    return NODE


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def run_scenario(node: Path, server: ServerProcess, tmp_path: Path, *extra: str) -> dict[str, Any]:
    """Runs the scenario against ``server``; returns its RESULT, failing with its log if it failed.

    The script's stderr (steps and every HTTP exchange, without tokens or bodies) is saved as
    ``js-scenario.log`` next to the server's log and quoted in the failure message.
    """
    plaintext_file = tmp_path / "plaintext.txt"
    plaintext_file.write_text(PLAINTEXT, encoding="utf-8")
    command = [
        str(node), str(SCRIPT),
        "--base-url", server.base_url,
        "--plaintext-file", str(plaintext_file),
        "--timeout-ms", str(SCRIPT_TIMEOUT_MS),
        *extra,
    ]
    log_path = tmp_path / "js-scenario.log"
    try:
        done = subprocess.run(
            command, cwd=JS_DIR, capture_output=True, timeout=SCENARIO_TIMEOUT_S, check=False
        )
        stdout, stderr, code = _text(done.stdout), _text(done.stderr), done.returncode
    except subprocess.TimeoutExpired as exc:  # the child has been killed
        stdout, stderr, code = _text(exc.stdout), _text(exc.stderr), None
    log_path.write_text(stderr, encoding="utf-8")
    log_tail = "\n".join(stderr.splitlines()[-80:])
    results = [line[len("RESULT "):] for line in stdout.splitlines() if line.startswith("RESULT ")]
    if code is None:
        pytest.fail(f"the scenario hung past {SCENARIO_TIMEOUT_S:.0f}s; its log ({log_path}):\n{log_tail}")
    if len(results) != 1:
        pytest.fail(f"the scenario exited {code} without one RESULT line; its log:\n{log_tail}\n{stdout[-2000:]}")
    result: dict[str, Any] = json.loads(results[0])
    if code != 0 or not result.get("ok"):
        pytest.fail(
            f"the scenario failed (exit {code}) in step {result.get('step')!r}: {result.get('error')}\n"
            f"its log ({log_path}):\n{log_tail}"
        )
    unexpected = set(result.get("shimmed", [])) - TOLERATED_SHIMS
    assert not unexpected, f"the script answered unexpected endpoints itself: {unexpected}"
    if result.get("shimmed"):
        warnings.warn(
            f"server lacks endpoints matrix-js-sdk needs; the script answered them: {result['shimmed']}",
            stacklevel=2,
        )
    return result


class JsSdkEncryptedChatTests:
    def test_cross_signed_users_exchange_a_megolm_message(
        self, node22: Path, homeserver_any_db: ServerProcess, tmp_path: Path
    ) -> None:
        """Bob's Rust crypto decrypts alice's megolm message to the exact plaintext; the server holds ciphertext.

        Before that, bootstrapCrossSigning (UIA with the password) leaves each user cross-signing-ready
        with its device signed. That signature goes up through /keys/signatures/upload; the client
        only sees it once the server reports its own user in device_lists.changed and it re-queries.
        After it, alice's Olm to-device message reaches bob exactly once, and her room key survives a
        round trip through server-side key backup (a trusted version, one session, restored).
        """
        result = run_scenario(node22, homeserver_any_db, tmp_path)

        for user in ("alice", "bob"):
            status = result[f"cross_signing_{user}"]
            assert status["ready"] is True, status
            assert status["public_keys_on_device"] is True, status
            assert status["private_keys_cached"] == {
                "masterKey": True, "selfSigningKey": True, "userSigningKey": True
            }, status
            assert status["own_device_cross_signed"] is True, status

        assert result["encrypted_alice"] is True and result["encrypted_bob"] is True
        assert result["decrypted_body"] == PLAINTEXT
        assert result["bob_saw_encrypted"] is True
        assert result["bob_saw_wire_type"] == "m.room.encrypted"
        assert result["sender_device_known"] is True
        # An Olm-encrypted to-device message of a custom type, delivered once and decrypted.
        assert result["to_device_wire_type"] == "m.room.encrypted"
        assert result["to_device_count"] == 1
        assert result["to_device_encrypted"] is True
        assert result["to_device_content"] == SECRET
        assert result["to_device_sender"] == "@alice:it.test"

        # Key backup: the signed auth_data comes back intact (trusted), the session is stored and restorable.
        backup = result["backup"]
        assert backup["version"] == backup["server_version"] == "1", backup
        assert backup["algorithm"] == "m.megolm_backup.v1.curve25519-aes-sha2", backup
        assert backup["trusted"] is True and backup["matches_decryption_key"] is True, backup
        assert backup["count"] == 1 and backup["room_sessions"] == 1 and backup["etag_is_string"], backup
        assert backup["restored_total"] == 1, backup

        # Read back raw from the server: ciphertext only.
        assert result["stored_type"] == "m.room.encrypted"
        assert result["stored_algorithm"] == "m.megolm.v1.aes-sha2"
        assert result["stored_contains_plaintext"] is False
