"""The inbound federation transport: ``/_matrix/federation/*`` and ``/_matrix/key/*`` on the shared
:class:`~homeserver.http.server.JsonResource`, with ``X-Matrix`` authentication.

Theory of operation
-------------------
:class:`FederationTransport` implements :class:`~federation.interfaces.FederationRouter`. It does not
route by itself: each :meth:`~FederationTransport.register` adds a route to the homeserver's
``JsonResource`` (the one every listener serves), wrapped in :meth:`FederationTransport._authenticate`.
So path matching, percent-decoding and bounding of ``{name}`` segments (255 bytes, no NUL), 404/405
``M_UNRECOGNIZED`` for unknown paths and methods, the body-size limit (enforced while receiving) and
the rendering of :class:`~sc_proto.errors.MatrixError` are the HTTP layer's, shared with the client
API. The wrapper adds, in order:

1. Strict JSON: a body must be a JSON object (NaN, duplicate keys, bad UTF-8, deep nesting refused
   with 400 ``M_NOT_JSON``/``M_BAD_JSON``); query parameters must be UTF-8.
2. On authenticated routes, ``Authorization: X-Matrix`` (one header or several, one per key):
   every X-Matrix header must parse and name the same ``origin``, a valid server name; a
   ``destination`` other than our server name is refused (an absent one is tolerated, as the spec
   asks); ``domain_whitelist`` is applied (403 ``M_FORBIDDEN``); then the signature over
   ``{method, uri, origin, destination, content}`` is checked with the origin's key from the
   :class:`~federation.interfaces.VerifyKeyLookup`, valid now. One verifying header is enough.
   Every failure is 401 ``M_UNAUTHORIZED``.
3. The servlet gets a :class:`~federation.interfaces.FederationRequest` with the authenticated origin.

Replay: ``X-Matrix`` carries no timestamp or nonce, so a captured request can be replayed to the
*same* destination; the signed ``destination`` stops replays to others. Endpoints with effects are
idempotent by design (``/send/{txnId}`` deduplicates by transaction ID; joins and invites by event ID),
which is where replay protection lives (ADR 0012).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from twisted.web.server import Request

from federation.interfaces import FederationHandler, FederationRequest, JsonDict, VerifyKeyLookup
from homeserver.config.federation import FederationConfig
from homeserver.http.server import JsonResource, compile_template
from homeserver.http.servlet import read_body
from sc_proto._version import __version__
from sc_proto.crypto.keys import VerifyKey
from sc_proto.crypto.signing import XMatrixAuth, parse_x_matrix_header, verify_request
from sc_proto.errors import CanonicalJSONError, Codes, InvalidIdentifierError, MatrixError, SignatureError
from sc_proto.identifiers import ServerName
from sc_proto.json import decode_json

logger = logging.getLogger(__name__)

SERVER_IMPLEMENTATION_NAME = "SecureConnect"
"""``server.name`` of ``GET /_matrix/federation/v1/version``."""
MAX_AUTHORIZATION_HEADERS = 8
"""Most ``Authorization`` headers looked at (one per signing key; more is abuse)."""
MAX_JSON_DEPTH = 64
"""Deepest nesting accepted in a request body."""
_PREFIXES = ("/_matrix/federation/", "/_matrix/key/")


def _unauthorized(message: str) -> MatrixError:
    return MatrixError(401, Codes.UNAUTHORIZED, message)


class NoKeysLookup:
    """A :class:`~federation.interfaces.VerifyKeyLookup` that knows no key at all: every authenticated
    request is refused with 401.

    The placeholder until the keyring (``federation/keyring.py``) is wired: its feature calls
    :meth:`FederationTransport.use_key_lookup` with the real lookup.
    """

    async def get_verify_key(self, server_name: str, key_id: str, at_ts: int) -> VerifyKey:
        """Always raises 401 ``M_UNAUTHORIZED``."""
        raise _unauthorized(f"no verify key {key_id} known for {server_name}")

    async def verify_json_for_server(self, server_name: str, obj: Mapping[str, Any], at_ts: int) -> None:
        """Always raises 401 ``M_UNAUTHORIZED``."""
        raise _unauthorized(f"no verify key known for {server_name}")


class FederationTransport:
    """Where federation servlets register (:class:`~federation.interfaces.FederationRouter`).

    Args:
        resource: the homeserver's JSON resource (served by every listener).
        server_name: our server name (the ``destination`` requests must be for).
        config: the ``federation:`` section.
        time_msec: the clock (key validity is checked at this time).
        key_lookup: remote servers' verify keys; :class:`NoKeysLookup` until the keyring is wired.
    """

    def __init__(
        self,
        resource: JsonResource,
        server_name: str,
        config: FederationConfig,
        time_msec: Callable[[], int],
        key_lookup: VerifyKeyLookup | None = None,
    ) -> None:
        self._resource = resource
        self.server_name = server_name
        self._config = config
        self._time_msec = time_msec
        self._keys: VerifyKeyLookup = key_lookup if key_lookup is not None else NoKeysLookup()
        self._keys_replaced = key_lookup is not None
        self._whitelist = None if config.domain_whitelist is None else frozenset(config.domain_whitelist)

    def use_key_lookup(self, key_lookup: VerifyKeyLookup) -> None:
        """Replaces the placeholder :class:`NoKeysLookup` with the keyring (once, at wiring time).

        Raises:
            RuntimeError: a real lookup is already in use.
        """
        if self._keys_replaced:
            raise RuntimeError("the federation transport already has a key lookup")
        self._keys = key_lookup
        self._keys_replaced = True

    # ------------------------------------------------------------------ FederationRouter

    def register(
        self,
        method: str,
        pattern: str,
        handler: FederationHandler,
        *,
        authenticated: bool = True,
        max_body_size: int | None = None,
    ) -> None:
        """Routes ``method pattern`` to ``handler``; see :class:`~federation.interfaces.FederationRouter`.

        Args:
            method: the HTTP method.
            pattern: a path template under ``/_matrix/federation/`` or ``/_matrix/key/``.
            handler: the servlet.
            authenticated: require a valid ``X-Matrix`` header (and apply ``domain_whitelist``).
            max_body_size: this route's body limit; default ``federation.max_request_body_bytes``.
                (An addition to the router protocol.)

        Raises:
            ValueError: the pattern is outside the federation prefixes, malformed or already routed.
        """
        if not pattern.startswith(_PREFIXES):
            raise ValueError(f"federation routes live under {' or '.join(_PREFIXES)}: {pattern!r}")
        _regex, params = compile_template(pattern)
        names = {kwarg: group for group, kwarg in params}
        method = method.upper()

        async def route(request: Request, **path_args: str) -> tuple[int, JsonDict]:
            # The method as sent (HEAD reaches GET routes) is what the signature covers.
            sent_method = (request.method or method.encode()).decode("latin-1").upper()
            federation_request = await self._authenticate(request, sent_method, authenticated, path_args, names)
            return await handler(federation_request)

        limit = max_body_size if max_body_size is not None else self._config.max_request_body_bytes
        self._resource.register(method, pattern, route, max_body_size=limit)

    def register_version(self) -> None:
        """Serves ``GET /_matrix/federation/v1/version`` (no authentication, per the spec)."""

        async def version(_request: FederationRequest) -> tuple[int, JsonDict]:
            return 200, {"server": {"name": SERVER_IMPLEMENTATION_NAME, "version": __version__}}

        self.register("GET", "/_matrix/federation/v1/version", version, authenticated=False)

    # ------------------------------------------------------------------ checks

    async def _authenticate(
        self,
        request: Request,
        method: str,
        authenticated: bool,
        path_args: Mapping[str, str],
        names: Mapping[str, str],
    ) -> FederationRequest:
        content = _parse_body(request)
        query = _parse_query(request)
        origin = None
        if authenticated:
            origin = await self._check_signature(request, method, content)
            setattr(request, "authenticated_entity", origin)  # noqa: B010  # SCRequest's access-log field
        return FederationRequest(
            origin=origin,
            method=method,
            path_args={names.get(key, key): value for key, value in path_args.items()},
            query=query,
            content=content,
        )

    def _parse_headers(self, request: Request) -> list[XMatrixAuth]:
        raw = request.requestHeaders.getRawHeaders(b"Authorization") or []
        candidates = [value for value in raw if value[:9].lower() == b"x-matrix "]
        if not candidates:
            raise _unauthorized("Missing X-Matrix Authorization header")
        if len(candidates) > MAX_AUTHORIZATION_HEADERS:
            raise _unauthorized("Too many Authorization headers")
        parsed = [parse_x_matrix_header(value) for value in candidates]
        origins = {auth.origin for auth in parsed}
        if len(origins) != 1:
            raise _unauthorized("X-Matrix headers name different origins")
        for auth in parsed:
            if auth.destination is not None and auth.destination != self.server_name:
                raise _unauthorized("Request is for another destination")
        return parsed

    async def _check_signature(self, request: Request, method: str, content: JsonDict | None) -> str:
        try:
            headers = self._parse_headers(request)
            origin = headers[0].origin
            try:
                origin = str(ServerName.parse(origin))
            except InvalidIdentifierError:
                raise _unauthorized("Origin is not a valid server name") from None
            if self._whitelist is not None and origin not in self._whitelist:
                raise MatrixError(403, Codes.FORBIDDEN, "Federation with this server is not allowed")
            try:
                uri = (request.uri or b"").decode("utf-8")
            except UnicodeDecodeError:
                raise _unauthorized("Request target is not UTF-8") from None
            await self._verify_any(headers, method, uri, origin, content)
        except MatrixError as error:
            logger.info("refused federation request %s: %s", _loggable(request), error.message)
            raise
        return origin

    async def _verify_any(
        self, headers: list[XMatrixAuth], method: str, uri: str, origin: str, content: JsonDict | None
    ) -> None:
        now = self._time_msec()
        last_error: MatrixError = _unauthorized("Invalid signature")
        for auth in headers:
            try:
                key = await self._keys.get_verify_key(origin, auth.key_id, now)
                verify_request(
                    method=method, uri=uri, destination=self.server_name, content=content, auth=auth, verify_key=key
                )
                return
            except SignatureError as error:
                last_error = _unauthorized(error.message)
            except MatrixError as error:
                last_error = error if error.http_status == 401 else _unauthorized(error.message)
        raise last_error


def _parse_body(request: Request) -> JsonDict | None:
    body = read_body(request)
    if not body.strip():
        return None
    try:
        # Integers beyond ±(2^53-1) are tolerated: PDUs of room versions 1-5 may carry them; the
        # event layer applies per-version rules. Floats, NaN and duplicate keys are refused.
        value = decode_json(body, strict_integers=False, max_depth=MAX_JSON_DEPTH)
    except CanonicalJSONError as error:
        code = error.errcode if error.errcode in (Codes.NOT_JSON, Codes.BAD_JSON) else Codes.NOT_JSON
        raise MatrixError(400, code, error.message) from None
    if not isinstance(value, dict):
        raise MatrixError(400, Codes.NOT_JSON, "Content must be a JSON object")
    return value


def _parse_query(request: Request) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    try:
        for key, values in (request.args or {}).items():
            query[key.decode("utf-8")] = [value.decode("utf-8") for value in values]
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.INVALID_PARAM, "Query parameters must be UTF-8") from None
    return query


def _loggable(request: Request) -> str:
    """Method and path without the query string."""
    method = (request.method or b"").decode("latin-1")
    return f"{method} {(request.path or b'').decode('latin-1')}"
