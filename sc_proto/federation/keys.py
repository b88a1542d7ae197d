"""Server signing keys: publishing, fetching and checking them (server-server API, "Retrieving server keys").

Theory of operation
-------------------
A server publishes ``GET /_matrix/key/v2/server``: its ``server_name``, the ``verify_keys`` it signs
requests and events with, the ``old_verify_keys`` it used to sign events with (each with
``expired_ts``), and ``valid_until_ts``, the time until which the list may be cached. The object is
signed by the server's own current keys (:func:`build_server_keys_response`).

A fetcher (:func:`parse_server_keys`) accepts a response only when

* ``server_name`` is the server it asked for,
* ``valid_until_ts`` and every ``expired_ts`` are non-negative integers in the JSON-safe range,
* every key ID has the shape ``ALGORITHM:VERSION`` (``VERSION`` matching ``[a-zA-Z0-9_]+``); keys of
  algorithms other than ``ed25519`` are ignored, as "Checking for a Signature" requires,
* it carries at least one signature of ``server_name`` by a key listed in its own ``verify_keys``, and
  every such signature verifies (signatures by unlisted keys are ignored).

Validity (rooms v5+, ``rooms/fragments/v5-signing-requirements.md`` and ``keys.yaml``): a server MUST
use the lesser of ``valid_until_ts`` and 7 days into the future when deciding whether a key is valid.
"The future" is measured from when the response was received, so :class:`ServerKeys` carries
``valid_until_ts = min(response valid_until_ts, received_ts + 7 days)`` (:data:`MAX_KEY_VALIDITY_MS`).
A current key is valid at ``ts`` when ``ts <= valid_until_ts``; an old key when ``ts < expired_ts``
(:func:`key_valid_at`). Room versions 1-4 ignore ``valid_until_ts``: :func:`key_validity_ts` maps an
event to the timestamp the key must be valid at (0 for those rooms, so any key known at all passes).

Notaries (``/_matrix/key/v2/query``) return the origin's signed response with their own signature
added. :func:`parse_notary_entry` requires both: a valid notary signature by one of the notary's keys,
and the origin's self-signature as above.

Everything here is pure: times are parameters (milliseconds), errors are
:class:`~sc_proto.errors.RemoteProtocolError` (400 ``M_BAD_JSON``) or
:class:`~sc_proto.errors.SignatureError` (401).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sc_proto.crypto.keys import (
    SigningKey,
    VerifyKey,
    decode_base64,
    decode_verify_key_bytes,
    encode_verify_key_base64,
    get_key_id,
    get_verify_key,
    is_signing_algorithm_supported,
    parse_key_id,
)
from sc_proto.crypto.signing import sign_json, verify_json
from sc_proto.errors import Codes, RemoteProtocolError, SignatureError
from sc_proto.identifiers import is_valid_server_name
from sc_proto.json import MAX_SAFE_INTEGER
from sc_proto.room_versions import RoomVersion

__all__ = [
    "MAX_KEYS_PER_RESPONSE",
    "MAX_KEY_VALIDITY_MS",
    "KeyQuery",
    "ServerKeys",
    "ServerVerifyKey",
    "build_key_query_request",
    "build_server_keys_response",
    "key_valid_at",
    "key_validity_ts",
    "notary_sign",
    "parse_key_query_request",
    "parse_notary_entry",
    "parse_notary_response",
    "parse_server_keys",
]

MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000
"""``valid_until_ts`` is capped at this far after receipt (rooms v5+ signing requirements)."""

MAX_KEYS_PER_RESPONSE = 256
"""``verify_keys`` plus ``old_verify_keys`` entries accepted in one response (a bound on what a hostile
server can make us store; real servers publish a handful)."""


@dataclass(frozen=True)
class ServerVerifyKey:
    """One verify key of a server and how long it may be used.

    Attributes:
        key_id: ``ed25519:VERSION``.
        verify_key: the public key.
        valid_until_ts: for a current key, until when it is valid (ms, already capped); None for an
            old key.
        expired_ts: for an old key, when the server stopped using it (ms); None for a current key.
    """

    key_id: str
    verify_key: VerifyKey
    valid_until_ts: int | None
    expired_ts: int | None

    def is_valid_at(self, ts: int, *, skew_ms: int = 0) -> bool:
        """Whether this key may have signed something at ``ts`` (see :func:`key_valid_at`)."""
        if self.valid_until_ts is not None and ts <= self.valid_until_ts + skew_ms:
            return True
        return self.expired_ts is not None and ts < self.expired_ts


@dataclass(frozen=True)
class ServerKeys:
    """A verified ``/_matrix/key/v2/server`` response.

    Attributes:
        server_name: whose keys these are.
        valid_until_ts: the capped validity of the current keys (ms).
        response_valid_until_ts: ``valid_until_ts`` as the server wrote it.
        received_ts: when the response was received (ms).
        keys: key ID -> key, current and old keys of supported algorithms.
        response: the signed response as received (a notary re-serves it).
    """

    server_name: str
    valid_until_ts: int
    response_valid_until_ts: int
    received_ts: int
    keys: Mapping[str, ServerVerifyKey]
    response: Mapping[str, Any]


def key_valid_at(keys: ServerKeys, key_id: str, ts: int, *, skew_ms: int = 0) -> VerifyKey | None:
    """The key ``key_id`` of ``keys`` if it was valid at ``ts`` (ms), else None.

    A current key is valid while ``ts <= valid_until_ts + skew_ms``; an old key while ``ts < expired_ts``.
    """
    key = keys.keys.get(key_id)
    if key is None or not key.is_valid_at(ts, skew_ms=skew_ms):
        return None
    return key.verify_key


def key_validity_ts(room_version: RoomVersion, origin_server_ts: int) -> int:
    """The time a signing key must be valid at to check an event of ``room_version``.

    Room versions 1-4 ignore ``valid_until_ts`` (keys.yaml), so the answer is 0 there; from v5 it is
    the event's ``origin_server_ts``.
    """
    return origin_server_ts if room_version.enforce_key_validity else 0


# --- publishing -----------------------------------------------------------------------------------


def build_server_keys_response(
    server_name: str,
    signing_keys: Sequence[SigningKey],
    old_verify_keys: Mapping[str, tuple[VerifyKey, int]],
    valid_until_ts: int,
) -> dict[str, Any]:
    """Builds and signs our ``GET /_matrix/key/v2/server`` response.

    Args:
        server_name: our server name.
        signing_keys: our current signing keys (each signs the response); at least one.
        old_verify_keys: key ID -> (public key, expired_ts) of keys we no longer use.
        valid_until_ts: until when the response may be cached (ms).

    Raises:
        ValueError: no signing key, or an old key ID that is also current.
    """
    if not signing_keys:
        raise ValueError("at least one signing key is needed")
    verify_keys = {get_key_id(k): {"key": encode_verify_key_base64(get_verify_key(k))} for k in signing_keys}
    old: dict[str, Any] = {}
    for key_id, (verify_key, expired_ts) in old_verify_keys.items():
        if key_id in verify_keys:
            raise ValueError(f"{key_id} is both current and old")
        old[key_id] = {"key": encode_verify_key_base64(verify_key), "expired_ts": expired_ts}
    response: dict[str, Any] = {
        "server_name": server_name,
        "verify_keys": verify_keys,
        "old_verify_keys": old,
        "valid_until_ts": valid_until_ts,
    }
    for key in signing_keys:
        response = sign_json(response, server_name, key)
    return response


def notary_sign(
    response: Mapping[str, Any], origin: str, notary_name: str, signing_key: SigningKey
) -> dict[str, Any]:
    """A server-keys response as a notary serves it: the origin's signatures kept, others dropped, ours added."""
    signatures = response.get("signatures")
    kept: dict[str, Any] = {}
    if isinstance(signatures, Mapping) and isinstance(signatures.get(origin), Mapping):
        kept[origin] = dict(signatures[origin])
    return sign_json({**response, "signatures": kept}, notary_name, signing_key)


# --- parsing ------------------------------------------------------------------------------------


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"server keys: {message}")


def _timestamp(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAFE_INTEGER:
        raise _bad(f"{what} must be a non-negative integer")
    return value


def _decode_key(key_id: str, entry: object) -> VerifyKey:
    if not isinstance(entry, Mapping):
        raise _bad(f"{key_id} must be an object")
    try:
        return decode_verify_key_bytes(key_id, decode_base64(entry.get("key")))
    except SignatureError:
        raise _bad(f"{key_id} has a malformed key") from None


def _key_entries(obj: Mapping[str, Any], field: str, *, required: bool) -> Mapping[str, Any]:
    value = obj.get(field)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(f"{field} must be an object")
    for key_id in value:
        try:
            parse_key_id(key_id)
        except SignatureError:
            raise _bad(f"malformed key ID in {field}") from None
    return value


def _parse_keys(obj: Mapping[str, Any], valid_until_ts: int) -> dict[str, ServerVerifyKey]:
    keys: dict[str, ServerVerifyKey] = {}
    old_entries = _key_entries(obj, "old_verify_keys", required=False)
    current_entries = _key_entries(obj, "verify_keys", required=True)
    if len(old_entries) + len(current_entries) > MAX_KEYS_PER_RESPONSE:
        raise _bad("too many keys")
    for key_id, entry in old_entries.items():
        if not is_signing_algorithm_supported(key_id):
            continue
        expired_ts = _timestamp(entry.get("expired_ts") if isinstance(entry, Mapping) else None, "expired_ts")
        keys[key_id] = ServerVerifyKey(key_id, _decode_key(key_id, entry), None, expired_ts)
    for key_id, entry in current_entries.items():
        if not is_signing_algorithm_supported(key_id):
            continue
        # A key listed as both current and old is current (the old entry only extends its range).
        old = keys.get(key_id)
        verify_key = _decode_key(key_id, entry)
        old_expired = old.expired_ts if old is not None and old.verify_key == verify_key else None
        keys[key_id] = ServerVerifyKey(key_id, verify_key, valid_until_ts, old_expired)
    return keys


def _check_self_signature(
    obj: Mapping[str, Any], server_name: str, keys: Mapping[str, ServerVerifyKey]
) -> None:
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping) or not isinstance(signatures.get(server_name), Mapping):
        raise SignatureError(f"server keys of {server_name!r} are not signed by it", Codes.UNAUTHORIZED)
    verified = False
    for key_id in signatures[server_name]:
        key = keys.get(key_id) if isinstance(key_id, str) else None
        if key is None or key.valid_until_ts is None:
            continue  # only the response's own current keys count
        verify_json(obj, server_name, key.verify_key, key_id=key_id)
        verified = True
    if not verified:
        raise SignatureError(
            f"server keys of {server_name!r} carry no signature by one of their verify_keys",
            Codes.UNAUTHORIZED,
        )


def parse_server_keys(obj: object, *, expected_server_name: str, received_ts: int) -> ServerKeys:
    """Parses and verifies a ``/_matrix/key/v2/server`` response (see the module docstring).

    Args:
        obj: the decoded JSON response.
        expected_server_name: the server whose keys were asked for.
        received_ts: when the response arrived (ms); caps the validity at 7 days after it.

    Raises:
        RemoteProtocolError: malformed response, or ``server_name`` is not ``expected_server_name``.
        SignatureError: missing or bad self-signature.
    """
    if not isinstance(obj, Mapping):
        raise _bad("response must be an object")
    server_name = obj.get("server_name")
    if not isinstance(server_name, str) or server_name != expected_server_name:
        raise _bad("server_name is not the server asked")
    response_valid_until_ts = _timestamp(obj.get("valid_until_ts"), "valid_until_ts")
    valid_until_ts = min(response_valid_until_ts, received_ts + MAX_KEY_VALIDITY_MS)
    keys = _parse_keys(obj, valid_until_ts)
    _check_self_signature(obj, server_name, keys)
    return ServerKeys(
        server_name=server_name,
        valid_until_ts=valid_until_ts,
        response_valid_until_ts=response_valid_until_ts,
        received_ts=received_ts,
        keys=keys,
        response=obj,
    )


def parse_notary_response(obj: object, *, max_entries: int = 1000) -> list[Mapping[str, Any]]:
    """The ``server_keys`` entries of a ``/_matrix/key/v2/query`` answer (each still to be verified).

    Raises:
        RemoteProtocolError: not ``{"server_keys": [object, ...]}``, or more than ``max_entries``.
    """
    if not isinstance(obj, Mapping) or not isinstance(obj.get("server_keys"), list):
        raise _bad("notary answer must be {'server_keys': [...]}")
    entries = obj["server_keys"]
    if len(entries) > max_entries:
        raise _bad("notary answer has too many entries")
    if not all(isinstance(entry, Mapping) for entry in entries):
        raise _bad("notary answer entries must be objects")
    return list(entries)


def parse_notary_entry(
    entry: object,
    *,
    expected_server_name: str,
    notary_name: str,
    notary_keys: Mapping[str, VerifyKey],
    received_ts: int,
) -> ServerKeys:
    """Verifies one notary-served server-keys response: signed by the notary and by the origin.

    Args:
        entry: one element of the notary's ``server_keys``.
        expected_server_name: the origin the keys must belong to.
        notary_name: the notary's server name.
        notary_keys: the notary's verify keys, key ID -> key.
        received_ts: when the answer arrived (ms).

    Raises:
        SignatureError: no valid notary signature, or no valid origin self-signature.
        RemoteProtocolError: malformed entry or wrong ``server_name``.
    """
    if not isinstance(entry, Mapping):
        raise _bad("notary entry must be an object")
    signatures = entry.get("signatures")
    notary_sigs = signatures.get(notary_name) if isinstance(signatures, Mapping) else None
    if not isinstance(notary_sigs, Mapping):
        raise SignatureError(
            f"keys of {expected_server_name!r} are not signed by the notary", Codes.UNAUTHORIZED
        )
    verified = False
    for key_id in notary_sigs:
        notary_key = notary_keys.get(key_id) if isinstance(key_id, str) else None
        if notary_key is None:
            continue
        verify_json(entry, notary_name, notary_key, key_id=key_id)
        verified = True
    if not verified:
        raise SignatureError(
            f"keys of {expected_server_name!r} carry no known notary signature", Codes.UNAUTHORIZED
        )
    return parse_server_keys(entry, expected_server_name=expected_server_name, received_ts=received_ts)


# --- the notary query (POST /_matrix/key/v2/query) ----------------------------------------------


@dataclass(frozen=True)
class KeyQuery:
    """One server of a key query.

    Attributes:
        server_name: the server whose keys are wanted.
        key_ids: the key IDs named (empty: all keys).
        minimum_valid_until_ts: the keys should be valid until at least this time (ms).
    """

    server_name: str
    key_ids: tuple[str, ...]
    minimum_valid_until_ts: int


def build_key_query_request(queries: Sequence[KeyQuery]) -> dict[str, Any]:
    """The body of ``POST /_matrix/key/v2/query`` asking for ``queries``."""
    server_keys: dict[str, dict[str, Any]] = {}
    for query in queries:
        criteria = {"minimum_valid_until_ts": query.minimum_valid_until_ts}
        server_keys[query.server_name] = {key_id: dict(criteria) for key_id in query.key_ids}
    return {"server_keys": server_keys}


def _criteria_ts(key_id: str, criteria: object, now_ms: int) -> int:
    if not isinstance(criteria, Mapping):
        raise RemoteProtocolError(f"criteria of {key_id!r} must be an object")
    value = criteria.get("minimum_valid_until_ts")
    if value is None:
        return now_ms  # "If not supplied, the notary server MUST use the current time."
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAFE_INTEGER:
        raise RemoteProtocolError(
            "minimum_valid_until_ts must be a non-negative integer", Codes.INVALID_PARAM
        )
    return value


def parse_key_query_request(
    body: object, *, now_ms: int, max_servers: int, max_key_ids: int
) -> list[KeyQuery]:
    """Parses the body of ``POST /_matrix/key/v2/query`` (400 errors for anything malformed or too big).

    A server queried without key IDs wants all keys, valid until ``now_ms``; with key IDs, until the
    latest ``minimum_valid_until_ts`` among them (the notary may return every key anyway).

    Raises:
        RemoteProtocolError: 400 for a malformed body (``M_BAD_JSON``/``M_INVALID_PARAM``), or more
            than ``max_servers`` servers or ``max_key_ids`` key IDs for one server (``M_TOO_LARGE``).
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("server_keys"), Mapping):
        raise RemoteProtocolError("body must be {'server_keys': {...}}", Codes.BAD_JSON)
    servers = body["server_keys"]
    if len(servers) > max_servers:
        raise RemoteProtocolError(f"at most {max_servers} servers per query", Codes.TOO_LARGE)
    queries: list[KeyQuery] = []
    for server_name, wanted in servers.items():
        if not is_valid_server_name(server_name):
            raise RemoteProtocolError("server_keys names an invalid server name", Codes.INVALID_PARAM)
        if not isinstance(wanted, Mapping):
            raise RemoteProtocolError("each server's criteria must be an object", Codes.BAD_JSON)
        if len(wanted) > max_key_ids:
            raise RemoteProtocolError(f"at most {max_key_ids} key IDs per server", Codes.TOO_LARGE)
        key_ids: list[str] = []
        stamps: list[int] = []
        for key_id, criteria in wanted.items():
            try:
                parse_key_id(key_id)
            except SignatureError:
                raise RemoteProtocolError("malformed key ID in server_keys", Codes.INVALID_PARAM) from None
            key_ids.append(key_id)
            stamps.append(_criteria_ts(key_id, criteria, now_ms))
        queries.append(KeyQuery(server_name, tuple(key_ids), max(stamps) if stamps else now_ms))
    return queries
