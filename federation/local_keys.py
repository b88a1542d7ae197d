"""Our own signing keys: the current key, the keys we retired, and rotation.

Storage (docs/adr/0013-server-keys.md):

* ``server.signing_key_path`` (``signing.key``) holds the *current* signing key only, one line
  ``ed25519 <version> <base64 seed>``, mode 0600. Everything that signs (events in
  ``homeserver/app/room_wiring.py``, ``X-Matrix`` requests, the key servlets) loads it at start, so after a
  rotation the new key is used once the server restarts.
* ``<signing_key_path>.old.json`` (:func:`old_keys_path`) holds the retired keys' *public* halves, in
  the wire form of ``old_verify_keys``: ``{"ed25519:a_1": {"key": "<base64>", "expired_ts": 1700000000000}}``.
  The retired private keys are discarded: we never sign with them again, and keeping them would only
  widen what a stolen disk gives away.

:func:`rotate_signing_key` writes the old-keys file first and then replaces the key file (each
atomically, by rename), so a crash in between leaves the old key both current and listed as old;
:func:`load_old_verify_keys` drops an old entry whose ID is the current key's, so that state is harmless.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sc_proto.crypto.keys import (
    SigningKey,
    VerifyKey,
    decode_base64,
    decode_verify_key_bytes,
    encode_verify_key_base64,
    generate_signing_key,
    get_key_id,
    get_verify_key,
    read_signing_keys,
    validate_key_version,
    write_signing_keys,
)
from sc_proto.errors import SignatureError
from sc_proto.federation.keys import build_server_keys_response

OLD_KEYS_SUFFIX = ".old.json"


class KeyFileError(Exception):
    """A key file is missing, unreadable or malformed (the message names the file, never key material)."""


def old_keys_path(signing_key_path: str) -> str:
    """Where the retired keys of ``signing_key_path`` are kept."""
    return signing_key_path + OLD_KEYS_SUFFIX


@dataclass(frozen=True)
class LocalKeys:
    """Our server name, current signing key and retired verify keys.

    Attributes:
        server_name: our server name.
        signing_key: the key we sign with now.
        old_verify_keys: key ID -> (public key, expired_ts in ms) of retired keys.
    """

    server_name: str
    signing_key: SigningKey
    old_verify_keys: Mapping[str, tuple[VerifyKey, int]] = field(default_factory=dict)

    @property
    def key_id(self) -> str:
        """The current key's ID."""
        return get_key_id(self.signing_key)

    def verify_key_at(self, key_id: str, at_ts: int) -> VerifyKey | None:
        """Our key ``key_id`` if it was valid at ``at_ts``: the current key always, an old one before it expired."""
        if key_id == self.key_id:
            return get_verify_key(self.signing_key)
        old = self.old_verify_keys.get(key_id)
        if old is not None and at_ts < old[1]:
            return old[0]
        return None

    def server_keys_response(self, now_ms: int, validity_ms: int) -> dict[str, Any]:
        """Our signed ``/_matrix/key/v2/server`` response, valid for ``validity_ms`` from ``now_ms``."""
        return build_server_keys_response(
            self.server_name, [self.signing_key], self.old_verify_keys, now_ms + validity_ms
        )


def load_old_verify_keys(path: str, *, current_key_id: str | None = None) -> dict[str, tuple[VerifyKey, int]]:
    """Reads an old-keys file; a missing file means no retired keys.

    Raises:
        KeyFileError: the file is unreadable or malformed.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise KeyFileError(f"cannot read old signing keys {path}: {type(e).__name__}") from None
    if not isinstance(data, dict):
        raise KeyFileError(f"old signing keys {path}: expected a JSON object")
    keys: dict[str, tuple[VerifyKey, int]] = {}
    for key_id, entry in data.items():
        try:
            if not isinstance(entry, dict):
                raise SignatureError("entry is not an object")
            expired_ts = entry.get("expired_ts")
            if isinstance(expired_ts, bool) or not isinstance(expired_ts, int) or expired_ts < 0:
                raise SignatureError("bad expired_ts")
            verify_key = decode_verify_key_bytes(key_id, decode_base64(entry.get("key")))
        except SignatureError as e:
            raise KeyFileError(f"old signing keys {path}: {key_id!r}: {e.message}") from None
        if key_id != current_key_id:
            keys[key_id] = (verify_key, expired_ts)
    return keys


def load_local_keys(server_name: str, signing_key: SigningKey, signing_key_path: str) -> LocalKeys:
    """Our keys: ``signing_key`` (as loaded by the composition root) and the old-keys file next to it."""
    old = load_old_verify_keys(old_keys_path(signing_key_path), current_key_id=get_key_id(signing_key))
    return LocalKeys(server_name, signing_key, old)


def _write_atomically(path: str, text: str, mode: int) -> None:
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _new_version(taken: set[str]) -> str:
    alphabet = string.ascii_letters + string.digits
    while True:
        version = "a_" + "".join(secrets.choice(alphabet) for _ in range(6))
        if f"ed25519:{version}" not in taken:
            return version


def rotate_signing_key(signing_key_path: str, now_ms: int, *, version: str | None = None) -> tuple[str, str]:
    """Replaces the signing key with a new one; the old key's public half is kept with ``expired_ts=now_ms``.

    Args:
        signing_key_path: the signing key file (must exist).
        now_ms: the retirement time of the current key.
        version: the new key's version (random ``a_XXXXXX`` when None).

    Returns:
        (old key ID, new key ID).

    Raises:
        KeyFileError: the key file is missing or malformed, or ``version`` is invalid or already used.
    """
    try:
        with open(signing_key_path, encoding="utf-8") as f:
            current = read_signing_keys(f.read())
    except OSError as e:
        raise KeyFileError(
            f"cannot read signing key {signing_key_path}: {e.strerror or type(e).__name__}"
        ) from None
    except SignatureError as e:
        raise KeyFileError(f"signing key {signing_key_path}: {e.message}") from None
    if not current:
        raise KeyFileError(f"no signing key in {signing_key_path}")
    path = old_keys_path(signing_key_path)
    old = load_old_verify_keys(path)
    taken = set(old) | {get_key_id(k) for k in current}
    if version is None:
        version = _new_version(taken)
    try:
        validate_key_version(version)
    except SignatureError:
        raise KeyFileError("the key version must match [a-zA-Z0-9_]+") from None
    if f"ed25519:{version}" in taken:
        raise KeyFileError(f"key version {version} was used before")
    for key in current:  # every key in the file retires (the file may have held several)
        old[get_key_id(key)] = (get_verify_key(key), now_ms)
    new_key = generate_signing_key(version)
    entries = {
        key_id: {"key": encode_verify_key_base64(verify_key), "expired_ts": expired_ts}
        for key_id, (verify_key, expired_ts) in sorted(old.items())
    }
    _write_atomically(path, json.dumps(entries, indent=2, sort_keys=True) + "\n", 0o644)
    _write_atomically(signing_key_path, write_signing_keys([new_key]), 0o600)
    return get_key_id(current[0]), get_key_id(new_key)
