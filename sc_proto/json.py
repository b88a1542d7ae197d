"""Canonical JSON (spec appendices, "Canonical JSON"), a strict decoder and a fast encoder.

Encoding (:func:`encode_canonical_json`): object keys sorted by Unicode code point, no
insignificant whitespace, UTF-8 output without escaping non-ASCII, integers only within
±(2^53-1), no floats. The standard library's C encoder already produces exactly the spec's escapes
(``\\b \\t \\n \\f \\r \\" \\\\`` and lowercase ``\\u00XX`` for the other ASCII controls, nothing
else escaped), so the only extra work is a walk that rejects what Matrix forbids.

Decoding (:func:`decode_json`), theory of operation: the stdlib C scanner does the parsing, and
hooks reject what Matrix forbids as the values are built:

* ``parse_float`` fires for every number with a fraction or an exponent, ``parse_constant`` for
  ``NaN``/``Infinity``; both reject.
* ``parse_int`` checks the ±(2^53-1) range from the literal's length before converting.
* ``object_pairs_hook`` sees every object's key/value pairs and rejects duplicate keys.
* Nesting depth is checked *before* parsing, so a deep document never reaches the recursive C
  scanner: if the document has fewer opening brackets than the limit it cannot be too deep;
  otherwise escapes are dropped, strings are cut out by splitting on quotes, and the running
  bracket depth is computed with ``itertools.accumulate``, all at C speed.
* Lone UTF-16 surrogates can only enter through ``\\uD8xx``-style escapes, so the parsed value is
  checked for them only when such an escape appears in the text.

Errors are :class:`~sc_proto.errors.CanonicalJSONError`: ``M_NOT_JSON`` when the input is not
JSON at all, ``M_BAD_JSON`` when it is JSON but holds something Matrix forbids.
"""

from __future__ import annotations

import json as _json
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Any, NoReturn

from sc_proto.errors import CanonicalJSONError, Codes, LocalProtocolError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "MAX_SAFE_INTEGER",
    "decode_json",
    "decode_json_object",
    "encode_canonical_json",
    "encode_json",
]

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer Matrix JSON allows (and its negation the smallest)."""

DEFAULT_MAX_DEPTH = 100
"""Default limit on the nesting of arrays and objects accepted by :func:`decode_json`."""

# An integer literal of at most 15 characters is within ±(2^53-1) whatever its sign; one of more
# than 17 characters ("-" plus 16 digits) is outside it. Only lengths 16 and 17 need a comparison.
_SURELY_SAFE_INT_CHARS = 15
_MAX_SAFE_INT_CHARS = 17
# NOTSPEC: with strict_integers=False (room versions 1-5 may carry out-of-range integers) we still
# refuse absurdly long literals so that a peer cannot make us build huge integers.
_MAX_LAX_INT_CHARS = 100

# Backslash escapes occur only inside strings; once they are gone, quotes alternate open/close.
_ESCAPE_RE = re.compile(r"\\.", re.DOTALL)
_NON_BRACKETS_RE = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")


def _bad_json(message: str) -> CanonicalJSONError:
    return CanonicalJSONError(message, Codes.BAD_JSON)


def _not_json(message: str) -> CanonicalJSONError:
    return CanonicalJSONError(message, Codes.NOT_JSON)


# --------------------------------------------------------------------------------------------
# Encoding


def _mapping_to_dict(value: Any) -> Any:
    """``default`` hook of the stdlib encoder: read-only mappings encode like dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    raise _not_json(f"value of type {type(value).__name__} cannot be encoded as JSON")


_CANONICAL_ENCODER = _json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
    default=_mapping_to_dict,
)

_FAST_ENCODER = _json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    separators=(",", ":"),
    default=_mapping_to_dict,
)


def _check_canonical_value(value: Any) -> None:
    """Rejects floats, out-of-range integers and non-string keys anywhere in ``value``.

    Runs only after the stdlib encoder accepted ``value``, so ``value`` is known to be acyclic and
    made of JSON-encodable types; the walk is iterative, so depth costs no Python recursion.
    """
    pending: list[Any] = [(value,)]  # containers still to visit; the top level is wrapped
    while pending:
        item = pending.pop()
        if isinstance(item, Mapping):
            for key in item:
                if not isinstance(key, str):
                    raise _not_json("object keys must be strings")
            children: Any = item.values()
        else:
            children = item
        for child in children:
            if child is None or isinstance(child, (str, bool)):
                continue
            if isinstance(child, int):
                if not -MAX_SAFE_INTEGER <= child <= MAX_SAFE_INTEGER:
                    raise _bad_json("integer out of range")
            elif isinstance(child, float):
                raise _bad_json("floats are not allowed in canonical JSON")
            else:
                pending.append(child)


def _encode_with(encoder: _json.JSONEncoder, value: Any) -> str:
    try:
        return encoder.encode(value)
    except RecursionError:
        raise _bad_json("JSON nested too deeply") from None
    except (TypeError, ValueError) as e:
        # ValueError: NaN/Infinity or a circular reference; TypeError: unencodable keys.
        raise _not_json(f"value cannot be encoded as JSON: {e}") from None


def _to_utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad_json("string contains a lone UTF-16 surrogate") from None


def encode_canonical_json(value: Any) -> bytes:
    """Encodes ``value`` as canonical JSON bytes (for hashing and signing).

    Args:
        value: ``dict``/``Mapping`` (string keys), ``list``/``tuple``, ``str``, ``int``, ``bool``
            or ``None``, nested.

    Returns:
        The UTF-8 canonical encoding.

    Raises:
        CanonicalJSONError: ``value`` holds a float, an out-of-range integer, a non-string key, a
            string with a lone surrogate, a cycle, or a type JSON cannot represent.
    """
    text = _encode_with(_CANONICAL_ENCODER, value)
    _check_canonical_value(value)
    return _to_utf8(text)


def encode_json(value: Any) -> bytes:
    """Encodes ``value`` as compact UTF-8 JSON, fast and not canonical (for HTTP responses).

    Keys keep their insertion order and numbers are not range-checked; ``NaN``/``Infinity``,
    cycles and unencodable types are still refused.

    Raises:
        CanonicalJSONError: ``value`` cannot be represented as JSON.
    """
    return _to_utf8(_encode_with(_FAST_ENCODER, value))


# --------------------------------------------------------------------------------------------
# Decoding


def _object_from_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _bad_json("duplicate key in JSON object")
    return obj


def _reject_float(literal: str) -> NoReturn:
    raise _bad_json("floats (numbers with a fraction or exponent) are not allowed")


def _reject_constant(literal: str) -> NoReturn:
    raise _bad_json(f"{literal} is not allowed in JSON")


def _parse_safe_int(literal: str) -> int:
    if len(literal) <= _SURELY_SAFE_INT_CHARS:
        return int(literal)
    if len(literal) <= _MAX_SAFE_INT_CHARS:
        number = int(literal)
        if -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
            return number
    raise _bad_json("integer out of range")


def _parse_lax_int(literal: str) -> int:
    if len(literal) > _MAX_LAX_INT_CHARS:
        raise _bad_json("integer literal too long")
    return int(literal)


def _make_decoder(parse_int: Any, parse_float: Any = _reject_float) -> _json.JSONDecoder:
    return _json.JSONDecoder(
        object_pairs_hook=_object_from_pairs,
        parse_float=parse_float,
        parse_int=parse_int,
        parse_constant=_reject_constant,
        strict=True,
    )


_STRICT_DECODER = _make_decoder(_parse_safe_int)
_LAX_INT_DECODER = _make_decoder(_parse_lax_int)
_DECODERS = {
    (True, False): _STRICT_DECODER,
    (False, False): _LAX_INT_DECODER,
    (True, True): _make_decoder(_parse_safe_int, float),
    (False, True): _make_decoder(_parse_lax_int, float),
}


def _nesting_depth(text: str) -> int:
    """Returns the deepest array/object nesting of ``text`` (exact when ``text`` is valid JSON).

    Dropping every escape leaves no quote inside a string, so splitting on ``"`` alternates
    between text outside strings (even pieces) and string contents (odd pieces); only brackets
    outside strings count.
    """
    if "\\" in text:
        text = _ESCAPE_RE.sub("", text)
    outside = "".join(text.split('"')[::2])
    brackets = _NON_BRACKETS_RE.sub("", outside)
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def _to_text(data: bytes | bytearray | memoryview | str) -> str:
    if isinstance(data, str):
        if not data.isascii():
            try:
                data.encode("utf-8")
            except UnicodeEncodeError:
                raise _not_json("text contains a lone UTF-16 surrogate") from None
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise _not_json("JSON is not valid UTF-8") from None
    raise LocalProtocolError(f"decode_json needs bytes or str, not {type(data).__name__}")


def decode_json(
    data: bytes | bytearray | memoryview | str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    strict_integers: bool = True,
    allow_floats: bool = False,
) -> Any:
    """Parses Matrix JSON strictly.

    Args:
        data: the JSON document, as UTF-8 bytes or text.
        max_depth: deepest allowed nesting of arrays and objects (``[]`` has depth 1).
        strict_integers: reject integers outside ±(2^53-1). Pass ``False`` only for data from
            room versions 1-5, whose events may carry such integers (see the spec's warning).
        allow_floats: accept numbers with a fraction or exponent (as ``float``). Client-Server
            request bodies may carry them (account data, to-device content); anything that is
            hashed or signed must not, so the default refuses them. ``NaN``/``Infinity`` are
            always refused.

    Returns:
        The value: ``dict``, ``list``, ``str``, ``int``, ``float`` (only with ``allow_floats``),
        ``bool`` or ``None``, nested.

    Raises:
        CanonicalJSONError: ``M_NOT_JSON`` if ``data`` is not valid JSON in UTF-8 (including
            trailing garbage); ``M_BAD_JSON`` for floats, ``NaN``/``Infinity``, out-of-range
            integers, duplicate keys, lone surrogates or nesting deeper than ``max_depth``.
        LocalProtocolError: ``data`` is neither bytes nor str, or ``max_depth`` is negative.
    """
    if max_depth < 0:
        raise LocalProtocolError("max_depth must not be negative")
    text = _to_text(data)
    if text.count("[") + text.count("{") > max_depth and _nesting_depth(text) > max_depth:
        raise _bad_json(f"JSON nested deeper than {max_depth} levels")
    decoder = _DECODERS[(strict_integers, allow_floats)]
    try:
        value = decoder.decode(text)
    except _json.JSONDecodeError as e:
        raise _not_json(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise _bad_json("JSON nested too deeply") from None
    if "\\u" in text and _SURROGATE_ESCAPE_RE.search(text):
        # Re-encoding to UTF-8 fails exactly when a string holds an unpaired surrogate.
        _to_utf8(_encode_with(_FAST_ENCODER, value))
    return value


def decode_json_object(
    data: bytes | bytearray | memoryview | str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    strict_integers: bool = True,
    allow_floats: bool = False,
) -> dict[str, Any]:
    """Parses Matrix JSON strictly (as :func:`decode_json`) and requires a top-level object.

    Raises:
        CanonicalJSONError: as :func:`decode_json`; also ``M_BAD_JSON`` if the top-level value
            is not an object.
        LocalProtocolError: as :func:`decode_json`.
    """
    value = decode_json(data, max_depth=max_depth, strict_integers=strict_integers, allow_floats=allow_floats)
    if not isinstance(value, dict):
        raise _bad_json("JSON must be an object")
    return value
