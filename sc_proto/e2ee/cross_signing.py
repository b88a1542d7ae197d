"""Cross-signing key structures and their signatures (client-server API, "Cross-signing").

Pure validation, no I/O: a host parses uploaded keys with :func:`parse_cross_signing_key`, checks
signatures with :func:`verify_signature`, and classifies the signatures a user uploads with
:func:`new_signatures` and :func:`check_same_object`.

Theory of operation:

* Every user has up to three Ed25519 cross-signing keys: the *master* key (their identity), the
  *self-signing* key (signs their own devices) and the *user-signing* key (signs other users' master
  keys). The self-signing and user-signing keys must carry a signature by the master key.
* A cross-signing key's ID is ``ed25519:<unpadded base64 public key>``; a device key's ID is
  ``ed25519:<device ID>``. Both live in one namespace, so a host must refuse a cross-signing key
  whose public key equals one of the user's device IDs.
* A signature covers the canonical JSON of the object without ``signatures`` and ``unsigned``
  (appendices, "Signing JSON"), and is stored at ``signatures[user_id][key_id]``.

Every failure raises :class:`CrossSigningError` (400, ``M_INVALID_PARAM`` for malformed structures,
``M_INVALID_SIGNATURE`` for signatures that are missing or do not verify); messages never hold key
material.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from sc_proto.crypto.keys import ED25519, decode_base64, encode_base64
from sc_proto.errors import CanonicalJSONError, Codes, RemoteProtocolError, SignatureError
from sc_proto.identifiers import UserID
from sc_proto.json import encode_canonical_json

__all__ = [
    "KEY_USAGES",
    "MASTER",
    "SELF_SIGNING",
    "USER_SIGNING",
    "CrossSigningError",
    "CrossSigningKey",
    "check_same_object",
    "device_ed25519_key",
    "key_id_for_public_key",
    "new_signatures",
    "parse_cross_signing_key",
    "sign_object",
    "signable_bytes",
    "verify_signature",
]

MASTER = "master"
SELF_SIGNING = "self_signing"
USER_SIGNING = "user_signing"
KEY_USAGES = frozenset({MASTER, SELF_SIGNING, USER_SIGNING})
"""The usages the spec defines for cross-signing keys."""

_PUBLIC_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
_UNSIGNED_KEYS = ("signatures", "unsigned")
MAX_USAGES = 16
"""Most entries accepted in a key's ``usage`` list (the spec defines three)."""


class CrossSigningError(RemoteProtocolError):
    """A cross-signing structure is malformed or a signature does not verify (400)."""

    def __init__(self, message: str, errcode: Codes = Codes.INVALID_PARAM) -> None:
        super().__init__(message, errcode, 400)


@dataclass(frozen=True)
class CrossSigningKey:
    """A validated cross-signing key.

    Attributes:
        user_id: the owner.
        usage: the ``usage`` list (contains the usage it was parsed for).
        key_id: ``ed25519:<public key>``.
        public_key: the unpadded Base64 public key.
        json: the key object as uploaded (a deep copy).
    """

    user_id: str
    usage: tuple[str, ...]
    key_id: str
    public_key: str
    json: Mapping[str, Any]

    def signature_by(self, user_id: str, key_id: str) -> str | None:
        """The signature ``signatures[user_id][key_id]`` carried by this key, if any."""
        return _signature_in(self.json, user_id, key_id)


def key_id_for_public_key(public_key: str) -> str:
    """The key ID ``ed25519:<public_key>`` of a cross-signing public key."""
    return f"{ED25519}:{public_key}"


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


def _check_public_key(public_key: object) -> str:
    if not isinstance(public_key, str):
        raise CrossSigningError("Public key must be a string")
    try:
        raw = decode_base64(public_key)
    except SignatureError:
        raise CrossSigningError("Public key is not valid unpadded base64") from None
    if len(raw) != _PUBLIC_KEY_BYTES or encode_base64(raw) != public_key:
        raise CrossSigningError("Public key must be 32 bytes in unpadded base64")
    return public_key


def _check_signatures_shape(signatures: object) -> None:
    if signatures is None:
        return
    if not isinstance(signatures, Mapping):
        raise CrossSigningError("'signatures' must be an object")
    for user_sigs in signatures.values():
        if not isinstance(user_sigs, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in user_sigs.items()
        ):
            raise CrossSigningError("'signatures' must map user IDs to objects of strings")


def parse_cross_signing_key(obj: object, usage: str, *, user_id: str | None = None) -> CrossSigningKey:
    """Validates a cross-signing key object.

    Args:
        obj: the key JSON (``user_id``, ``usage``, ``keys``, optional ``signatures``).
        usage: the usage the key must have (:data:`MASTER`, :data:`SELF_SIGNING` or
            :data:`USER_SIGNING`).
        user_id: if given, the owner the key must name.

    Returns:
        The parsed key.

    Raises:
        CrossSigningError: the structure is malformed, names another user, lacks ``usage``, or
            ``keys`` is not exactly one ``ed25519:<public key>`` entry whose value is that key.
        LocalProtocolError: never; ``usage`` is trusted to be one of :data:`KEY_USAGES`.
    """
    if not isinstance(obj, Mapping):
        raise CrossSigningError("A cross-signing key must be an object")
    owner = obj.get("user_id")
    if not isinstance(owner, str):
        raise CrossSigningError("'user_id' must be a string")
    try:
        UserID.parse(owner, historical=True)
    except RemoteProtocolError:
        raise CrossSigningError("'user_id' is not a valid user ID") from None
    if user_id is not None and owner != user_id:
        raise CrossSigningError("The key's 'user_id' does not match the user", Codes.INVALID_PARAM)
    usages = obj.get("usage")
    if not isinstance(usages, list) or not usages or len(usages) > MAX_USAGES:
        raise CrossSigningError("'usage' must be a non-empty list")
    if not all(isinstance(u, str) for u in usages):
        raise CrossSigningError("'usage' must be a list of strings")
    if usage not in usages:
        raise CrossSigningError(f"The key's 'usage' must include {usage!r}")
    keys = obj.get("keys")
    if not isinstance(keys, Mapping) or len(keys) != 1:
        raise CrossSigningError("'keys' must hold exactly one key")
    ((key_id, public_key),) = keys.items()
    if not isinstance(key_id, str) or not key_id.startswith(ED25519 + ":"):
        raise CrossSigningError("Cross-signing keys must be ed25519 keys")
    public_key = _check_public_key(public_key)
    if key_id != key_id_for_public_key(public_key):
        raise CrossSigningError("The key ID must be 'ed25519:' followed by the public key")
    _check_signatures_shape(obj.get("signatures"))
    try:
        encode_canonical_json(obj)
    except CanonicalJSONError:
        raise CrossSigningError("The key is not canonical JSON") from None
    return CrossSigningKey(owner, tuple(usages), key_id, public_key, _copy(obj))


def signable_bytes(obj: Mapping[str, Any]) -> bytes:
    """The bytes a signature of ``obj`` covers: canonical JSON without ``signatures``/``unsigned``.

    Raises:
        CrossSigningError: ``obj`` cannot be encoded as canonical JSON.
    """
    try:
        return encode_canonical_json({k: v for k, v in obj.items() if k not in _UNSIGNED_KEYS})
    except CanonicalJSONError:
        raise CrossSigningError("The signed object is not canonical JSON") from None


def _signature_in(obj: Mapping[str, Any], user_id: str, key_id: str) -> str | None:
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        return None
    user_sigs = signatures.get(user_id)
    if not isinstance(user_sigs, Mapping):
        return None
    value = user_sigs.get(key_id)
    return value if isinstance(value, str) else None


def verify_signature(
    obj: Mapping[str, Any],
    signer_user_id: str,
    signer_key_id: str,
    public_key: str,
    *,
    signature: str | None = None,
) -> None:
    """Checks the Ed25519 signature of ``obj`` by ``signer_user_id``'s key ``signer_key_id``.

    Args:
        obj: the signed object.
        signer_user_id: the user who signed.
        signer_key_id: the signing key's ID (``ed25519:<public key>`` or ``ed25519:<device ID>``).
        public_key: the signing key's unpadded Base64 public key.
        signature: the signature to check; defaults to ``obj["signatures"][signer_user_id][signer_key_id]``.

    Raises:
        CrossSigningError: ``M_INVALID_SIGNATURE`` if the signature is absent, malformed or wrong;
            ``M_INVALID_PARAM`` if the public key or object is malformed.
    """
    if not isinstance(obj, Mapping):
        raise CrossSigningError("Only JSON objects can be verified")
    if signature is None:
        signature = _signature_in(obj, signer_user_id, signer_key_id)
    if signature is None:
        raise CrossSigningError("Missing signature", Codes.INVALID_SIGNATURE)
    raw_key = decode_base64(_check_public_key(public_key))
    try:
        raw_sig = decode_base64(signature)
    except SignatureError:
        raise CrossSigningError("Invalid signature", Codes.INVALID_SIGNATURE) from None
    if len(raw_sig) != _SIGNATURE_BYTES:
        raise CrossSigningError("Invalid signature", Codes.INVALID_SIGNATURE)
    message = signable_bytes(obj)
    try:
        nacl.signing.VerifyKey(raw_key).verify(message, raw_sig)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        raise CrossSigningError("Invalid signature", Codes.INVALID_SIGNATURE) from None


def sign_object(
    obj: Mapping[str, Any], user_id: str, key_id: str, signing_key: nacl.signing.SigningKey
) -> dict[str, Any]:
    """Returns a copy of ``obj`` with a signature by ``user_id``'s key ``key_id`` added.

    For clients, bots and tests: a server never holds cross-signing private keys.

    Raises:
        CrossSigningError: ``obj`` is not canonical JSON or its ``signatures`` is malformed.
    """
    _check_signatures_shape(obj.get("signatures"))
    signature = encode_base64(signing_key.sign(signable_bytes(obj)).signature)
    signed: dict[str, Any] = _copy(obj)
    signatures = signed.setdefault("signatures", {})
    signatures.setdefault(user_id, {})[key_id] = signature
    return signed


def device_ed25519_key(device_keys: Mapping[str, Any], device_id: str) -> str:
    """The unpadded Base64 Ed25519 key ``keys["ed25519:<device_id>"]`` of a device-keys object.

    Raises:
        CrossSigningError: the device keys have no valid Ed25519 key for ``device_id``.
    """
    keys = device_keys.get("keys")
    value = keys.get(f"{ED25519}:{device_id}") if isinstance(keys, Mapping) else None
    if value is None:
        raise CrossSigningError("The device has no ed25519 key")
    return _check_public_key(value)


def check_same_object(uploaded: Mapping[str, Any], stored: Mapping[str, Any]) -> None:
    """Checks that an uploaded signed object is the stored key apart from its signatures.

    ``/keys/signatures/upload`` requires the signed JSON to match the key previously uploaded "with
    the exception of the ``signatures`` property"; ``unsigned`` is ignored as well since servers
    add to it.

    Raises:
        CrossSigningError: ``M_INVALID_SIGNATURE`` when anything else differs.
    """
    if not isinstance(uploaded, Mapping):
        raise CrossSigningError("The signed object must be an object")
    if signable_bytes(uploaded) != signable_bytes(stored):
        raise CrossSigningError("The signed object does not match the stored key", Codes.INVALID_SIGNATURE)


def new_signatures(uploaded: Mapping[str, Any], stored: Mapping[str, Any], signer_user_id: str) -> dict[str, str]:
    """The signatures by ``signer_user_id`` in ``uploaded`` that ``stored`` does not already carry.

    Returns:
        Map of signing key ID to signature.

    Raises:
        CrossSigningError: ``uploaded``'s ``signatures`` is malformed.
    """
    _check_signatures_shape(uploaded.get("signatures"))
    signatures = uploaded.get("signatures") or {}
    mine = signatures.get(signer_user_id) or {}
    return {
        key_id: signature
        for key_id, signature in mine.items()
        if _signature_in(stored, signer_user_id, key_id) != signature
    }
