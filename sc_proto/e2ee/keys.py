"""End-to-end encryption key structures and their signature checks (spec "End-to-End Encryption").

The server stores and forwards public keys; it never decrypts anything. What it must check is the
*shape* of what it stores and, for device identity keys, that the device signed them:

* **Device keys** (``/keys/upload`` ``device_keys``): ``user_id``, ``device_id``, ``algorithms``
  (strings), ``keys`` (``"<algorithm>:<device_id>" -> key``) and ``signatures``. The object must
  carry a signature by its own ``ed25519:<device_id>`` key (appendices, "Signing JSON").
* **One-time and fallback keys**: ``"<algorithm>:<key_id>" -> key``, where a key is a string or a
  signed key object (``{"key": ..., "signatures": ...}``, fallback ones with ``fallback: true``).
  Their signatures are checked by the clients that claim them, not here.

Every parser raises :class:`InvalidKeysError` (400 ``M_BAD_JSON`` by default) on bad input and never
lets ``KeyError``/``TypeError``/``ValueError`` escape. Size caps are ours (NOTSPEC: the spec sets
none); they bound what one device can make the server store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sc_proto.crypto.keys import VerifyKey, decode_verify_key_base64
from sc_proto.crypto.signing import verify_json
from sc_proto.errors import CanonicalJSONError, Codes, RemoteProtocolError, SignatureError
from sc_proto.json import encode_canonical_json

__all__ = [
    "ED25519",
    "MAX_ALGORITHMS",
    "MAX_IDENTIFIER_LENGTH",
    "MAX_KEYS_PER_UPLOAD",
    "MAX_KEY_OBJECT_BYTES",
    "DeviceKeys",
    "InvalidKeysError",
    "OneTimeKey",
    "canonical_key_json",
    "parse_device_keys",
    "parse_fallback_keys",
    "parse_one_time_keys",
    "split_key_id",
    "verify_device_keys",
    "verify_signed_by",
]

ED25519 = "ed25519"
"""The signing-key algorithm of device keys and cross-signing keys."""

MAX_ALGORITHMS = 64
"""Most entries in ``algorithms`` or ``keys`` of one device (NOTSPEC: the spec sets no limit)."""

MAX_IDENTIFIER_LENGTH = 255
"""Longest algorithm name, key ID or device ID accepted, in characters (NOTSPEC: bounds storage)."""

MAX_KEYS_PER_UPLOAD = 1000
"""Most one-time keys in one upload (NOTSPEC: clients upload ~50 at a time)."""

MAX_KEY_OBJECT_BYTES = 16 * 1024
"""Largest canonical JSON of one device-keys object or one key object (NOTSPEC)."""


class InvalidKeysError(RemoteProtocolError):
    """Uploaded key material is malformed or its signature does not verify (400; 413 with
    ``M_TOO_LARGE`` when over a size cap)."""

    def __init__(self, message: str, errcode: Codes = Codes.BAD_JSON) -> None:
        super().__init__(message, errcode, 413 if errcode is Codes.TOO_LARGE else 400)


@dataclass(frozen=True)
class DeviceKeys:
    """A parsed, checked device-keys object.

    Attributes:
        user_id: the owner.
        device_id: the device.
        algorithms: the encryption algorithms the device supports.
        keys: ``"<algorithm>:<device_id>" -> key``.
        ed25519_key: the device's Ed25519 public key (unpadded Base64).
        raw: the object as uploaded, without ``unsigned`` (what ``/keys/query`` returns).
    """

    user_id: str
    device_id: str
    algorithms: tuple[str, ...]
    keys: Mapping[str, str]
    ed25519_key: str
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class OneTimeKey:
    """One one-time or fallback key.

    Attributes:
        algorithm: e.g. ``signed_curve25519``.
        key_id: the part after the colon.
        value: the key: a string or a key object.
    """

    algorithm: str
    key_id: str
    value: str | Mapping[str, Any]

    @property
    def full_id(self) -> str:
        """``<algorithm>:<key_id>``, the key's name in requests and responses."""
        return f"{self.algorithm}:{self.key_id}"


def _is_identifier(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_IDENTIFIER_LENGTH and "\x00" not in value


def split_key_id(full_id: object, what: str = "key ID") -> tuple[str, str]:
    """Splits ``<algorithm>:<key_id>`` at the first colon.

    Raises:
        InvalidKeysError: not a string of that shape, an empty part, or too long.
    """
    if not isinstance(full_id, str) or len(full_id) > 2 * MAX_IDENTIFIER_LENGTH + 1:
        raise InvalidKeysError(f"{what} must be a string '<algorithm>:<id>'")
    algorithm, colon, key_id = full_id.partition(":")
    if not colon or not _is_identifier(algorithm) or not _is_identifier(key_id):
        raise InvalidKeysError(f"{what} must look like '<algorithm>:<id>': {full_id[:80]!r}")
    return algorithm, key_id


def canonical_key_json(value: object) -> bytes:
    """The canonical JSON of a key (string or object): how stored keys are compared.

    Raises:
        InvalidKeysError: the value cannot be encoded as canonical JSON (floats, huge integers).
    """
    try:
        return encode_canonical_json(value)
    except CanonicalJSONError as e:
        raise InvalidKeysError(f"key is not valid canonical JSON: {e.message}") from None


def _check_size(value: object, what: str) -> None:
    if len(canonical_key_json(value)) > MAX_KEY_OBJECT_BYTES:
        raise InvalidKeysError(f"{what} is larger than {MAX_KEY_OBJECT_BYTES} bytes", Codes.TOO_LARGE)


def _require_str_map(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidKeysError(f"{what} must be an object")
    if len(value) > MAX_ALGORITHMS:
        raise InvalidKeysError(f"{what} has more than {MAX_ALGORITHMS} entries")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidKeysError(f"{what} must map strings to strings")
        out[k] = v
    return out


def parse_device_keys(obj: object) -> DeviceKeys:
    """Checks the shape of a device-keys object (not its signature: see :func:`verify_device_keys`).

    Raises:
        InvalidKeysError: a required field is missing or has the wrong type, ``keys`` names another
            device, there is no ``ed25519:<device_id>`` key, or the object is too large.
    """
    if not isinstance(obj, Mapping):
        raise InvalidKeysError("device_keys must be an object")
    user_id, device_id = obj.get("user_id"), obj.get("device_id")
    if not isinstance(user_id, str) or not user_id:
        raise InvalidKeysError("device_keys.user_id must be a string")
    if not _is_identifier(device_id):
        raise InvalidKeysError("device_keys.device_id must be a non-empty string")
    assert isinstance(device_id, str)
    algorithms = obj.get("algorithms")
    if not isinstance(algorithms, list) or not all(_is_identifier(a) for a in algorithms):
        raise InvalidKeysError("device_keys.algorithms must be a list of non-empty strings")
    if len(algorithms) > MAX_ALGORITHMS:
        raise InvalidKeysError(f"device_keys.algorithms has more than {MAX_ALGORITHMS} entries")
    keys = _require_str_map(obj.get("keys"), "device_keys.keys")
    for full_id in keys:
        _, key_device = split_key_id(full_id, "device_keys.keys key ID")
        if key_device != device_id:
            raise InvalidKeysError(f"device_keys.keys names another device: {full_id[:80]!r}")
    ed25519_key = keys.get(f"{ED25519}:{device_id}")
    if ed25519_key is None:
        raise InvalidKeysError(f"device_keys.keys has no {ED25519}:{device_id} key")
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping) or not all(isinstance(v, Mapping) for v in signatures.values()):
        raise InvalidKeysError("device_keys.signatures must be an object of objects")
    raw = {k: v for k, v in obj.items() if k != "unsigned"}
    _check_size(raw, "device_keys")
    return DeviceKeys(
        user_id=user_id,
        device_id=device_id,
        algorithms=tuple(str(a) for a in algorithms),
        keys=keys,
        ed25519_key=ed25519_key,
        raw=raw,
    )


def _verify_key(public_key_b64: str, what: str) -> VerifyKey:
    try:
        # The version is only a label here; signatures are looked up by the explicit key ID.
        return decode_verify_key_base64(ED25519, "key", public_key_b64)
    except SignatureError:
        raise InvalidKeysError(f"{what} is not a valid Ed25519 public key") from None


def verify_signed_by(obj: Mapping[str, Any], user_id: str, key_id: str, public_key_b64: str) -> None:
    """Checks that ``obj`` carries a valid signature ``signatures[user_id][key_id]`` by the Ed25519
    key ``public_key_b64`` (the shared step of device-key and cross-signing checks).

    Raises:
        InvalidKeysError: the key is malformed, or the signature is missing or does not verify.
    """
    verify_key = _verify_key(public_key_b64, key_id)
    try:
        verify_json(obj, user_id, verify_key, key_id=key_id)
    except SignatureError as e:
        raise InvalidKeysError(f"invalid signature by {key_id[:80]}: {e.message}", Codes.INVALID_PARAM) from None


def verify_device_keys(keys: DeviceKeys) -> None:
    """Checks that the device signed its keys with its own ``ed25519:<device_id>`` key.

    Raises:
        InvalidKeysError: 400 ``M_INVALID_PARAM`` when the signature is missing or does not verify.
    """
    verify_signed_by(keys.raw, keys.user_id, f"{ED25519}:{keys.device_id}", keys.ed25519_key)


def _parse_key_value(full_id: str, value: object) -> str | Mapping[str, Any]:
    if isinstance(value, str):
        if not value:
            raise InvalidKeysError(f"key {full_id[:80]!r} is empty")
        return value
    if not isinstance(value, Mapping):
        raise InvalidKeysError(f"key {full_id[:80]!r} must be a string or an object")
    if not isinstance(value.get("key"), str) or not value["key"]:
        raise InvalidKeysError(f"key {full_id[:80]!r} has no 'key' string")
    signatures = value.get("signatures")
    if signatures is not None and (
        not isinstance(signatures, Mapping) or not all(isinstance(v, Mapping) for v in signatures.values())
    ):
        raise InvalidKeysError(f"key {full_id[:80]!r} has malformed signatures")
    if "fallback" in value and not isinstance(value["fallback"], bool):
        raise InvalidKeysError(f"key {full_id[:80]!r}: 'fallback' must be a boolean")
    _check_size(value, f"key {full_id[:80]!r}")
    return dict(value)


def parse_one_time_keys(obj: object, what: str = "one_time_keys") -> list[OneTimeKey]:
    """Parses a ``one_time_keys`` map.

    Raises:
        InvalidKeysError: not an object, a malformed key ID or key, or too many keys.
    """
    if not isinstance(obj, Mapping):
        raise InvalidKeysError(f"{what} must be an object")
    if len(obj) > MAX_KEYS_PER_UPLOAD:
        raise InvalidKeysError(f"{what} has more than {MAX_KEYS_PER_UPLOAD} keys", Codes.TOO_LARGE)
    parsed: list[OneTimeKey] = []
    for full_id, value in obj.items():
        algorithm, key_id = split_key_id(full_id, f"{what} key ID")
        parsed.append(OneTimeKey(algorithm, key_id, _parse_key_value(full_id, value)))
    return parsed


def parse_fallback_keys(obj: object) -> list[OneTimeKey]:
    """Parses a ``fallback_keys`` map: at most one key per algorithm.

    Raises:
        InvalidKeysError: as :func:`parse_one_time_keys`, or two keys of one algorithm.
    """
    keys = parse_one_time_keys(obj, "fallback_keys")
    algorithms = [k.algorithm for k in keys]
    if len(set(algorithms)) != len(algorithms):
        raise InvalidKeysError("fallback_keys may hold at most one key per algorithm")
    return keys
