"""Sync filters (spec client-server-api, "Filtering"), parsed once into typed, frozen values.

A filter arrives as JSON (inline in ``/sync?filter={...}`` or stored through the filter API) and is
parsed by :func:`parse_sync_filter` into a :class:`SyncFilter`. Parsing is lenient about what the spec
leaves open (unknown keys are ignored, ``null`` counts as absent) and strict about types: a field the
spec defines with the wrong JSON type is a 400 ``M_BAD_JSON``.

Matching follows the spec: ``not_*`` lists win over the inclusive lists; an absent inclusive list
includes everything, an empty one includes nothing; ``types``/``not_types`` entries may use ``*`` as
a wildcard for any sequence of characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sc_proto.errors import Codes, MatrixError

DEFAULT_TIMELINE_LIMIT = 10
"""Timeline events per room when the filter does not say (spec: servers pick a default)."""

MAX_TIMELINE_LIMIT = 200
"""Largest timeline limit honoured; larger values are clamped (spec: servers impose a maximum)."""


def _bad(path: str, expected: str) -> MatrixError:
    return MatrixError(400, Codes.BAD_JSON, f"Invalid filter: '{path}' must be {expected}")


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def type_matches(event_type: str, patterns: Sequence[str]) -> bool:
    """Whether ``event_type`` matches one of ``patterns`` (``*`` matches any sequence)."""
    for pattern in patterns:
        if pattern == event_type or ("*" in pattern and _glob(pattern).fullmatch(event_type)):
            return True
    return False


def _str_list(obj: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"{path}{key}", "a list of strings")
    return tuple(value)


def _bool(obj: Mapping[str, Any], key: str, path: str, default: bool | None) -> bool | None:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(f"{path}{key}", "a boolean")
    return value


def _object(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"{path}{key}", "an object")
    return value


@dataclass(frozen=True)
class EventFilter:
    """The spec's ``EventFilter``: ``limit``, ``types``, ``not_types``, ``senders``, ``not_senders``."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()

    def matches(self, event_type: str, sender: str | None) -> bool:
        """Whether an event of ``event_type`` from ``sender`` passes (sender None: not checked)."""
        if self.not_types and type_matches(event_type, self.not_types):
            return False
        if self.types is not None and not type_matches(event_type, self.types):
            return False
        if sender is not None:
            if sender in self.not_senders:
                return False
            if self.senders is not None and sender not in self.senders:
                return False
        return True


@dataclass(frozen=True)
class RoomEventFilter(EventFilter):
    """The spec's ``RoomEventFilter``: an :class:`EventFilter` plus rooms and lazy-loading flags."""

    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    contains_url: bool | None = None
    unread_thread_notifications: bool = False
    """Per-thread notification counts in ``/sync`` (spec "Receiving notifications")."""

    def room_allowed(self, room_id: str) -> bool:
        """Whether events of ``room_id`` pass the ``rooms``/``not_rooms`` lists."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def matches_event(self, room_id: str, event_type: str, sender: str, content: Mapping[str, Any]) -> bool:
        """Whether an event passes every criterion of this filter."""
        if not self.room_allowed(room_id) or not self.matches(event_type, sender):
            return False
        if self.contains_url is not None:
            has_url = isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True


@dataclass(frozen=True)
class SyncFilter:
    """A whole sync filter (the spec's ``Filter``).

    Attributes:
        event_fields: dot-separated paths of the event fields to keep, or None for all.
        event_format: ``client`` or ``federation``.
        presence: filters presence events.
        account_data: filters global account data.
        rooms: the room IDs to include (None: all).
        not_rooms: room IDs to exclude (wins over ``rooms``).
        include_leave: include rooms the user has left in an initial sync.
        timeline: filters room timelines.
        state: filters room state (and carries the lazy-loading flags).
        ephemeral: filters ephemeral room events.
        room_account_data: filters per-room account data.
    """

    event_fields: tuple[str, ...] | None = None
    event_format: str = "client"
    presence: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    include_leave: bool = False
    timeline: RoomEventFilter = field(default_factory=RoomEventFilter)
    state: RoomEventFilter = field(default_factory=RoomEventFilter)
    ephemeral: RoomEventFilter = field(default_factory=RoomEventFilter)
    room_account_data: RoomEventFilter = field(default_factory=RoomEventFilter)

    def room_allowed(self, room_id: str) -> bool:
        """Whether ``room_id`` passes the top-level ``room.rooms``/``room.not_rooms`` lists."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    @property
    def timeline_limit(self) -> int:
        """The number of timeline events per room (default and cap applied)."""
        limit = self.timeline.limit
        if limit is None:
            return DEFAULT_TIMELINE_LIMIT
        return min(limit, MAX_TIMELINE_LIMIT)


def _limit(obj: Mapping[str, Any], path: str) -> int | None:
    value = obj.get("limit")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(f"{path}limit", "a non-negative integer")
    return value


def _event_filter_args(obj: Mapping[str, Any], path: str) -> dict[str, Any]:
    return {
        "limit": _limit(obj, path),
        "types": _str_list(obj, "types", path),
        "not_types": _str_list(obj, "not_types", path) or (),
        "senders": _str_list(obj, "senders", path),
        "not_senders": _str_list(obj, "not_senders", path) or (),
    }


def parse_event_filter(obj: Mapping[str, Any], path: str = "") -> EventFilter:
    """Parses an ``EventFilter`` object (``path`` prefixes field names in errors)."""
    return EventFilter(**_event_filter_args(obj, path))


def parse_room_event_filter(obj: Mapping[str, Any], path: str = "") -> RoomEventFilter:
    """Parses a ``RoomEventFilter`` object (``path`` prefixes field names in errors)."""
    return RoomEventFilter(
        **_event_filter_args(obj, path),
        rooms=_str_list(obj, "rooms", path),
        not_rooms=_str_list(obj, "not_rooms", path) or (),
        lazy_load_members=bool(_bool(obj, "lazy_load_members", path, False)),
        include_redundant_members=bool(_bool(obj, "include_redundant_members", path, False)),
        contains_url=_bool(obj, "contains_url", path, None),
        unread_thread_notifications=bool(_bool(obj, "unread_thread_notifications", path, False)),
    )


def parse_sync_filter(body: object) -> SyncFilter:
    """Parses a filter definition into a :class:`SyncFilter`.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` when it is not an object or a field has the wrong type.
    """
    if not isinstance(body, dict):
        raise MatrixError(400, Codes.BAD_JSON, "Invalid filter: must be an object")
    event_format = body.get("event_format") or "client"
    if event_format not in ("client", "federation"):
        raise _bad("event_format", "one of client, federation")
    room = _object(body, "room", "")
    return SyncFilter(
        event_fields=_str_list(body, "event_fields", ""),
        event_format=event_format,
        presence=parse_event_filter(_object(body, "presence", ""), "presence."),
        account_data=parse_event_filter(_object(body, "account_data", ""), "account_data."),
        rooms=_str_list(room, "rooms", "room."),
        not_rooms=_str_list(room, "not_rooms", "room.") or (),
        include_leave=bool(_bool(room, "include_leave", "room.", False)),
        timeline=parse_room_event_filter(_object(room, "timeline", "room."), "room.timeline."),
        state=parse_room_event_filter(_object(room, "state", "room."), "room.state."),
        ephemeral=parse_room_event_filter(_object(room, "ephemeral", "room."), "room.ephemeral."),
        room_account_data=parse_room_event_filter(_object(room, "account_data", "room."), "room.account_data."),
    )


def _split_path(path: str) -> list[str]:
    """Splits a dot-separated property path; ``\\.`` is a literal dot and ``\\\\`` a backslash."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in path:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def apply_event_fields(event: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """Keeps only the ``event_fields`` of a serialised event (spec "dot-separated property paths").

    Paths that do not exist are ignored; a path that names an object keeps the whole object.
    """
    out: dict[str, Any] = {}
    for path in fields:
        parts = _split_path(path)
        source: Any = event
        for part in parts:
            if not isinstance(source, Mapping) or part not in source:
                break
            source = source[part]
        else:
            target = out
            for part in parts[:-1]:
                existing = target.get(part)
                if not isinstance(existing, dict):
                    existing = {}
                    target[part] = existing
                target = existing
            target[parts[-1]] = source
    return out
