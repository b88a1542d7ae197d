"""Fuzzing machinery for the Client-Server API: a session, request strategies, the answer checker.

Theory of operation: :class:`FuzzSession` registers two users on a real server, creates a room
with an alias, a message, a state event and a filter, and keeps their identifiers in a pool keyed
by the spec's path-parameter names (``roomId``, ``eventId``, ``userId``, ``deviceId``...).
:func:`request_strategy` turns one :class:`~tests.integration.openapi.Operation` into a Hypothesis
strategy of :class:`FuzzRequest`: path parameters drawn from the pool (valid) or from
:data:`HOSTILE_STRINGS` (NUL, 5,000 characters, lone surrogates, unicode, traversal...), query
parameters and JSON bodies from the operation's own schemas through :func:`from_schema` (a small
schema → strategy builder that mixes in wrong types at every level), sometimes malformed or
oversized bodies, and a valid, bogus or missing access token. :func:`check_answer` then says what
is wrong with an answer: any 5xx; a body that is not JSON; an error without ``errcode``; a body
that violates the operation's documented response schema; a 2xx without a valid token on an
operation that needs one. Deliberate differences from the spec live in :data:`ALLOWED` with a
``NOTSPEC`` reason each.

Nothing here talks to anything but the server under test on 127.0.0.1; the server runs with
federation disabled and every generated URL points at 127.0.0.1, so no input can make it reach out.
"""

from __future__ import annotations

import http.client
import json
import socket
import string
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import jsonschema
from hypothesis import strategies as st

from bench.common import http_json, register_user
from tests.integration.openapi import Operation, dump, error_schema

PASSWORD = "correct-horse-battery"
SERVER_NAME = "it.test"
HTTP_TIMEOUT_S = 15.0
MAX_DEPTH = 4
RAW_BODY_THRESHOLD = 256 * 1024

# Strings every string-typed input sometimes gets: each once broke a server somewhere (issue 12).
HOSTILE_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "a\x00b",
    "\x00",
    "x" * 5000,
    "é☃𝄞\u202e\ufeff",
    "\ud800",  # a lone surrogate: valid JSON escape, invalid UTF-8 in a path
    "../../../etc/passwd",
    "%00",
    "%",
    "!nope:it.test",
    "@nobody:it.test",
    "$nope",
    "#nope:it.test",
    "@a:b:c:d",
    "!x:[::1]:8448",
    "null",
    "{}",
    "-1",
    "9" * 40,
    "\n\r\t",
)
HOSTILE_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 2**53 + 1, 2**63, -(2**63) - 1, 1.5, -0.0, 1e308, "", "a\x00b",
    [], [None], {}, {"": None}, "x" * 5000,
)
LOOPBACK_URLS = ("http://127.0.0.1:9/_matrix/push/v1/notify", "https://127.0.0.1:9/", "not a url", "")
_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=24)
_KEY = st.text(alphabet=string.ascii_letters + "._-", min_size=1, max_size=12)

# --------------------------------------------------------------------------- allow-list

ALLOWED: Mapping[tuple[str, str], str] = {
    # (operationId, status) -> why our answer may differ from the response schema.
}


# --------------------------------------------------------------------------- requests


@dataclass
class FuzzRequest:
    """One request; ``body`` is raw bytes (already encoded, maybe malformed) or ``None``."""

    operation: str
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    token: str | None = None
    token_kind: str = "valid"

    def __repr__(self) -> str:
        body = None if self.body is None else self.body[:120]
        return f"FuzzRequest({self.method} {self.target()[:200]!r} body={body!r} auth={self.token_kind})"

    def target(self) -> str:
        """The request target (path and query string)."""
        return self.path + (("?" + urlencode(self.query)) if self.query else "")

    def to_corpus(self, session: FuzzSession) -> dict[str, Any]:
        """A JSON-able record of this request with the session's identifiers turned back into placeholders."""
        target = session.placeholders(self.target())
        body = None if self.body is None else session.placeholders(self.body.decode("utf-8", "surrogateescape"))
        return {
            "operation": self.operation,
            "method": self.method,
            "target": target,
            "headers": self.headers,
            "body": body,
            "auth": self.token_kind,
        }


@dataclass
class Answer:
    """Status, headers and raw body of one response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The decoded body (raises ValueError when it is not JSON)."""
        return json.loads(self.body)


class Client:
    """A keep-alive HTTP/1.1 client to one server; reconnects when the server closes."""

    def __init__(self, base_url: str) -> None:
        host, port = base_url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self._conn: http.client.HTTPConnection | None = None
        self.requests = 0

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT_S)
        return self._conn

    def close(self) -> None:
        """Closes the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, request: FuzzRequest) -> Answer:
        """Sends ``request``; one retry on a fresh connection when a kept-alive one was closed."""
        headers = {"Content-Type": "application/json", **request.headers}
        if request.token is not None:
            headers["Authorization"] = f"Bearer {request.token}"
        if request.body is not None and len(request.body) > RAW_BODY_THRESHOLD:
            # The server may answer 413 and close before reading it all: send on a socket of its own.
            self.requests += 1
            return raw_exchange(self.host, self.port, _raw_request(request, headers))
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(request.method, request.target(), body=request.body, headers=headers)
                response = conn.getresponse()
                body = response.read()
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
                continue
            self.requests += 1
            answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
            if answer.headers.get("connection", "").lower() == "close":
                self.close()
            return answer
        raise AssertionError("unreachable")


def _raw_request(request: FuzzRequest, headers: Mapping[str, str]) -> bytes:
    body = request.body or b""
    lines = [f"{request.method} {request.target()} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()] + [f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def raw_exchange(host: str, port: int, data: bytes) -> Answer:
    """Sends raw bytes on a new socket and reads until the server closes (send errors ignored)."""
    with socket.create_connection((host, port), timeout=HTTP_TIMEOUT_S) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    head, _, payload = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        payload = _dechunk(payload)
    return Answer(int(status_line.split()[1]), headers, payload)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


# --------------------------------------------------------------------------- the session


class FuzzSession:
    """Two users, a room with an alias, an event, a state event and a filter on one server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        suffix = uuid.uuid4().hex[:6]
        alice = register_user(base_url, f"fuzz{suffix}", PASSWORD)
        bob = register_user(base_url, f"peer{suffix}", PASSWORD)
        self.token: str = alice["access_token"]
        self.user_id: str = alice["user_id"]
        self.device_id: str = alice["device_id"]
        self.peer_token: str = bob["access_token"]
        self.peer_id: str = bob["user_id"]
        alias = f"fuzz{suffix}"
        room = self._call("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_alias_name": alias})
        self.room_id: str = room["room_id"]
        self.room_alias = f"#{alias}:{SERVER_NAME}"
        self._call("POST", f"/_matrix/client/v3/join/{quote(self.room_id)}", {}, token=self.peer_token)
        sent = self._call(
            "PUT",
            f"/_matrix/client/v3/rooms/{quote(self.room_id)}/send/m.room.message/t{suffix}",
            {"msgtype": "m.text", "body": "hello"},
        )
        self.event_id: str = sent["event_id"]
        self._call("PUT", f"/_matrix/client/v3/rooms/{quote(self.room_id)}/state/m.custom/k", {"v": 1})
        made = self._call(
            "POST", f"/_matrix/client/v3/user/{quote(self.user_id)}/filter", {"room": {"timeline": {"limit": 5}}}
        )
        self.filter_id: str = made["filter_id"]
        self.sync_token: str = self._call("GET", "/_matrix/client/v3/sync?timeout=0", None)["next_batch"]
        self.pool: dict[str, tuple[str, ...]] = {
            "roomId": (self.room_id,),
            "roomIdOrAlias": (self.room_id, self.room_alias),
            "roomAlias": (self.room_alias,),
            "eventId": (self.event_id,),
            "userId": (self.user_id, self.peer_id),
            "deviceId": (self.device_id,),
            "filterId": (self.filter_id,),
            "txnId": ("t1", uuid.uuid4().hex),
            "eventType": ("m.room.message", "m.custom", "m.room.topic"),
            "stateKey": ("", "k"),
            "type": ("m.custom", "m.fully_read", "m.tag"),
            "serverName": (SERVER_NAME,),
            "kind": ("global",),
            "ruleId": (".m.rule.master", "custom"),
            "relType": ("m.annotation", "m.thread"),
            "tag": ("u.work", "m.favourite"),
            "receiptType": ("m.read", "m.read.private"),
            "version": ("1",),
            "keyName": ("displayname", "avatar_url", "m.tz"),
            # Query parameters that carry tokens or JSON: real ones, and near misses.
            "since": (self.sync_token, self.sync_token + "0", "sc1_ad0_e999999999999999", "s72594_4483_1934"),
            "from": (self.sync_token, "t1-2_3", "-1"),
            "to": (self.sync_token,),
            "filter": (
                self.filter_id, '{"room": {"timeline": {"limit": 1}}}', '{"room": {"rooms": [5]}}',
                '{"limit": -1}', "[]", "{", '{"room": {"state": {"lazy_load_members": "yes"}}}', "999999",
            ),
        }

    def _call(self, method: str, path: str, body: Any, token: str | None = None) -> Any:
        status, answer = http_json(method, self.base_url + path, body, token=token or self.token)
        if status != 200:
            raise RuntimeError(f"fuzz setup: {method} {path} answered {status} {answer!r}")
        return answer

    def still_valid(self) -> bool:
        """Whether the main access token still works (a fuzzed request may have ended the session)."""
        status, _ = http_json("GET", self.base_url + "/_matrix/client/v3/account/whoami", token=self.token)
        return status == 200

    def placeholders(self, text: str) -> str:
        """``text`` with this session's identifiers (raw or percent-encoded) replaced by ``{name}``."""
        names = {
            self.room_id: "{roomId}", self.room_alias: "{roomAlias}", self.event_id: "{eventId}",
            self.user_id: "{userId}", self.peer_id: "{peerId}", self.device_id: "{deviceId}",
        }  # fmt: skip (the filter ID, a small number, would match too much: it is kept literally)
        for value, name in sorted(names.items(), key=lambda item: -len(item[0])):
            text = text.replace(quote(value, safe=""), name).replace(value, name)
        return text

    def expand(self, text: str) -> str:
        """The inverse of :meth:`placeholders` (values inserted percent-encoded in paths)."""
        values = {
            "{roomId}": self.room_id, "{roomAlias}": self.room_alias, "{eventId}": self.event_id,
            "{userId}": self.user_id, "{peerId}": self.peer_id, "{deviceId}": self.device_id,
        }  # fmt: skip
        for name, value in values.items():
            text = text.replace(name, quote(value, safe=""))
        return text


# --------------------------------------------------------------------------- schema -> strategy


def _string_for(name: str, schema: Mapping[str, Any], pool: Mapping[str, tuple[str, ...]]) -> st.SearchStrategy[Any]:
    options: list[st.SearchStrategy[Any]] = [_TEXT, st.sampled_from(HOSTILE_STRINGS)]
    lowered = name.lower()
    if "url" in lowered or "uri" in lowered:
        return st.sampled_from(LOOPBACK_URLS)  # never let an input point the server elsewhere
    known = [values for key, values in pool.items() if key.lower() == lowered.replace("_", "")]
    if known:
        options.insert(0, st.sampled_from(known[0]))
    if lowered in ("user_id", "user", "sender", "invitee"):
        options.insert(0, st.sampled_from(pool["userId"]))
    if lowered in ("room_id",):
        options.insert(0, st.sampled_from(pool["roomId"]))
    if lowered in ("event_id",):
        options.insert(0, st.sampled_from(pool["eventId"]))
    if "pattern" in schema or schema.get("format"):
        options.insert(0, _TEXT)
    return st.one_of(options)


def _object(schema: Mapping[str, Any], depth: int, pool: Mapping[str, tuple[str, ...]]) -> st.SearchStrategy[Any]:
    props: Mapping[str, Any] = schema.get("properties") or {}
    required = [k for k in schema.get("required", []) if k in props]
    fixed = {k: from_schema(props[k], depth + 1, pool, k) for k in required}
    optional = {k: from_schema(v, depth + 1, pool, k) for k, v in props.items() if k not in required}
    base = st.fixed_dictionaries(fixed, optional=optional)
    extra_schema = schema.get("additionalProperties")
    if not isinstance(extra_schema, dict) and schema.get("patternProperties"):
        extra_schema = next(iter(schema["patternProperties"].values()))
    if isinstance(extra_schema, dict) and depth < MAX_DEPTH:
        extra = st.dictionaries(_KEY, from_schema(extra_schema, depth + 1, pool, "value"), max_size=2)
        return st.tuples(base, extra).map(lambda pair: {**pair[1], **pair[0]})
    return base


def from_schema(
    schema: Mapping[str, Any], depth: int, pool: Mapping[str, tuple[str, ...]], name: str = ""
) -> st.SearchStrategy[Any]:
    """A strategy of values that mostly fit ``schema`` and sometimes do not (wrong type, hostile value).

    Args:
        schema: a resolved JSON schema (OpenAPI 3.1 flavour).
        depth: nesting depth so far; below :data:`MAX_DEPTH` objects and arrays stop growing.
        pool: valid identifiers by path-parameter name.
        name: the property name this value goes under (steers identifiers and URLs).
    """
    valid = _valid(schema, depth, pool, name)
    hostile = st.sampled_from(HOSTILE_VALUES)
    # About one value in eight is of a wrong type (one_of draws its branches evenly).
    return st.one_of(valid, valid, valid, valid, valid, valid, valid, hostile)


def _valid(
    schema: Mapping[str, Any], depth: int, pool: Mapping[str, tuple[str, ...]], name: str
) -> st.SearchStrategy[Any]:
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return st.one_of([_valid(sub, depth, pool, name) for sub in schema[key]])
    if "allOf" in schema:
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for sub in schema["allOf"]:
            merged["properties"].update(sub.get("properties") or {})
            merged["required"] += sub.get("required", [])
            if "type" in sub:
                merged["type"] = sub["type"]
        return _valid(merged, depth, pool, name)
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([_valid({**schema, "type": k}, depth, pool, name) for k in kind])
    if depth >= MAX_DEPTH:
        return st.one_of(st.none(), st.integers(-5, 5), _TEXT)
    if kind == "object" or (kind is None and "properties" in schema):
        return _object(schema, depth, pool)
    if kind == "array":
        items = schema.get("items") or {}
        return st.lists(from_schema(items, depth + 1, pool, name), max_size=3)
    if kind == "string":
        return _string_for(name, schema, pool)
    if kind == "integer":
        return st.one_of(st.integers(-10, 100), st.sampled_from([2**31, 2**53, 2**63 - 1, 2**64, -(2**63)]))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.recursive(
        st.none() | st.booleans() | st.integers(-5, 5) | _TEXT,
        lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_KEY, inner, max_size=2),
        max_leaves=4,
    )


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


def _encode_path_value(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _encode_query_value(value: str) -> str:
    # urlencode handles the quoting; lone surrogates become their UTF-8-like bytes.
    return value.encode("utf-8", "surrogatepass").decode("latin-1")


# Queries the fuzzer must not let wait: long-poll timeouts are clamped to (almost) nothing.
_CLAMPED = {"timeout": st.sampled_from(["0", "1", "-1", "abc", "1.5", ""])}
_MALFORMED_BODIES: tuple[bytes, ...] = (
    b"{not json", b"\xff\xfe", b"", b'{"a": NaN}', b'{"a": 1e99999}', b"[]", b"null", b'"string"', b"1",
    b"[" * 50_000 + b"]" * 50_000, b'{"a": "\\ud800"}', b'{"a": 1, "a": 2}', b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
)
_HUGE_BODY = b'{"k": "' + b"x" * (2 * 1024 * 1024) + b'"}'


def request_strategy(op: Operation, session: FuzzSession) -> st.SearchStrategy[FuzzRequest]:
    """Requests for ``op``: valid or hostile parameters, a schema body or garbage, any auth state."""
    pool = session.pool
    path_params = {
        p.name: st.one_of(
            st.sampled_from(pool[p.name]) if p.name in pool else _TEXT,
            st.sampled_from(pool[p.name]) if p.name in pool else _TEXT,
            st.sampled_from(HOSTILE_STRINGS),
        )
        for p in op.path_parameters()
    }
    query_params = {
        p.name: _CLAMPED[p.name] if p.name in _CLAMPED else from_schema(p.schema, 1, pool, p.name).map(_param_value)
        for p in op.query_parameters()
    }
    required_query = {p.name for p in op.query_parameters() if p.required or p.name in _CLAMPED}
    if op.body_schema is not None:
        schema_body = from_schema(op.body_schema, 0, pool).map(lambda v: json.dumps(v).encode())
        body: st.SearchStrategy[bytes | None] = st.one_of(
            schema_body, schema_body, schema_body, schema_body, schema_body, st.sampled_from((*_MALFORMED_BODIES, _HUGE_BODY))
        )
    elif op.method in ("PUT", "POST"):
        body = st.one_of(st.just(b"{}"), st.sampled_from(_MALFORMED_BODIES))
    else:
        body = st.none()
    tokens = st.sampled_from(["valid"] * 8 + ["none", "bogus"])

    @st.composite
    def build(draw: st.DrawFn) -> FuzzRequest:
        path = op.path
        for name, strategy in path_params.items():
            path = path.replace("{" + name + "}", _encode_path_value(draw(strategy)))
        query: dict[str, str] = {}
        for name, strategy in query_params.items():
            if name in required_query or draw(st.booleans()):
                query[name] = _encode_query_value(draw(strategy))
        kind = draw(tokens)
        token = {"valid": session.token, "none": None, "bogus": "syt_bogus_" + "x" * 20}[kind]
        return FuzzRequest(op.operation_id, op.method, path, query, {}, draw(body), token, kind)

    return build()


# --------------------------------------------------------------------------- checking answers

UNKNOWN_ENDPOINT = "unknown-endpoint"
TOKEN_ERRORS = frozenset({"M_MISSING_TOKEN", "M_UNKNOWN_TOKEN"})
_validators: dict[int, jsonschema.protocols.Validator] = {}


def _validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    key = id(schema)
    if key not in _validators:
        _validators[key] = jsonschema.Draft202012Validator(schema)
    return _validators[key]


def schema_errors(schema: Mapping[str, Any], value: Any) -> list[str]:
    """Human-readable violations of ``schema`` by ``value`` (at most three)."""
    errors = sorted(_validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}" for e in errors[:3]]


def is_unrecognized(answer: Answer) -> bool:
    """Whether the server does not implement the path/method (404 or 405 ``M_UNRECOGNIZED``)."""
    if answer.status not in (404, 405):
        return False
    try:
        body = answer.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("errcode") == "M_UNRECOGNIZED"


def check_answer(op: Operation | None, request: FuzzRequest, answer: Answer) -> list[str]:
    """Everything wrong with ``answer`` to ``request`` (empty when it is acceptable).

    Args:
        op: the spec operation, or ``None`` for an unknown endpoint (only the error rules apply).
        request: what was sent.
        answer: what came back.
    """
    problems: list[str] = []
    status = answer.status
    if status >= 500:
        problems.append(f"server error {status}")
    documented = op.responses if op is not None else {}
    schema = documented.get(str(status))
    json_expected = status >= 400 or schema is not None or (op is not None and str(status) not in documented)
    if 300 <= status < 400 or (not json_expected and not answer.body):
        return problems
    if op is not None and str(status) in documented and schema is None and status < 400:
        return problems  # a documented non-JSON answer (media download, redirects)
    try:
        body = answer.json()
    except ValueError:
        return [*problems, f"{status} body is not JSON: {answer.body[:80]!r}"]
    if status == 401 and isinstance(body, dict) and body.get("errcode") in TOKEN_ERRORS:
        schema = None  # a refused token is the standard 401, not the operation's (UIA) 401 body
    allowed = op is not None and (op.operation_id, str(status)) in ALLOWED
    if status >= 400:
        if not isinstance(body, dict) or not isinstance(body.get("errcode"), str):
            if not (schema is not None and status == 401):  # UIA 401s carry flows, not always errcode
                problems.append(f"{status} error body without errcode: {dump(body)}")
    if allowed:
        return problems
    if schema is not None:
        problems += [f"{status} violates the response schema: {e}" for e in schema_errors(schema, body)]
    elif status < 300 and op is not None:
        problems.append(f"undocumented success status {status}")
    elif status >= 400:
        problems += [f"{status} violates the error schema: {e}" for e in schema_errors(error_schema(), body)]
    if op is not None and 200 <= status < 300 and request.token_kind != "valid":
        if op.authenticated and not op.auth_optional:
            problems.append(f"{status} without a valid access token ({request.token_kind})")
    return problems


@dataclass
class Tally:
    """What one fuzz run exercised and found."""

    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    operations: set[str] = field(default_factory=set)
    implemented: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[tuple[dict[str, Any], int, list[str]]] = field(default_factory=list)
    sessions_renewed: int = 0

    def record(self, op_id: str, answer: Answer) -> None:
        """Counts one answered request."""
        self.requests += 1
        if op_id != UNKNOWN_ENDPOINT:
            self.operations.add(op_id)
        self.statuses[answer.status] = self.statuses.get(answer.status, 0) + 1
        # 413 comes from the body-size check before routing, so it says nothing about the route.
        if not is_unrecognized(answer) and answer.status != 413:
            self.implemented.add(op_id)

    def summary(self, label: str, total_ops: int) -> str:
        """One line for the test output."""
        elapsed = time.monotonic() - self.started
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"fuzz[{label}]: {self.requests} requests, {len(self.operations)}/{total_ops} spec operations "
            f"exercised ({len(self.implemented)} implemented), {elapsed:.1f} s, {len(self.failures)} failures, "
            f"sessions renewed {self.sessions_renewed}; statuses {{{statuses}}}"
        )
