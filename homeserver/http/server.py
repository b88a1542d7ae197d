"""The JSON API resource: path routing, dispatch to async handlers, error rendering.

Theory of operation
-------------------
:class:`JsonResource` is a leaf :class:`twisted.web.resource.Resource`. ``render`` looks the request
path up in a table of compiled path templates, then runs the matching ``async`` handler inside a
Deferred and returns ``NOT_DONE_YET``. When the handler finishes, its ``(status, body)`` is encoded
as UTF-8 JSON and written, unless the client has gone away in the meantime.

Invariants:

* This module is the only place a :class:`sc_proto.errors.MatrixError` becomes an HTTP response
  (``{"errcode", "error", **extra}`` with the error's status). Any other exception is logged with
  its traceback and answered with a bare 500 ``M_UNKNOWN``; the traceback is never sent.
* Every response, including errors and ``OPTIONS`` pre-flights, carries the CORS headers.
* Nothing is written to a request whose connection was lost or that is already finished.
* Every request being handled is counted in :attr:`JsonResource.inflight_count` until its response
  is written (or abandoned), so a shutting-down server can wait for them.

Path templates look like ``/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}``. A
placeholder matches one non-empty path segment; ``{name:regex}`` supplies the segment regex instead
(for instance ``{stateKey:[^/]*}`` to allow an empty state key). Captured values are percent-decoded
as UTF-8 and passed to the handler as keyword arguments whose names are converted to snake case
(``roomId`` becomes ``room_id``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from homeserver.http.cors import add_cors_headers
from homeserver.logging.context import request_id as request_id_var
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
"""A JSON object as Python sees it."""

JsonBody = Mapping[str, Any] | list[Any]
"""A response body: a JSON object, or (for the few endpoints the spec defines so) an array."""

Handler = Callable[..., Awaitable[tuple[int, JsonBody]]]
"""``async def handler(request, **path_args) -> (status, json_object)``."""


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])([A-Z])")
_JSON_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    separators=(",", ":"),
    default=lambda value: _encode_fallback(value),
)
_request_counter = itertools.count(1)


def _encode_fallback(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (tuple, frozenset, set)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_json_body(body: Any) -> bytes:
    """Encodes a response body as compact UTF-8 JSON.

    Args:
        body: a JSON-compatible value (mappings and tuples are accepted).

    Returns:
        The encoded bytes.

    Raises:
        TypeError: a value cannot be encoded.
        ValueError: a float is NaN or infinite.
    """
    return _JSON_ENCODER.encode(body).encode("utf-8")


def snake_case(name: str) -> str:
    """Converts a camelCase path-parameter name to snake_case (``roomId`` -> ``room_id``)."""
    return _CAMEL_RE.sub(r"_\1", name).lower()


@dataclass(frozen=True)
class Route:
    """One (method, template) registration.

    Attributes:
        method: HTTP method in upper case.
        handler: the async handler.
        max_body_size: largest request body accepted, or None for the site default.
        cancellable: cancel the handler when the client disconnects (only for handlers without
            side effects that must complete).
    """

    method: str
    handler: Handler
    max_body_size: int | None = None
    cancellable: bool = False


@dataclass
class _PathTemplate:
    template: str
    regex: re.Pattern[str]
    # (regex group name, handler keyword name)
    params: tuple[tuple[str, str], ...]
    routes: dict[str, Route] = field(default_factory=dict)


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[tuple[str, str], ...]]:
    """Compiles a path template to an anchored regex.

    Args:
        template: e.g. ``/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey:[^/]*}``.

    Returns:
        The regex and the (group name, keyword name) of each placeholder, in order.

    Raises:
        ValueError: the template is malformed (unbalanced braces, bad or repeated names).
    """
    if not template.startswith("/"):
        raise ValueError(f"path template must start with '/': {template!r}")
    parts: list[str] = []
    params: list[tuple[str, str]] = []
    pos = 0
    while pos < len(template):
        start = template.find("{", pos)
        literal = template[pos:] if start < 0 else template[pos:start]
        if "}" in literal:
            raise ValueError(f"unbalanced '}}' in {template!r}")
        parts.append(re.escape(literal))
        if start < 0:
            break
        end, name, segment_regex = _parse_placeholder(template, start)
        if any(name == group or snake_case(name) == kwarg for group, kwarg in params):
            raise ValueError(f"repeated placeholder {name!r} in {template!r}")
        params.append((name, snake_case(name)))
        parts.append(f"(?P<{name}>{segment_regex})")
        pos = end
    return re.compile("^" + "".join(parts) + "$"), tuple(params)


def _parse_placeholder(template: str, start: int) -> tuple[int, str, str]:
    """Parses ``{name}`` or ``{name:regex}`` at ``start``; returns (end, name, regex)."""
    depth = 0
    for index in range(start, len(template)):
        char = template[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                inner = template[start + 1 : index]
                name, _, segment_regex = inner.partition(":")
                if not _NAME_RE.fullmatch(name):
                    raise ValueError(f"bad placeholder name {name!r} in {template!r}")
                if segment_regex:
                    try:
                        groups = re.compile(segment_regex).groups
                    except re.error as error:
                        raise ValueError(f"bad placeholder regex {inner!r}: {error}") from None
                    if groups:
                        raise ValueError(f"placeholder regex must not capture: {inner!r}")
                return index + 1, name, segment_regex or "[^/]+"
    raise ValueError(f"unbalanced '{{' in {template!r}")


@dataclass(eq=False)
class _InflightState:
    disconnected: bool = False
    deferred: Deferred[None] | None = None
    cancellable: bool = False


class JsonResource(Resource):
    """Routes requests to async JSON handlers and renders their results or errors.

    Args:
        name: a label for logs (e.g. ``client``, ``federation``).
    """

    isLeaf = True

    def __init__(self, name: str = "json") -> None:
        _untyped(super()).__init__()
        self.name = name
        self._literal: dict[str, _PathTemplate] = {}
        self._patterned: list[_PathTemplate] = []
        self._by_template: dict[str, _PathTemplate] = {}
        self._inflight: set[_InflightState] = set()
        self._inflight_waiters: list[Deferred[None]] = []
        self._mounted: dict[bytes, Resource] = {}
        self._mounted_prefixes: list[tuple[bytes, Resource]] = []

    # ------------------------------------------------------------------ registration

    def register(
        self,
        method: str,
        pattern: str | Iterable[str],
        handler: Handler,
        *,
        max_body_size: int | None = None,
        cancellable: bool = False,
    ) -> None:
        """Registers ``handler`` for ``method`` on one or more path templates.

        Args:
            method: HTTP method (``GET`` also answers ``HEAD``).
            pattern: a path template, or several (e.g. the ``r0`` and ``v3`` forms of a path).
            handler: ``async def handler(request, **path_args) -> (status, json_object)``.
            max_body_size: request-body limit for this route (overrides the site default,
                larger or smaller).
            cancellable: cancel the handler if the client disconnects before it finishes.

        Raises:
            ValueError: bad method or template, or the (method, template) is already registered.
        """
        method = method.upper()
        if method not in _METHODS or method in ("HEAD", "OPTIONS"):
            raise ValueError(f"cannot register method {method!r}")
        if max_body_size is not None and max_body_size < 0:
            raise ValueError("max_body_size must be >= 0")
        templates = [pattern] if isinstance(pattern, str) else list(pattern)
        route = Route(method, handler, max_body_size, cancellable)
        for template in templates:
            entry = self._by_template.get(template)
            if entry is None:
                regex, params = compile_template(template)
                entry = _PathTemplate(template, regex, params)
                self._by_template[template] = entry
                if params:
                    self._patterned.append(entry)
                else:
                    self._literal[template] = entry
            if method in entry.routes:
                raise ValueError(f"{method} {template} is already registered")
            entry.routes[method] = route

    def mount(self, path: str, resource: Resource) -> None:
        """Hands requests for exactly ``path`` (any method) to another Twisted resource.

        For endpoints that are not JSON request/response, such as the WebSocket sync push
        (``/_sc/client/v1/sync/ws``): the resource's ``render`` is called with the request as is,
        outside the in-flight accounting and error rendering of this class.

        Raises:
            ValueError: the path does not start with ``/`` or is already mounted or routed.
        """
        if not path.startswith("/"):
            raise ValueError(f"mount path must start with '/': {path!r}")
        key = path.encode("latin-1")
        if key in self._mounted or path in self._by_template:
            raise ValueError(f"{path} is already served")
        self._mounted[key] = resource

    def mount_prefix(self, prefix: str, resource: Resource) -> None:
        """Hands every request whose path starts with ``prefix`` (any method) to another resource.

        Like :meth:`mount`, for non-JSON endpoints with path parameters, such as media downloads
        (``/_matrix/client/v1/media/download/``), which stream bytes. Routes registered with
        :meth:`register` under the prefix are shadowed, so the prefix should end with ``/``.

        Raises:
            ValueError: the prefix does not start with ``/`` or is already mounted.
        """
        if not prefix.startswith("/"):
            raise ValueError(f"mount prefix must start with '/': {prefix!r}")
        key = prefix.encode("latin-1")
        if any(existing == key for existing, _ in self._mounted_prefixes):
            raise ValueError(f"{prefix} is already mounted")
        self._mounted_prefixes.append((key, resource))

    def _mounted_resource(self, path: bytes) -> Resource | None:
        mounted = self._mounted.get(path) if self._mounted else None
        if mounted is not None:
            return mounted
        for prefix, resource in self._mounted_prefixes:
            if path.startswith(prefix):
                return resource
        return None

    # ------------------------------------------------------------------ lookup

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """Finds the route; raises 405 when the path is known but not for this method."""
        lookup_method = "GET" if method == "HEAD" else method
        path_known = False
        allowed: set[str] = set()
        literal = self._literal.get(path)
        candidates: Iterable[_PathTemplate] = self._patterned
        if literal is not None:
            candidates = itertools.chain((literal,), self._patterned)
        for entry in candidates:
            found = entry.regex.match(path)
            if found is None:
                continue
            route = entry.routes.get(lookup_method)
            if route is None:
                path_known = True
                allowed.update(entry.routes)
                continue
            args = {kwarg: _decode_path_param(found.group(group)) for group, kwarg in entry.params}
            return route, args
        if path_known:
            raise _MethodNotAllowed(allowed)
        return None

    def max_body_size_for(self, method: bytes, path: bytes) -> int | None:
        """Returns the body-size limit of the route ``method path`` would reach, if it sets one.

        Used by :class:`homeserver.http.site.SCSite` to reject large bodies before reading them.
        """
        try:
            path_str = path.split(b"?", 1)[0].decode("latin-1")
            matched = self._match(method.decode("latin-1").upper(), path_str)
        except MatrixError:
            return None
        if matched is None:
            return None
        return matched[0].max_body_size

    # ------------------------------------------------------------------ in-flight requests

    @property
    def inflight_count(self) -> int:
        """Number of requests being handled right now."""
        return len(self._inflight)

    def wait_for_inflight(self) -> Deferred[None]:
        """Returns a Deferred that fires once no request is being handled (at once if none is)."""
        waiter: Deferred[None] = Deferred()
        if not self._inflight:
            waiter.callback(None)
        else:
            self._inflight_waiters.append(waiter)
        return waiter

    def _request_done(self, state: _InflightState) -> None:
        self._inflight.discard(state)
        if not self._inflight:
            waiters, self._inflight_waiters = self._inflight_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    # ------------------------------------------------------------------ rendering

    def render(self, request: Request) -> int | bytes:
        """Starts handling ``request``; the response is written when the handler finishes."""
        mounted = self._mounted_resource(request.path or b"")
        if mounted is not None:
            rendered: int | bytes = _untyped(mounted).render(request)
            return rendered
        state = _InflightState()
        self._inflight.add(state)

        def on_connection_lost(failure: Failure) -> None:
            state.disconnected = True
            if state.cancellable and state.deferred is not None:
                state.deferred.cancel()

        request.notifyFinish().addErrback(on_connection_lost)
        deferred: Deferred[None] = Deferred.fromCoroutine(self._handle(request, state))
        state.deferred = deferred
        deferred.addBoth(lambda _: self._request_done(state))
        if state.disconnected and state.cancellable and not deferred.called:
            deferred.cancel()
        return NOT_DONE_YET

    async def _handle(self, request: Request, state: _InflightState) -> None:
        request_id = getattr(request, "request_id", None) or f"{self.name}-{next(_request_counter)}"
        # The coroutine runs in its own copy of the context, so this does not leak to other requests.
        request_id_var.set(request_id)
        method = (request.method or b"").decode("latin-1").upper()
        try:
            status, body = await self._dispatch(request, method, state)
        except MatrixError as error:
            error_body = error.to_json()
            status, body = error.http_status, error_body
            if isinstance(error, _MethodNotAllowed):
                request.responseHeaders.setRawHeaders(b"Allow", [error.allow_header])
            if status == 429:
                _set_retry_after(request, error_body)
            if status >= 500:
                logger.warning("%s %s failed: %r", method, _loggable_path(request), error)
        except CancelledError:
            if state.disconnected:
                logger.info("%s %s cancelled: client disconnected", method, _loggable_path(request))
                return
            logger.error("%s %s: handler cancelled", method, _loggable_path(request), exc_info=True)
            status, body = 500, _internal_error_body()
        except Exception:
            logger.exception("%s %s: unhandled error", method, _loggable_path(request))
            status, body = 500, _internal_error_body()
        self._write_response(request, state, method, status, body)

    async def _dispatch(
        self, request: Request, method: str, state: _InflightState
    ) -> tuple[int, JsonBody]:
        if method == "OPTIONS":
            # The spec forbids running endpoint logic for OPTIONS; answer the pre-flight only.
            return 200, {}
        path = (request.path or b"").decode("latin-1")
        matched = self._match(method, path)
        if matched is None:
            raise MatrixError(404, Codes.UNRECOGNIZED, "Unrecognized request")
        route, path_args = matched
        if route.max_body_size is not None and _body_length(request) > route.max_body_size:
            raise MatrixError(413, Codes.TOO_LARGE, "Request body too large")
        state.cancellable = route.cancellable
        result = await route.handler(request, **path_args)
        if (
            not isinstance(result, tuple)
            or len(result) != 2
            or not isinstance(result[0], int)
            or not isinstance(result[1], (Mapping, list))
        ):
            raise TypeError(f"handler for {method} {path} returned {type(result).__name__}")
        return result

    def _write_response(
        self,
        request: Request,
        state: _InflightState,
        method: str,
        status: int,
        body: JsonBody,
    ) -> None:
        if state.disconnected or request.finished:
            logger.info("not responding to %s %s: connection closed", method, _loggable_path(request))
            return
        try:
            encoded = encode_json_body(body)
        except (TypeError, ValueError):
            logger.exception("%s %s: response is not JSON-encodable", method, _loggable_path(request))
            status, encoded = 500, encode_json_body(_internal_error_body())
        request.setResponseCode(status)
        headers = request.responseHeaders
        headers.setRawHeaders(b"Content-Type", [b"application/json"])
        headers.setRawHeaders(b"Content-Length", [b"%d" % (len(encoded),)])
        if not headers.hasHeader(b"Cache-Control"):
            headers.setRawHeaders(b"Cache-Control", [b"no-cache, no-store, must-revalidate"])
        add_cors_headers(request)
        _untyped(request).write(encoded)
        _untyped(request).finish()


class _MethodNotAllowed(MatrixError):
    """405 ``M_UNRECOGNIZED`` carrying the methods the path does accept."""

    def __init__(self, allowed: Iterable[str]) -> None:
        super().__init__(405, Codes.UNRECOGNIZED, "Unrecognized request method")
        methods = set(allowed) | {"OPTIONS"}
        if "GET" in methods:
            methods.add("HEAD")
        self.allow_header = ", ".join(sorted(methods)).encode("ascii")


MAX_PATH_PARAM_BYTES = 255
"""Longest path parameter accepted, decoded (issue 12). The spec bounds the identifiers in paths (user
IDs, room IDs/aliases, event IDs, event types, state keys, tags) at 255 bytes; client-chosen ones it
leaves open (transaction IDs, account data types, push rule IDs) get the same bound.
NOTSPEC: transaction IDs have no length limit in the spec."""


def _decode_path_param(raw: str) -> str:
    try:
        raw_bytes = unquote_to_bytes(raw)
        value = raw_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.INVALID_PARAM, "Path parameter is not valid UTF-8") from None
    if len(raw_bytes) > MAX_PATH_PARAM_BYTES:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Path parameter is longer than {MAX_PATH_PARAM_BYTES} bytes")
    if "\x00" in value:
        # One rule on both databases: PostgreSQL text cannot hold NUL (see storage.pool).
        raise MatrixError(400, Codes.INVALID_PARAM, "Path parameter contains a NUL character")
    return value


def _body_length(request: Request) -> int:
    content = request.content
    if content is None:
        return 0
    position = content.tell()
    length: int = content.seek(0, 2)
    content.seek(position)
    return length


def _set_retry_after(request: Request, body: Mapping[str, Any]) -> None:
    retry_after_ms = body.get("retry_after_ms")
    if isinstance(retry_after_ms, int) and not isinstance(retry_after_ms, bool) and retry_after_ms > 0:
        request.responseHeaders.setRawHeaders(b"Retry-After", [b"%d" % (math.ceil(retry_after_ms / 1000),)])


def _untyped(obj: object) -> Any:
    """Returns ``obj`` as Any: many Twisted web methods are unannotated, so calls go through this."""
    return obj


def _internal_error_body() -> JsonDict:
    return {"errcode": Codes.UNKNOWN.value, "error": "Internal server error"}


def _loggable_path(request: Request) -> str:
    """The request path without its query string (which may hold an access token)."""
    return (request.path or b"").decode("latin-1")
