"""Signing and verifying JSON, events and federation requests (``X-Matrix``).

* JSON (appendices, "Signing JSON"): the signature covers the canonical JSON of the object without
  ``signatures`` and ``unsigned``; it is stored at ``signatures[server][key_id]`` in unpadded
  Base64, next to any signatures already there.
* Events (server-server API, "Signing Events"): add the content hash to ``hashes.sha256``, redact,
  sign the redacted copy, copy its ``signatures`` back to the full event.
* Requests (server-server API, "Request Authentication"): sign ``{method, uri, origin,
  destination, content}`` and send ``Authorization: X-Matrix origin=..,destination=..,key=..,sig=..``.

Every verification failure raises :class:`~sc_proto.errors.SignatureError`; malformed
``Authorization`` headers raise it too (401 ``M_UNAUTHORIZED``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions

from sc_proto.crypto.keys import (
    SigningKey,
    VerifyKey,
    decode_base64,
    encode_base64,
    get_key_id,
    parse_key_id,
)
from sc_proto.errors import CanonicalJSONError, Codes, InvalidEventError, SignatureError
from sc_proto.events.hashes import content_hash_b64, encode_event_json
from sc_proto.events.redaction import copy_json, redact_view
from sc_proto.json import encode_canonical_json
from sc_proto.room_versions import RoomVersion

__all__ = [
    "XMatrixAuth",
    "build_request_json",
    "format_x_matrix_header",
    "parse_x_matrix_header",
    "sign_event",
    "sign_json",
    "sign_request",
    "verify_event_signature",
    "verify_json",
    "verify_request",
]

_SIGNATURE_LENGTH = 64
_UNSIGNED_KEYS = ("signatures", "unsigned")


def _copy_signatures(value: object) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise SignatureError("'signatures' must be an object of objects")
    return {str(server): dict(sigs) for server, sigs in value.items()}


def _signed_bytes(obj: Mapping[str, Any], room_version: RoomVersion | None) -> bytes:
    body = {k: v for k, v in obj.items() if k not in _UNSIGNED_KEYS}
    if room_version is None:
        return encode_canonical_json(body)
    return encode_event_json(body, room_version)


def sign_json(
    obj: Mapping[str, Any],
    server_name: str,
    signing_key: SigningKey,
    *,
    key_id: str | None = None,
    room_version: RoomVersion | None = None,
) -> dict[str, Any]:
    """Returns a signed copy of ``obj`` (the input is not modified).

    Args:
        obj: the JSON object to sign.
        server_name: the entity signing (``signatures`` is keyed by it).
        signing_key: the Ed25519 signing key.
        key_id: the key ID to file the signature under; defaults to ``alg:version`` of the key.
        room_version: when signing an event of room v1-v5, allows non-canonical numbers.

    Raises:
        SignatureError: ``obj`` is not an object or its ``signatures`` is malformed.
        CanonicalJSONError: ``obj`` holds values canonical JSON cannot encode.
        InvalidEventError: as above, when ``room_version`` is given.
    """
    if not isinstance(obj, Mapping):
        raise SignatureError("only JSON objects can be signed")
    key_id = key_id if key_id is not None else get_key_id(signing_key)
    parse_key_id(key_id)
    signatures = _copy_signatures(obj.get("signatures"))
    signature = signing_key.sign(_signed_bytes(obj, room_version)).signature
    signatures.setdefault(server_name, {})[key_id] = encode_base64(signature)
    signed: dict[str, Any] = copy_json({k: v for k, v in obj.items() if k != "signatures"})
    signed["signatures"] = signatures
    return signed


def verify_json(
    obj: Mapping[str, Any],
    server_name: str,
    verify_key: VerifyKey,
    *,
    key_id: str | None = None,
    room_version: RoomVersion | None = None,
) -> None:
    """Checks that ``obj`` carries a valid signature by ``server_name`` with ``verify_key``.

    Args:
        obj: the signed JSON object.
        server_name: the entity whose signature is required.
        verify_key: the public key to check with.
        key_id: the key ID of the signature; defaults to ``alg:version`` of ``verify_key``.
        room_version: when checking an event of room v1-v5, allows non-canonical numbers.

    Raises:
        SignatureError: no such signature, malformed signature, or it does not verify.
    """
    if not isinstance(obj, Mapping):
        raise SignatureError("only JSON objects can be verified")
    key_id = key_id if key_id is not None else get_key_id(verify_key)
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        raise SignatureError("no signatures")
    server_sigs = signatures.get(server_name)
    if not isinstance(server_sigs, Mapping):
        raise SignatureError(f"no signature from {server_name!r}")
    if key_id not in server_sigs:
        raise SignatureError(f"no signature from {server_name!r} with key {key_id!r}")
    signature = decode_base64(server_sigs[key_id])
    if len(signature) != _SIGNATURE_LENGTH:
        raise SignatureError(f"malformed signature from {server_name!r}")
    try:
        message = _signed_bytes(obj, room_version)
    except (InvalidEventError, CanonicalJSONError) as e:
        raise SignatureError("signed object is not canonical JSON") from e
    try:
        verify_key.verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError) as e:
        raise SignatureError(f"signature from {server_name!r} with key {key_id!r} does not verify") from e


# --- events ---------------------------------------------------------------------------------


def sign_event(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    signing_key: SigningKey,
    *,
    key_id: str | None = None,
) -> dict[str, Any]:
    """Returns a copy of ``pdu`` with its content hash added and signed by ``server_name``.

    Existing ``hashes`` entries other than ``sha256`` and existing signatures are kept.

    Raises:
        InvalidEventError: the event is malformed (not an object, not encodable).
        SignatureError: malformed existing ``signatures`` or ``hashes``.
    """
    if not isinstance(pdu, Mapping):
        raise InvalidEventError("event must be a JSON object")
    event: dict[str, Any] = copy_json(pdu)
    hashes = event.get("hashes", {})
    if not isinstance(hashes, Mapping):
        raise InvalidEventError("'hashes' must be an object")
    event["hashes"] = {**hashes, "sha256": content_hash_b64(event, room_version)}
    redacted = redact_view(event, room_version)
    key_id = key_id if key_id is not None else get_key_id(signing_key)
    parse_key_id(key_id)
    signatures = _copy_signatures(event.get("signatures"))
    signature = signing_key.sign(_signed_bytes(redacted, room_version)).signature
    signatures.setdefault(server_name, {})[key_id] = encode_base64(signature)
    event["signatures"] = signatures
    return event


def verify_event_signature(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    verify_key: VerifyKey,
    *,
    key_id: str | None = None,
) -> None:
    """Checks an event's signature by ``server_name`` (over its redacted form).

    Succeeds for both the full event and a redacted copy. The content hash is checked
    separately (:func:`sc_proto.events.hashes.check_content_hash`).

    Raises:
        SignatureError: missing, malformed or invalid signature, or a malformed event.
    """
    try:
        redacted = redact_view(pdu, room_version)
    except InvalidEventError as e:
        raise SignatureError("event is not a JSON object") from e
    verify_json(redacted, server_name, verify_key, key_id=key_id, room_version=room_version)


# --- X-Matrix request authentication -------------------------------------------------------


@dataclass(frozen=True)
class XMatrixAuth:
    """The parameters of an ``Authorization: X-Matrix ...`` header.

    Attributes:
        origin: the sending server's name.
        destination: the receiving server's name, or ``None`` if the sender omitted it.
        key_id: the signing key's ID, e.g. ``ed25519:abc``.
        signature: the unpadded Base64 signature.
    """

    origin: str
    destination: str | None
    key_id: str
    signature: str


def build_request_json(
    method: str, uri: str, origin: str, destination: str, content: Any = None
) -> dict[str, Any]:
    """Builds the JSON object a federation request's signature covers.

    Args:
        method: the HTTP method, upper case.
        uri: the request target: path from ``/_matrix/...`` with the query string, if any.
        origin: the sending server name.
        destination: the receiving server name.
        content: the parsed JSON body, or ``None`` when the request has no body.
    """
    request: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        request["content"] = content
    return request


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_x_matrix_header(auth: XMatrixAuth) -> str:
    """Formats the ``Authorization`` header value (one space, lower-case names, quoted values)."""
    params = [("origin", auth.origin)]
    if auth.destination is not None:
        params.append(("destination", auth.destination))
    params += [("key", auth.key_id), ("sig", auth.signature)]
    return "X-Matrix " + ",".join(f"{name}={_quote(value)}" for name, value in params)


def sign_request(
    *,
    method: str,
    uri: str,
    origin: str,
    destination: str,
    content: Any,
    signing_key: SigningKey,
    key_id: str | None = None,
) -> str:
    """Signs a federation request and returns the ``Authorization`` header value.

    Raises:
        CanonicalJSONError: ``content`` is not encodable as canonical JSON.
    """
    key_id = key_id if key_id is not None else get_key_id(signing_key)
    signed = sign_json(
        build_request_json(method, uri, origin, destination, content), origin, signing_key, key_id=key_id
    )
    signature = signed["signatures"][origin][key_id]
    return format_x_matrix_header(XMatrixAuth(origin, destination, key_id, signature))


def verify_request(
    *,
    method: str,
    uri: str,
    destination: str,
    content: Any,
    auth: XMatrixAuth | str | bytes,
    verify_key: VerifyKey,
) -> XMatrixAuth:
    """Verifies an inbound federation request's ``X-Matrix`` signature.

    The host first parses the header (:func:`parse_x_matrix_header`), looks up the verify key
    for ``(origin, key_id)``, then calls this.

    Args:
        method: the request's HTTP method.
        uri: the request target as received (path and query string).
        destination: *our* server name.
        content: the parsed JSON body, or ``None`` without a body.
        auth: the parsed header, or the raw header value.
        verify_key: the origin's verify key for ``auth.key_id``.

    Returns:
        The parsed header parameters.

    Raises:
        SignatureError: malformed header, wrong destination, or a bad signature.
    """
    if not isinstance(auth, XMatrixAuth):
        auth = parse_x_matrix_header(auth)
    if auth.destination is not None and auth.destination != destination:
        raise SignatureError("request is for another destination", Codes.UNAUTHORIZED)
    request = build_request_json(method, uri, auth.origin, destination, content)
    request["signatures"] = {auth.origin: {auth.key_id: auth.signature}}
    try:
        verify_json(request, auth.origin, verify_key, key_id=auth.key_id)
    except SignatureError as e:
        raise SignatureError(e.message, Codes.UNAUTHORIZED) from e
    return auth


def _header_error(message: str) -> SignatureError:
    return SignatureError(f"invalid X-Matrix Authorization header: {message}", Codes.UNAUTHORIZED)


_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OWS = " \t"


def _parse_value(text: str, pos: int) -> tuple[str, int]:
    """Parses a token or quoted-string value starting at ``pos``; returns (value, new pos)."""
    if pos < len(text) and text[pos] == '"':
        out: list[str] = []
        pos += 1
        while pos < len(text):
            char = text[pos]
            if char == "\\":
                if pos + 1 >= len(text):
                    raise _header_error("dangling backslash")
                out.append(text[pos + 1])
                pos += 2
            elif char == '"':
                return "".join(out), pos + 1
            else:
                out.append(char)
                pos += 1
        raise _header_error("unterminated quoted value")
    start = pos
    # Colons are allowed unquoted for compatibility with older servers (spec).
    while pos < len(text) and (text[pos] in _TCHARS or text[pos] == ":"):
        pos += 1
    if pos == start:
        raise _header_error("empty parameter value")
    return text[start:pos], pos


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _parse_params(text: str) -> dict[str, str]:
    """Parses ``name=value`` pairs separated by commas with optional whitespace.

    Empty list elements (``a=1,,b=2``) are ignored, as RFC 9110's list rule requires.
    """
    params: dict[str, str] = {}
    pos = _skip(text, 0, _OWS + ",")
    while pos < len(text):
        start = pos
        while pos < len(text) and text[pos] in _TCHARS:
            pos += 1
        name = text[start:pos].lower()
        if not name or pos >= len(text) or text[pos] != "=":
            raise _header_error("expected name=value")
        value, pos = _parse_value(text, pos + 1)
        if name in params:
            raise _header_error(f"duplicate parameter {name!r}")
        params[name] = value
        pos = _skip(text, pos, _OWS)
        if pos < len(text) and text[pos] != ",":
            raise _header_error("expected ',' between parameters")
        pos = _skip(text, pos, _OWS + ",")
    return params


def parse_x_matrix_header(value: str | bytes) -> XMatrixAuth:
    """Parses an ``Authorization: X-Matrix ...`` header value (RFC 9110 auth-param syntax).

    The scheme is case-insensitive; parameter names are case-insensitive; values may be tokens
    (colons allowed) or quoted strings with backslash escapes; unknown parameters are ignored.
    ``sig`` is the signature parameter (``signature``, as the spec's prose names it, is accepted
    too).

    Raises:
        SignatureError: (401 ``M_UNAUTHORIZED``) the header is malformed or lacks ``origin``,
            ``key`` or ``sig``.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError as e:
            raise _header_error("not ASCII") from e
    if not isinstance(value, str):
        raise _header_error("not a string")
    scheme, sep, rest = value.strip(_OWS).partition(" ")
    if not sep or scheme.lower() != "x-matrix":
        raise _header_error("scheme is not X-Matrix")
    params = _parse_params(rest)
    if "sig" in params and "signature" in params and params["sig"] != params["signature"]:
        raise _header_error("conflicting 'sig' and 'signature'")
    signature = params.get("sig", params.get("signature"))
    origin = params.get("origin")
    key_id = params.get("key")
    if not origin or not key_id or not signature:
        raise _header_error("missing origin, key or sig")
    try:
        parse_key_id(key_id)
    except SignatureError as e:
        raise _header_error("malformed key ID") from e
    return XMatrixAuth(
        origin=origin, destination=params.get("destination"), key_id=key_id, signature=signature
    )
