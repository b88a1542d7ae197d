"""The Client-Server API operations of the Matrix spec's OpenAPI files, with their $refs resolved.

The fuzz suite (``test_fuzz_api.py``) builds requests from these operations and validates answers
against their response schemas. The files are the in-repo copy in ``matrix_spec/`` (see its
README). Loading inlines every ``$ref`` (relative file paths with optional JSON-pointer fragments);
a reference that would recurse into itself is replaced by ``{}`` (any JSON), so the result is a
finite tree. ``example``/``examples`` members are dropped before resolving: they are documentation
and some of them ``$ref`` files that the copy does not carry.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SPEC_DIR = Path(__file__).resolve().parent / "matrix_spec" / "data" / "api" / "client-server"
METHODS = ("get", "put", "post", "delete")
_DOC_KEYS = frozenset({"example", "examples"})


@functools.cache
def _load_file(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _pointer(document: Any, fragment: str) -> Any:
    node = document
    for part in fragment.lstrip("/").split("/"):
        if part:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def resolve(node: Any, base: Path, stack: tuple[str, ...] = ()) -> Any:
    """Returns ``node`` with every ``$ref`` inlined (relative to the file ``base``).

    Raises:
        FileNotFoundError: a referenced file is missing from the copy.
        KeyError: a fragment names nothing.
    """
    if isinstance(node, list):
        return [resolve(item, base, stack) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        file_part, _, fragment = ref.partition("#")
        target_file = (base.parent / file_part).resolve() if file_part else base
        key = f"{target_file}#{fragment}"
        if key in stack:
            return {}  # a recursive schema: stop here, accept anything below
        target = _pointer(_load_file(target_file), fragment)
        resolved = resolve(target, target_file, (*stack, key))
        siblings = {k: v for k, v in node.items() if k != "$ref" and k not in _DOC_KEYS}
        if siblings and isinstance(resolved, dict):
            return {**resolved, **resolve(siblings, base, stack)}
        return resolved
    return {k: resolve(v, base, stack) for k, v in node.items() if k not in _DOC_KEYS}


@dataclass(frozen=True)
class Parameter:
    """A path, query or header parameter of an operation."""

    name: str
    location: str
    required: bool
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class Operation:
    """One method on one path of the Client-Server API.

    ``path`` is the full template (``/_matrix/client/v3/rooms/{roomId}/...``); ``responses`` maps a
    status code (``"200"``) to the JSON schema of its body, or ``None`` when it is not JSON.
    """

    operation_id: str
    method: str
    path: str
    source: str
    parameters: tuple[Parameter, ...]
    body_schema: Mapping[str, Any] | None
    body_is_json: bool
    responses: Mapping[str, Mapping[str, Any] | None] = field(hash=False)
    authenticated: bool
    auth_optional: bool
    deprecated: bool

    def path_parameters(self) -> tuple[Parameter, ...]:
        """The parameters that appear in the path template."""
        return tuple(p for p in self.parameters if p.location == "path")

    def query_parameters(self) -> tuple[Parameter, ...]:
        """The query-string parameters."""
        return tuple(p for p in self.parameters if p.location == "query")


def _base_path(document: Mapping[str, Any]) -> str:
    servers = document.get("servers") or [{}]
    variables = servers[0].get("variables", {})
    return str(variables.get("basePath", {}).get("default", "/_matrix/client/v3"))


def _json_schema(content: Mapping[str, Any] | None) -> tuple[bool, Mapping[str, Any] | None]:
    if not content:
        return False, None
    media = content.get("application/json")
    if media is None:
        return False, None
    return True, media.get("schema") or {}


def _operations_of(path: Path) -> Iterator[Operation]:
    document = resolve(_load_file(path), path)
    base = _base_path(document)
    for template, item in (document.get("paths") or {}).items():
        shared = item.get("parameters", [])
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = tuple(
                Parameter(p["name"], p["in"], bool(p.get("required", p["in"] == "path")), p.get("schema") or {})
                for p in [*shared, *op.get("parameters", [])]
                if p.get("in") in ("path", "query", "header")
            )
            body_json, body_schema = _json_schema((op.get("requestBody") or {}).get("content"))
            responses = {
                str(code): _json_schema(answer.get("content"))[1]
                for code, answer in (op.get("responses") or {}).items()
            }
            security = op.get("security") or []
            schemes = {name for requirement in security for name in requirement}
            yield Operation(
                operation_id=str(op.get("operationId", f"{method} {template}")),
                method=method.upper(),
                path=base + template.strip(),  # peeking_events.yaml spells "/events " to stay unique
                source=path.name,
                parameters=params,
                body_schema=body_schema,
                body_is_json=body_json,
                responses=responses,
                authenticated=bool(schemes & {"accessTokenBearer", "accessTokenQuery"}),
                auth_optional=any(not requirement for requirement in security),
                deprecated=bool(op.get("deprecated", False)),
            )


@functools.lru_cache(maxsize=1)
def load_operations() -> tuple[Operation, ...]:
    """Every Client-Server operation of the spec copy, sorted by path and method."""
    ops = [op for path in sorted(SPEC_DIR.glob("*.yaml")) for op in _operations_of(path)]
    return tuple(sorted(ops, key=lambda op: (op.path, op.method)))


@functools.lru_cache(maxsize=1)
def error_schema() -> Mapping[str, Any]:
    """The standard error body (``definitions/errors/error.yaml``): ``errcode`` required."""
    path = SPEC_DIR / "definitions" / "errors" / "error.yaml"
    schema: Mapping[str, Any] = resolve(_load_file(path), path)
    return schema


def dump(schema: Any) -> str:
    """A compact JSON rendering of a schema, for failure messages."""
    return json.dumps(schema, sort_keys=True)[:400]
