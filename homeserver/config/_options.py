"""The machinery behind the config sections: typed options, YAML checking, defaults.

Theory of operation: every section is a frozen attrs class whose fields are declared with
:func:`option`, :func:`required_option` or :func:`section_option`. Each field carries, in its attrs
metadata, a :class:`ValueType` (how a YAML value is checked and converted), a one-paragraph
description (``doc``) and optionally a *contextual default* computed from the :class:`ParseContext`
(paths under ``server.data_dir``). :func:`parse_section` walks a YAML mapping against those fields,
rejecting unknown keys and naming the YAML path in every :class:`ConfigError`. The same metadata drives
the generated config file (``generate.py``) and ``docs/config.md``, so the three cannot drift apart.

Invariant: nothing here reads the environment or the clock; the only inputs are the YAML value and the
directory relative paths are resolved against.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from homeserver.config.errors import ConfigError

T = TypeVar("T")

_DOC = "doc"
_TYPE = "type"
_DEFAULT_DOC = "default_doc"
_CONTEXTUAL = "contextual_default"
_REQUIRED = "required"


@attrs.frozen
class ParseContext:
    """What relative paths and data-dir defaults are resolved against.

    Attributes:
        base_dir: the directory of the config file; relative paths in it are relative to this.
        data_dir: the resolved ``server.data_dir``.
    """

    base_dir: str
    data_dir: str


@attrs.frozen
class ValueType:
    """How one option's YAML value is checked and converted.

    Attributes:
        name: a short human description used in docs and in error messages ("a positive integer").
        parse: ``parse(value, path, ctx)`` returns the converted value or raises :class:`ConfigError`.
        section: for nested sections, the attrs class of the section (used by docs and generation).
        item: for lists, the type of each item.
    """

    name: str
    parse: Callable[[object, str, ParseContext], Any]
    section: type | None = None
    item: ValueType | None = None


def describe(value: object) -> str:
    """Renders a YAML value for an error message (``'ten'``, ``true``, ``a list``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    return repr(value)


def fail(path: str, expected: str, value: object) -> ConfigError:
    """Builds the standard "expected X, got Y" error for ``path``."""
    return ConfigError(f"expected {expected}, got {describe(value)}", path)


def option(
    default: Any,
    vtype: ValueType,
    doc: str,
    *,
    default_doc: str | None = None,
    contextual: Callable[[ParseContext], Any] | None = None,
    secret: bool = False,
) -> Any:
    """Declares an optional option with a default.

    Args:
        default: the value when the option is absent (and no contextual default applies).
        vtype: how YAML values are checked.
        doc: the description shown in docs and in the generated config.
        default_doc: how to show the default when it depends on the context ("DATA/media").
        contextual: computes the default from the :class:`ParseContext` when the key is absent.
        secret: hide the value from ``repr`` (tokens, passwords in URLs).

    Returns:
        An attrs field definition.
    """
    metadata = {_DOC: doc, _TYPE: vtype, _DEFAULT_DOC: default_doc, _CONTEXTUAL: contextual}
    return attrs.field(default=default, metadata=metadata, repr=_hidden if secret else True)


def required_option(vtype: ValueType, doc: str) -> Any:
    """Declares an option that must be present in the YAML (no default)."""
    return attrs.field(metadata={_DOC: doc, _TYPE: vtype, _REQUIRED: True})


def section_meta(cls: type, doc: str) -> dict[str, Any]:
    """The attrs metadata of a nested section field.

    Use as ``attrs.field(factory=Cls, metadata=section_meta(Cls, "..."))``, or with
    ``default=<instance>`` to give one section class different defaults in different places
    (per-action rate limits): options missing from the YAML take their value from that instance.
    """
    return {_DOC: doc, _TYPE: section_type(cls), _DEFAULT_DOC: None, _CONTEXTUAL: None}


def _hidden(_value: object) -> str:
    return "'<redacted>'"


@attrs.frozen
class OptionInfo:
    """Read-only view of one declared option, for docs and config generation."""

    name: str
    vtype: ValueType
    doc: str
    required: bool
    default: Any
    default_doc: str | None
    contextual: Callable[[ParseContext], Any] | None


def options_of(cls: type) -> list[OptionInfo]:
    """Lists the declared options of a section class, in declaration order."""
    result = []
    for field in attrs.fields(cls):
        meta = field.metadata
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]  # attrs.Factory is a class
            default = default.factory()
        result.append(
            OptionInfo(
                name=field.name,
                vtype=meta[_TYPE],
                doc=meta[_DOC],
                required=bool(meta.get(_REQUIRED, False)),
                default=None if default is attrs.NOTHING else default,
                default_doc=meta.get(_DEFAULT_DOC),
                contextual=meta.get(_CONTEXTUAL),
            )
        )
    return result


def join_path(parent: str, key: str) -> str:
    """``join_path("server", "port") == "server.port"``; an empty parent gives just the key."""
    return f"{parent}.{key}" if parent else key


def parse_section(
    cls: type[T], raw: object, path: str, ctx: ParseContext, defaults: object | None = None
) -> T:
    """Checks a YAML mapping against a section class and builds the section.

    Args:
        cls: the attrs section class.
        raw: the YAML value (``None`` means an empty section).
        path: the YAML path of the section, for error messages.
        ctx: what paths and contextual defaults resolve against.
        defaults: an instance of ``cls`` whose values fill options missing from the YAML (the class
            defaults when ``None``).

    Returns:
        The section instance.

    Raises:
        ConfigError: on unknown keys, missing required options or bad values.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise fail(path, "a mapping", raw)
    infos = options_of(cls)
    known = [info.name for info in infos]
    for key in raw:
        if not isinstance(key, str):
            raise ConfigError(f"option names must be strings, got {describe(key)}", path)
        if key not in known:
            raise unknown_key_error(key, known, path)
    kwargs: dict[str, Any] = {}
    for info in infos:
        child = join_path(path, info.name)
        base = getattr(defaults, info.name) if defaults is not None else info.default
        if info.vtype.section is not None:
            # Parsed even when absent, so contextual defaults inside it (paths under data_dir) apply.
            kwargs[info.name] = parse_section(info.vtype.section, raw.get(info.name), child, ctx, base)
        elif info.name in raw:
            kwargs[info.name] = info.vtype.parse(raw[info.name], child, ctx)
        elif info.required:
            raise ConfigError("required option is missing", child)
        elif info.contextual is not None:
            kwargs[info.name] = info.contextual(ctx)
        elif defaults is not None:
            kwargs[info.name] = base
    instance = cls(**kwargs)
    check = getattr(instance, "check", None)
    if callable(check):
        check(path)
    return instance


def unknown_key_error(key: str, known: Sequence[str], path: str) -> ConfigError:
    """The error for a key that is not a declared option, with a spelling hint when one is close."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown option{hint}", join_path(path, key))


# --- value types ---------------------------------------------------------------------------------


def _parse_bool(value: object, path: str, _ctx: ParseContext) -> bool:
    if not isinstance(value, bool):
        raise fail(path, "true or false", value)
    return value


BOOL = ValueType("boolean", _parse_bool)


def integer(minimum: int | None = None, maximum: int | None = None) -> ValueType:
    """An integer (booleans rejected) within ``[minimum, maximum]``."""
    if minimum == 1 and maximum is None:
        name = "a positive integer"
    elif minimum == 0 and maximum is None:
        name = "a non-negative integer"
    elif minimum is not None and maximum is not None:
        name = f"an integer between {minimum} and {maximum}"
    else:
        name = "an integer"

    def parse(value: object, path: str, _ctx: ParseContext) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(path, name, value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise fail(path, name, value)
        return value

    return ValueType(name, parse)


def positive_number(maximum: float | None = None) -> ValueType:
    """A finite number (integer or float) greater than zero, and at most ``maximum`` if given."""
    name = "a positive number" if maximum is None else f"a positive number up to {maximum:g}"

    def parse(value: object, path: str, _ctx: ParseContext) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(path, name, value)
        number = float(value)
        if not math.isfinite(number) or number <= 0 or (maximum is not None and number > maximum):
            raise fail(path, name, value)
        return number

    return ValueType(name, parse)


def string(pattern: str | None = None, name: str = "a non-empty string", secret: bool = False) -> ValueType:
    """A non-empty string, optionally matching ``pattern`` in full.

    With ``secret`` the offending value is never echoed in error messages.
    """
    regex = re.compile(pattern) if pattern else None

    def parse(value: object, path: str, _ctx: ParseContext) -> str:
        if not isinstance(value, str) or not value or (regex and not regex.fullmatch(value)):
            if secret:
                raise ConfigError(f"expected {name}", path)
            raise fail(path, name, value)
        return value

    return ValueType(name, parse)


def choice(*values: str, case_insensitive: bool = False) -> ValueType:
    """One of a fixed set of strings; with ``case_insensitive`` the result is the canonical spelling."""
    name = "one of " + ", ".join(f"'{v}'" for v in values)
    lookup = {(v.lower() if case_insensitive else v): v for v in values}

    def parse(value: object, path: str, _ctx: ParseContext) -> str:
        if isinstance(value, str):
            found = lookup.get(value.lower() if case_insensitive else value)
            if found is not None:
                return found
        raise fail(path, name, value)

    return ValueType(name, parse)


def resolve_path(value: str, ctx: ParseContext) -> str:
    """Makes a config path absolute, relative paths being relative to the config file's directory."""
    return os.path.normpath(os.path.join(ctx.base_dir, value))


def _parse_path(value: object, path: str, ctx: ParseContext) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise fail(path, "a file system path", value)
    return resolve_path(value, ctx)


PATH = ValueType("a path (relative to the config file)", _parse_path)


def optional(inner: ValueType) -> ValueType:
    """``inner`` or ``null``."""

    def parse(value: object, path: str, ctx: ParseContext) -> Any:
        return None if value is None else inner.parse(value, path, ctx)

    return ValueType(f"{inner.name}, or null", parse, item=inner.item)


_SIZE_RE = re.compile(r"(?i)\s*(\d+)\s*([kmg]?)(?:i?b)?\s*")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _parse_size(value: object, path: str, _ctx: ParseContext) -> int:
    name = "a positive size in bytes (an integer, or a string such as '512K', '50M', '1G')"
    if isinstance(value, bool):
        raise fail(path, name, value)
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE_RE.fullmatch(value)):
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    else:
        raise fail(path, name, value)
    if size <= 0:
        raise fail(path, name, value)
    return size


BYTE_SIZE = ValueType("size in bytes (or '512K', '50M', '1G')", _parse_size)


def list_of(item: ValueType) -> ValueType:
    """A YAML list whose items are each checked by ``item``; the result is a tuple."""

    def parse(value: object, path: str, ctx: ParseContext) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise fail(path, "a list", value)
        return tuple(item.parse(v, f"{path}[{i}]", ctx) for i, v in enumerate(value))

    return ValueType(f"list of {item.name}", parse, item=item)


def section_type(cls: type) -> ValueType:
    """A nested section parsed by :func:`parse_section`."""

    def parse(value: object, path: str, ctx: ParseContext) -> Any:
        return parse_section(cls, value, path, ctx)

    return ValueType("section", parse, section=cls)


def str_mapping(value_type: ValueType) -> ValueType:
    """A mapping from non-empty string keys to values of ``value_type`` (read-only result)."""

    def parse(value: object, path: str, ctx: ParseContext) -> Mapping[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise fail(path, "a mapping", value)
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"keys must be non-empty strings, got {describe(key)}", path)
            result[key] = value_type.parse(item, join_path(path, key), ctx)
        return MappingProxyType(result)

    return ValueType(f"mapping of names to {value_type.name}", parse)


def to_plain(value: object) -> object:
    """Converts a config value to plain YAML-able data (dicts, lists, scalars)."""
    cls: Any = type(value)
    if attrs.has(cls):
        return {f.name: to_plain(getattr(value, f.name)) for f in attrs.fields(cls)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value
