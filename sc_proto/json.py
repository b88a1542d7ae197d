"""Canonical JSON (spec appendices, "Canonical JSON") and a strict decoder.

Encoding: object keys sorted by Unicode code point, no insignificant whitespace, UTF-8 output
without escaping non-ASCII, integers only within ±(2^53−1), no floats.
"""

from __future__ import annotations

import json as _json
from typing import Any

from sc_proto.errors import CanonicalJSONError

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer Matrix JSON allows (and its negation the smallest)."""

_ENCODER = _json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
)


def _check_value(value: Any, depth: int = 0) -> None:
    if depth > 1000:
        raise CanonicalJSONError("JSON nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJSONError(f"integer out of range: {value}")
        return
    if isinstance(value, float):
        raise CanonicalJSONError("floats are not allowed in canonical JSON")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJSONError("object keys must be strings")
            _check_value(item, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_value(item, depth + 1)
        return
    # Mappings that are not dicts (e.g. MappingProxyType / frozendict) are accepted.
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        _check_value(dict(value), depth)
        return
    raise CanonicalJSONError(f"value of type {type(value).__name__} cannot be encoded as JSON")


def _default(value: Any) -> Any:
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return dict(value)
    raise CanonicalJSONError(f"value of type {type(value).__name__} cannot be encoded as JSON")


def encode_canonical_json(value: Any) -> bytes:
    """Encodes ``value`` as canonical JSON bytes.

    Raises:
        CanonicalJSONError: ``value`` holds a float, an out-of-range integer, a non-string key or a
            type JSON cannot represent.
    """
    _check_value(value)
    encoder = _json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), default=_default
    )
    return encoder.encode(value).encode("utf-8")
