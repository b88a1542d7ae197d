"""Our key lifecycle: the old-keys file, rotate_signing_key, the rotate-signing-key CLI, what is published."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from federation.key_servlets import KeyServlets
from federation.key_store import ServerKeyStore
from federation.keyring import Keyring
from federation.local_keys import (
    KeyFileError,
    load_local_keys,
    load_old_verify_keys,
    old_keys_path,
    rotate_signing_key,
)
from homeserver.app.main import main
from homeserver.app.room_wiring import load_or_create_signing_key
from homeserver.config import load_config
from sc_proto.crypto.keys import (
    encode_signing_key_base64,
    generate_signing_key,
    get_key_id,
    get_verify_key,
    write_signing_keys,
)
from sc_proto.federation.keys import parse_server_keys
from tests.federation.keys.fakes import DAY_MS, NOW_MS, FakeFederationHttp, FakeRouter, make_clock
from tests.storage.harness import TestDatabase, get_success


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "signing.key"
    path.write_text(write_signing_keys([generate_signing_key("a_1")]), encoding="utf-8")
    return path


class RotateTests:
    def test_rotation_moves_old_key(self, key_path: Path) -> None:
        """The key file gets a new key only; the old public key is kept with expired_ts=now."""
        before = load_or_create_signing_key(str(key_path))
        old_id, new_id = rotate_signing_key(str(key_path), NOW_MS, version="a_2")
        assert (old_id, new_id) == ("ed25519:a_1", "ed25519:a_2")
        after = load_or_create_signing_key(str(key_path))
        assert get_key_id(after) == "ed25519:a_2"  # the room event signing key is the new one
        assert len(key_path.read_text(encoding="utf-8").splitlines()) == 1
        old = load_old_verify_keys(old_keys_path(str(key_path)))
        assert old == {"ed25519:a_1": (get_verify_key(before), NOW_MS)}
        assert encode_signing_key_base64(before) not in Path(old_keys_path(str(key_path))).read_text()
        assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600

    def test_rotating_twice_keeps_both_old_keys(self, key_path: Path) -> None:
        """Each rotation adds to old_verify_keys; the versions never repeat."""
        rotate_signing_key(str(key_path), NOW_MS)
        _, newest = rotate_signing_key(str(key_path), NOW_MS + 1)
        old = load_old_verify_keys(old_keys_path(str(key_path)))
        assert len(old) == 2 and newest not in old
        assert sorted(ts for _k, ts in old.values()) == [NOW_MS, NOW_MS + 1]

    def test_reused_or_bad_version_refused(self, key_path: Path) -> None:
        """A version used before (current or old), or malformed, is refused and nothing changes."""
        text = key_path.read_text()
        for version in ["a_1", "bad-version", ""]:
            with pytest.raises(KeyFileError):
                rotate_signing_key(str(key_path), NOW_MS, version=version)
        assert key_path.read_text() == text
        rotate_signing_key(str(key_path), NOW_MS, version="a_2")
        with pytest.raises(KeyFileError):
            rotate_signing_key(str(key_path), NOW_MS, version="a_1")

    def test_missing_or_bad_key_file(self, tmp_path: Path) -> None:
        """No key file, an empty one, or a malformed one: KeyFileError without key material."""
        with pytest.raises(KeyFileError):
            rotate_signing_key(str(tmp_path / "nope.key"), NOW_MS)
        empty = tmp_path / "empty.key"
        empty.write_text("# nothing\n")
        with pytest.raises(KeyFileError):
            rotate_signing_key(str(empty), NOW_MS)
        bad = tmp_path / "bad.key"
        bad.write_text("ed25519 a_1 c2VjcmV0c2VjcmV0\n")
        with pytest.raises(KeyFileError) as e:
            rotate_signing_key(str(bad), NOW_MS)
        assert "c2VjcmV0" not in str(e.value)

    def test_crash_between_writes_is_harmless(self, key_path: Path) -> None:
        """An old-keys file listing the current key (crash after the first write) is ignored for that key."""
        current = load_or_create_signing_key(str(key_path))
        Path(old_keys_path(str(key_path))).write_text(
            json.dumps({"ed25519:a_1": {"key": "A" * 43, "expired_ts": NOW_MS}})
        )
        local = load_local_keys("us.test", current, str(key_path))
        assert local.old_verify_keys == {}
        local.server_keys_response(NOW_MS, DAY_MS)  # no "both current and old" error

    @pytest.mark.parametrize(
        "text",
        ["not json", "[]", '{"ed25519:a": 5}', '{"ed25519:a": {"key": "AAAA", "expired_ts": 1}}',
         '{"ed25519:a": {"key": "' + "A" * 43 + '", "expired_ts": "x"}}', '{"bad": {"key": "x", "expired_ts": 1}}'],
    )  # fmt: skip
    def test_malformed_old_keys_file(self, key_path: Path, text: str) -> None:
        """A malformed old-keys file is a KeyFileError (at start and at rotation), never silently ignored."""
        Path(old_keys_path(str(key_path))).write_text(text)
        with pytest.raises(KeyFileError):
            load_old_verify_keys(old_keys_path(str(key_path)))
        with pytest.raises(KeyFileError):
            rotate_signing_key(str(key_path), NOW_MS)


class RotateCliTests:
    def _config(self, tmp_path: Path) -> Path:
        code, out, _ = run_cli("generate-config", "--server-name", "us.test", "--data-dir", str(tmp_path))
        assert code == 0
        return Path(out.strip())

    def test_rotate_then_server_publishes_old_key(
        self, tmp_path: Path, prepared_database: TestDatabase
    ) -> None:
        """rotate-signing-key -c CONFIG, then /_matrix/key/v2/server lists the old key and signs with the new."""
        config_path = self._config(tmp_path)
        config = load_config(str(config_path))
        key_file = config.server.signing_key_path
        old_key = load_or_create_signing_key(key_file)
        code, out, err = run_cli("rotate-signing-key", "-c", str(config_path))
        assert code == 0, err
        assert "restart" in out
        assert encode_signing_key_base64(old_key) not in out + err

        # What the server does at its next start:
        new_key = load_or_create_signing_key(key_file)
        assert get_key_id(new_key) != get_key_id(old_key)
        local = load_local_keys("us.test", new_key, key_file)
        _reactor, clock = make_clock()
        keyring = Keyring(
            local=local,
            store=ServerKeyStore(prepared_database.make_pool()),
            http=FakeFederationHttp(),
            clock=clock,
        )
        router = FakeRouter()
        KeyServlets(keyring, local, clock, DAY_MS).register(router)
        status, body = get_success(router.dispatch("GET", "/_matrix/key/v2/server"))
        assert status == 200
        keys = parse_server_keys(body, expected_server_name="us.test", received_ts=NOW_MS)
        old = keys.keys[get_key_id(old_key)]
        assert old.verify_key == get_verify_key(old_key) and old.expired_ts is not None
        assert set(body["signatures"]["us.test"]) == {get_key_id(new_key)}
        assert list(body["verify_keys"]) == [get_key_id(new_key)]

    def test_rotate_with_version_and_errors(self, tmp_path: Path) -> None:
        """--key-version is used; a reused one exits 1 with a message; a bad config exits 2."""
        config_path = self._config(tmp_path)
        code, out, _ = run_cli("rotate-signing-key", "--config", str(config_path), "--key-version", "v2")
        assert code == 0 and "ed25519:v2" in out
        code, _, err = run_cli("rotate-signing-key", "-c", str(config_path), "--key-version", "v2")
        assert code == 1 and "used before" in err
        code, _, _ = run_cli("rotate-signing-key", "-c", str(tmp_path / "missing.yaml"))
        assert code == 2
        code, _, _ = run_cli("rotate-signing-key")
        assert code == 2
