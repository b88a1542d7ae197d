"""Signing keys, verify keys, key IDs and unpadded Base64.

A thin typed layer over signedjson and PyNaCl. Keys are PyNaCl Ed25519 keys carrying ``alg`` and
``version`` attributes (the :mod:`signedjson.types` protocols), so they work with signedjson too.

Key IDs have the form ``ed25519:VERSION`` where ``VERSION`` matches ``[a-zA-Z0-9_]+``
(server-server API, "Publishing Keys"). Signing-key files hold one key per line in the form
``ed25519 <version> <unpadded base64 seed>``.

Decoding errors raise :class:`~sc_proto.errors.SignatureError`; messages never contain key
material.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

import nacl.exceptions
import nacl.signing
from signedjson.types import SigningKey, VerifyKey

from sc_proto.errors import SignatureError

__all__ = [
    "ED25519",
    "SigningKey",
    "VerifyKey",
    "decode_base64",
    "decode_signing_key_base64",
    "decode_verify_key_base64",
    "decode_verify_key_bytes",
    "encode_base64",
    "encode_signing_key_base64",
    "encode_verify_key_base64",
    "generate_signing_key",
    "get_key_id",
    "get_verify_key",
    "is_signing_algorithm_supported",
    "parse_key_id",
    "read_signing_keys",
    "signing_key_from_seed",
    "validate_key_version",
    "write_signing_keys",
]

ED25519 = "ed25519"
"""The only signing algorithm Matrix defines."""

_KEY_VERSION_RE = re.compile(r"[a-zA-Z0-9_]+")
_STD_B64_RE = re.compile(r"[A-Za-z0-9+/]*")
_URL_B64_RE = re.compile(r"[A-Za-z0-9_-]*")
_SEED_LENGTH = 32


# --- unpadded base64 (appendices, "Unpadded Base64") ------------------------------------------


def encode_base64(data: bytes, *, urlsafe: bool = False) -> str:
    """Encodes bytes as unpadded Base64 (standard alphabet, or URL-safe when ``urlsafe``)."""
    encoded = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return encoded.rstrip(b"=").decode("ascii")


def decode_base64(text: object, *, urlsafe: bool = False) -> bytes:
    """Decodes (un)padded Base64, standard alphabet or URL-safe when ``urlsafe``.

    Padding is accepted but not required, as the appendices recommend.

    Raises:
        SignatureError: ``text`` is not a string or is not valid Base64.
    """
    if not isinstance(text, str):
        raise SignatureError("base64 value must be a string")
    stripped = text.rstrip("=")
    pattern = _URL_B64_RE if urlsafe else _STD_B64_RE
    if len(text) - len(stripped) > 2 or not pattern.fullmatch(stripped) or len(stripped) % 4 == 1:
        raise SignatureError("invalid base64")
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        if urlsafe:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as e:  # pragma: no cover - the regex check catches these
        raise SignatureError("invalid base64") from e


# --- key IDs ------------------------------------------------------------------------------------


def validate_key_version(version: object) -> str:
    """Checks a key version (the part after ``ed25519:``) against ``[a-zA-Z0-9_]+``.

    Returns:
        The version.

    Raises:
        SignatureError: the version is not a string or has other characters.
    """
    if not isinstance(version, str) or not _KEY_VERSION_RE.fullmatch(version):
        raise SignatureError("invalid key version")
    return version


def parse_key_id(key_id: object) -> tuple[str, str]:
    """Splits a key ID ``ALGORITHM:VERSION`` into its two parts.

    Only the shape is checked; the algorithm may be one sc_proto does not support (callers skip
    those, per "Checking for a Signature").

    Raises:
        SignatureError: the key ID is not a string of that shape.
    """
    if not isinstance(key_id, str) or ":" not in key_id:
        raise SignatureError("invalid key ID")
    alg, _, version = key_id.partition(":")
    if not alg:
        raise SignatureError("invalid key ID")
    validate_key_version(version)
    return alg, version


def is_signing_algorithm_supported(key_id: str) -> bool:
    """Whether ``key_id`` names an algorithm sc_proto can verify (only ``ed25519``)."""
    return isinstance(key_id, str) and key_id.startswith(ED25519 + ":")


def get_key_id(key: SigningKey | VerifyKey) -> str:
    """Returns ``"ALG:VERSION"`` for a key carrying ``alg`` and ``version`` attributes.

    Raises:
        SignatureError: the key lacks ``alg``/``version`` (e.g. a bare PyNaCl key).
    """
    alg = getattr(key, "alg", None)
    version = getattr(key, "version", None)
    if not isinstance(alg, str) or not isinstance(version, str):
        raise SignatureError("key has no algorithm/version; pass key_id explicitly")
    return f"{alg}:{version}"


# --- signing keys -------------------------------------------------------------------------------


def _tag(key: nacl.signing.SigningKey, version: str) -> SigningKey:
    # signedjson's SigningKey is a Protocol over a PyNaCl key with two extra attributes.
    key.version = version  # type: ignore[attr-defined]  # signedjson's documented convention
    key.alg = ED25519  # type: ignore[attr-defined]  # signedjson's documented convention
    return key  # type: ignore[return-value]  # now satisfies the SigningKey protocol


def generate_signing_key(version: str) -> SigningKey:
    """Generates a new random Ed25519 signing key with the given key version.

    Raises:
        SignatureError: ``version`` is not a valid key version.
    """
    validate_key_version(version)
    return _tag(nacl.signing.SigningKey.generate(), version)


def signing_key_from_seed(seed: bytes, version: str) -> SigningKey:
    """Builds a signing key from its raw 32-byte Ed25519 seed.

    Raises:
        SignatureError: the seed is not 32 bytes or the version is invalid.
    """
    validate_key_version(version)
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != _SEED_LENGTH:
        raise SignatureError("signing key seed must be 32 bytes")
    return _tag(nacl.signing.SigningKey(bytes(seed)), version)


def decode_signing_key_base64(algorithm: str, version: str, key_base64: str) -> SigningKey:
    """Decodes a signing key from its algorithm, version and unpadded Base64 seed.

    Raises:
        SignatureError: unsupported algorithm, bad version, or bad key data.
    """
    if algorithm != ED25519:
        raise SignatureError("unsupported signing algorithm")
    return signing_key_from_seed(decode_base64(key_base64), version)


def encode_signing_key_base64(key: SigningKey) -> str:
    """Encodes a signing key's seed as unpadded Base64 (secret: never log it)."""
    return encode_base64(key.encode())


def get_verify_key(signing_key: SigningKey) -> VerifyKey:
    """Returns the verify (public) key of ``signing_key``, with the same ``alg``/``version``."""
    verify_key = signing_key.verify_key
    verify_key.version = signing_key.version  # type: ignore[attr-defined]  # signedjson convention
    verify_key.alg = signing_key.alg  # type: ignore[attr-defined]  # signedjson convention
    return verify_key  # type: ignore[return-value]  # now satisfies the VerifyKey protocol


def encode_verify_key_base64(key: VerifyKey) -> str:
    """Encodes a verify key as unpadded Base64 (the form used in ``verify_keys``)."""
    return encode_base64(key.encode())


def decode_verify_key_bytes(key_id: str, key_bytes: bytes) -> VerifyKey:
    """Builds a verify key from a key ID and the raw 32 public-key bytes.

    Raises:
        SignatureError: malformed or unsupported key ID, or not 32 bytes.
    """
    alg, version = parse_key_id(key_id)
    if alg != ED25519:
        raise SignatureError("unsupported signing algorithm")
    if not isinstance(key_bytes, (bytes, bytearray)) or len(key_bytes) != _SEED_LENGTH:
        raise SignatureError("verify key must be 32 bytes")
    try:
        key = nacl.signing.VerifyKey(bytes(key_bytes))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as e:  # pragma: no cover
        raise SignatureError("invalid verify key") from e
    key.version = version  # type: ignore[attr-defined]  # signedjson convention
    key.alg = alg  # type: ignore[attr-defined]  # signedjson convention
    return key  # type: ignore[return-value]  # now satisfies the VerifyKey protocol


def decode_verify_key_base64(algorithm: str, version: str, key_base64: str) -> VerifyKey:
    """Decodes a verify key from its algorithm, version and unpadded Base64 public key.

    Raises:
        SignatureError: unsupported algorithm, bad version, or bad key data.
    """
    return decode_verify_key_bytes(f"{algorithm}:{version}", decode_base64(key_base64))


# --- signing-key files --------------------------------------------------------------------------


def read_signing_keys(text: str | Iterable[str]) -> list[SigningKey]:
    """Parses signing keys in the ``ed25519 <version> <base64 seed>`` file format.

    Blank lines and lines starting with ``#`` are skipped.

    Args:
        text: the file's text, or an iterable of its lines.

    Raises:
        SignatureError: a line is malformed (the message names the line number, never the key).
    """
    lines = text.splitlines() if isinstance(text, str) else list(text)
    keys: list[SigningKey] = []
    for number, line in enumerate(lines, start=1):
        if not isinstance(line, str):
            raise SignatureError(f"signing key line {number} is not text")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        if len(parts) != 3:
            raise SignatureError(f"signing key line {number}: expected 'ed25519 <version> <key>'")
        try:
            keys.append(decode_signing_key_base64(parts[0], parts[1], parts[2]))
        except SignatureError as e:
            raise SignatureError(f"signing key line {number}: {e.message}") from e
    return keys


def write_signing_keys(keys: Iterable[SigningKey]) -> str:
    """Formats signing keys in the ``ed25519 <version> <base64 seed>`` file format.

    The result is secret material: write it with restrictive permissions and never log it.
    """
    return "".join(f"{key.alg} {key.version} {encode_signing_key_base64(key)}\n" for key in keys)
