"""Request parsing helpers for servlets: JSON bodies, query parameters and body fields.

Every helper raises :class:`sc_proto.errors.MatrixError` with status 400 on bad input, never a bare
``KeyError``/``TypeError``/``ValueError``:

* a body that is not valid UTF-8 JSON, or not a JSON object: ``M_NOT_JSON``;
* a required query parameter or body field that is absent: ``M_MISSING_PARAM``;
* a query parameter or body field of the wrong type or value: ``M_INVALID_PARAM`` (the spec's
  example for this code is "expected an integer and instead received a string");
* JSON that Matrix forbids (floats, ``NaN``, duplicate keys, integers outside ±(2^53-1)):
  ``M_BAD_JSON``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, overload

from twisted.web.server import Request

from sc_proto.errors import Codes, MatrixError
from sc_proto.json import decode_json

JsonDict = dict[str, Any]

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer Matrix JSON allows (and its negation the smallest)."""


# ---------------------------------------------------------------------- JSON bodies


def read_body(request: Request) -> bytes:
    """Returns the whole request body (empty if there is none)."""
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read()
    content.seek(0)
    return data


def decode_json_body(body: bytes) -> Any:
    """Decodes a request body as strict Matrix JSON (:func:`sc_proto.json.decode_json`).

    ``NaN``/``Infinity``, duplicate keys and integers outside ±(2^53-1) are refused. Floats are
    accepted here (clients may send them in account data or to-device content); code that turns a
    body into a signed event checks canonical-JSON rules itself.

    Raises:
        MatrixError: 400 ``M_NOT_JSON`` (not UTF-8 JSON) or ``M_BAD_JSON`` (JSON Matrix forbids).
    """
    try:
        return decode_json(body, allow_floats=True)
    except MatrixError as error:
        code = error.errcode if error.errcode in (Codes.NOT_JSON, Codes.BAD_JSON) else Codes.NOT_JSON
        raise MatrixError(400, code, error.message) from None
    except (ValueError, RecursionError):
        raise MatrixError(400, Codes.NOT_JSON, "Content is not valid JSON") from None


def parse_json_value_from_request(request: Request, allow_empty: bool = False) -> Any:
    """Parses the request body as any JSON value.

    Args:
        request: the request.
        allow_empty: return None for an empty body instead of failing.

    Raises:
        MatrixError: 400 ``M_NOT_JSON`` for an empty (unless allowed) or malformed body.
    """
    body = read_body(request)
    if not body.strip():
        if allow_empty:
            return None
        raise MatrixError(400, Codes.NOT_JSON, "Content not JSON")
    return decode_json_body(body)


def parse_json_object_from_request(request: Request, allow_empty: bool = False) -> JsonDict:
    """Parses the request body as a JSON object.

    Args:
        request: the request.
        allow_empty: treat an empty body as ``{}`` (for endpoints whose body is optional).

    Raises:
        MatrixError: 400 ``M_NOT_JSON`` for an empty (unless allowed) or malformed body, or a JSON
            value that is not an object.
    """
    value = parse_json_value_from_request(request, allow_empty=allow_empty)
    if value is None and allow_empty:
        return {}
    if not isinstance(value, dict):
        raise MatrixError(400, Codes.NOT_JSON, "Content must be a JSON object")
    return value


# ---------------------------------------------------------------------- query parameters


def _raw_query_value(request: Request, name: str) -> bytes | None:
    args = request.args or {}
    values = args.get(name.encode("ascii"))
    if not values:
        return None
    first: bytes = values[0]
    return first


def _query_text(request: Request, name: str) -> str | None:
    raw = _raw_query_value(request, name)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} is not valid UTF-8") from None


def _missing(name: str) -> MatrixError:
    return MatrixError(400, Codes.MISSING_PARAM, f"Missing required query parameter {name!r}")


@overload
def parse_string(
    request: Request,
    name: str,
    default: str,
    required: bool = False,
    allowed_values: Collection[str] | None = None,
) -> str: ...


@overload
def parse_string(
    request: Request,
    name: str,
    default: None = None,
    *,
    required: Literal[True],
    allowed_values: Collection[str] | None = None,
) -> str: ...


@overload
def parse_string(
    request: Request,
    name: str,
    default: None = None,
    required: bool = False,
    allowed_values: Collection[str] | None = None,
) -> str | None: ...


def parse_string(
    request: Request,
    name: str,
    default: str | None = None,
    required: bool = False,
    allowed_values: Collection[str] | None = None,
) -> str | None:
    """Returns a string query parameter (the first if repeated).

    Args:
        request: the request.
        name: parameter name.
        default: value when absent (ignored if ``required``).
        required: fail with ``M_MISSING_PARAM`` when absent.
        allowed_values: if given, the only accepted values.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM`` or ``M_INVALID_PARAM``.
    """
    value = _query_text(request, name)
    if value is None:
        if required:
            raise _missing(name)
        return default
    if allowed_values is not None and value not in allowed_values:
        allowed = ", ".join(sorted(allowed_values))
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be one of: {allowed}")
    return value


def parse_strings(request: Request, name: str) -> list[str]:
    """Returns every value of a repeated query parameter (``?a=1&a=2``), possibly none.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` if a value is not valid UTF-8.
    """
    values = (request.args or {}).get(name.encode("ascii"), [])
    try:
        return [value.decode("utf-8") for value in values]
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} is not valid UTF-8") from None


@overload
def parse_integer(
    request: Request,
    name: str,
    default: int,
    required: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int: ...


@overload
def parse_integer(
    request: Request,
    name: str,
    default: None = None,
    *,
    required: Literal[True],
    minimum: int | None = None,
    maximum: int | None = None,
) -> int: ...


@overload
def parse_integer(
    request: Request,
    name: str,
    default: None = None,
    required: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None: ...


def parse_integer(
    request: Request,
    name: str,
    default: int | None = None,
    required: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """Returns an integer query parameter (decimal digits with an optional leading ``-``).

    Args:
        request: the request.
        name: parameter name.
        default: value when absent (ignored if ``required``).
        required: fail with ``M_MISSING_PARAM`` when absent.
        minimum: smallest accepted value.
        maximum: largest accepted value.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM``, or ``M_INVALID_PARAM`` for a non-integer or
            out-of-range value.
    """
    text = _query_text(request, name)
    if text is None:
        if required:
            raise _missing(name)
        return default
    digits = text[1:] if text.startswith("-") else text
    # str.isdigit accepts non-ASCII digits; Matrix integers are ASCII. 16 digits covers 2^53.
    if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 16:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be an integer")
    value = int(text)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} is out of range")
    if minimum is not None and value < minimum:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be <= {maximum}")
    return value


@overload
def parse_boolean(request: Request, name: str, default: bool, required: bool = False) -> bool: ...


@overload
def parse_boolean(
    request: Request, name: str, default: None = None, *, required: Literal[True]
) -> bool: ...


@overload
def parse_boolean(
    request: Request, name: str, default: None = None, required: bool = False
) -> bool | None: ...


def parse_boolean(
    request: Request, name: str, default: bool | None = None, required: bool = False
) -> bool | None:
    """Returns a boolean query parameter, spelled ``true`` or ``false`` as the spec does.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM``, or ``M_INVALID_PARAM`` for any other spelling.
    """
    text = _query_text(request, name)
    if text is None:
        if required:
            raise _missing(name)
        return default
    if text == "true":
        return True
    if text == "false":
        return False
    raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be 'true' or 'false'")


# ---------------------------------------------------------------------- body fields


def _field_missing(key: str) -> MatrixError:
    return MatrixError(400, Codes.MISSING_PARAM, f"Missing required field {key!r}")


def _field_invalid(key: str, expected: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, f"Field {key!r} must be {expected}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_object(value: object) -> bool:
    return isinstance(value, dict)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _required_field(body: Mapping[str, Any], key: str, check: Callable[[object], bool], expected: str) -> Any:
    """``body[key]``, which must be present and pass ``check`` (400 otherwise)."""
    if key not in body:
        raise _field_missing(key)
    value = body[key]
    if not check(value):
        raise _field_invalid(key, expected)
    return value


def _optional_field(
    body: Mapping[str, Any], key: str, check: Callable[[object], bool], expected: str, default: Any
) -> Any:
    """``body[key]`` if present and not null (it must then pass ``check``), else ``default``."""
    value = body.get(key)
    if value is None:
        return default
    if not check(value):
        raise _field_invalid(key, expected)
    return value


def require_str(body: Mapping[str, Any], key: str) -> str:
    """Returns ``body[key]``, which must be a string.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM`` if absent, ``M_INVALID_PARAM`` if not a string.
    """
    value: str = _required_field(body, key, _is_str, "a string")
    return value


def optional_str(body: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    """Returns ``body[key]`` if present and not null (it must then be a string), else ``default``.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` if present but not a string.
    """
    value: str | None = _optional_field(body, key, _is_str, "a string", default)
    return value


def require_int(
    body: Mapping[str, Any], key: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Returns ``body[key]``, which must be an integer (not a boolean) within the bounds.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM`` if absent, ``M_INVALID_PARAM`` if not an integer or
            out of bounds.
    """
    if key not in body:
        raise _field_missing(key)
    return _checked_int(key, body[key], minimum, maximum)


def optional_int(
    body: Mapping[str, Any],
    key: str,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """Returns ``body[key]`` if present and not null (an integer within bounds), else ``default``.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` if present but not a valid integer.
    """
    value = body.get(key)
    if value is None:
        return default
    return _checked_int(key, value, minimum, maximum)


def _checked_int(key: str, value: object, minimum: int | None, maximum: int | None) -> int:
    if not _is_int(value):
        raise _field_invalid(key, "an integer")
    assert isinstance(value, int)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise _field_invalid(key, "within the JSON integer range")
    if minimum is not None and value < minimum:
        raise _field_invalid(key, f">= {minimum}")
    if maximum is not None and value > maximum:
        raise _field_invalid(key, f"<= {maximum}")
    return value


def require_bool(body: Mapping[str, Any], key: str) -> bool:
    """Returns ``body[key]``, which must be a boolean.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM`` if absent, ``M_INVALID_PARAM`` if not a boolean.
    """
    value: bool = _required_field(body, key, _is_bool, "a boolean")
    return value


def optional_bool(body: Mapping[str, Any], key: str, default: bool | None = None) -> bool | None:
    """Returns ``body[key]`` if present and not null (it must then be a boolean), else ``default``.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` if present but not a boolean.
    """
    value: bool | None = _optional_field(body, key, _is_bool, "a boolean", default)
    return value


def require_object(body: Mapping[str, Any], key: str) -> JsonDict:
    """Returns ``body[key]``, which must be a JSON object.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM`` if absent, ``M_INVALID_PARAM`` if not an object.
    """
    value: JsonDict = _required_field(body, key, _is_object, "an object")
    return value


def optional_object(body: Mapping[str, Any], key: str) -> JsonDict | None:
    """Returns ``body[key]`` if present and not null (it must then be an object), else None.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` if present but not an object.
    """
    value: JsonDict | None = _optional_field(body, key, _is_object, "an object", None)
    return value


def require_str_list(body: Mapping[str, Any], key: str) -> list[str]:
    """Returns ``body[key]``, which must be a list of strings.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM`` if absent, ``M_INVALID_PARAM`` otherwise.
    """
    value: list[str] = _required_field(body, key, _is_str_list, "a list of strings")
    return value


def optional_str_list(body: Mapping[str, Any], key: str) -> list[str] | None:
    """Returns ``body[key]`` if present and not null (a list of strings), else None.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` if present but not a list of strings.
    """
    value: list[str] | None = _optional_field(body, key, _is_str_list, "a list of strings", None)
    return value
