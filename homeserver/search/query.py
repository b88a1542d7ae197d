"""Parsing a ``POST /search`` request and its ``next_batch`` tokens (spec "Server Side Search").

Everything a client sends is validated here, once, into frozen values; the search term is reduced to
plain words (:func:`tokenize`) so no query syntax of either database engine ever comes from the
client.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from homeserver.rooms.pagination import RoomEventFilter
from homeserver.storage.stores.search import SEARCH_KEYS
from sc_proto.errors import Codes, MatrixError

ROOM_EVENTS = "room_events"
"""The only search category the spec defines."""

MAX_SEARCH_TERM_LENGTH = 1000
"""Longest ``search_term`` accepted, in characters (400 above it)."""

MAX_WORDS = 32
"""Words of a search term used; later words are ignored."""

MAX_WORD_LENGTH = 64
"""Characters of one word used (a longer word matches as a prefix of this length)."""

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
"""Results per page: the filter's ``limit``, default and cap."""

DEFAULT_CONTEXT_LIMIT = 5
MAX_CONTEXT_LIMIT = 50
"""Events before/after each result when ``event_context`` is requested: default and cap."""

GROUP_KEYS = ("room_id", "sender")

_WORD_RE = re.compile(r"[^\W_]+")
"""A word: a run of Unicode letters and digits (both engines' tokenizers split on everything else)."""

_TOKEN_RE = re.compile(r"(rank|recent)_(\d{1,19})_(\d{1,19})")


def _bad(message: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, message)


def iter_words(text: str) -> Iterator[str]:
    """The words of ``text``, case-folded, each cut to :data:`MAX_WORD_LENGTH` characters."""
    for match in _WORD_RE.finditer(text):
        yield match.group(0).casefold()[:MAX_WORD_LENGTH]


def tokenize(text: str) -> tuple[str, ...]:
    """The distinct words of ``text`` (:func:`iter_words`) in order of first appearance, at most
    :data:`MAX_WORDS`."""
    words: dict[str, None] = {}
    for word in iter_words(text):
        words.setdefault(word, None)
        if len(words) >= MAX_WORDS:
            break
    return tuple(words)


@dataclass(frozen=True)
class ContextRequest:
    """``event_context``: how many events around each result, and whether to add sender profiles."""

    before_limit: int = DEFAULT_CONTEXT_LIMIT
    after_limit: int = DEFAULT_CONTEXT_LIMIT
    include_profile: bool = False


@dataclass(frozen=True)
class RoomEventsCriteria:
    """A parsed ``room_events`` search.

    Attributes:
        search_term: the term as sent.
        words: its words (:func:`tokenize`); empty when it has none (no results).
        keys: the keys to search (default: all of :data:`SEARCH_KEYS`).
        by_rank: ``order_by`` is ``rank`` (the default) rather than ``recent``.
        event_filter: the filter's event conditions (types, senders, ``contains_url``).
        rooms: the filter's ``rooms`` (None: every room the user may search).
        not_rooms: the filter's ``not_rooms``.
        limit: results per page.
        context: ``event_context``, or None when not requested.
        include_state: return the state of each room with results.
        group_by: the requested groupings (``room_id``, ``sender``).
    """

    search_term: str
    words: tuple[str, ...]
    keys: tuple[str, ...] = SEARCH_KEYS
    by_rank: bool = True
    event_filter: RoomEventFilter = field(default_factory=RoomEventFilter)
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    limit: int = DEFAULT_LIMIT
    context: ContextRequest | None = None
    include_state: bool = False
    group_by: tuple[str, ...] = ()


def _optional(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], expected: str) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"{key!r} must be {expected}")
    return value


def _str_tuple(raw: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"filter: {key!r} must be a list of strings")
    return tuple(value)


def _int_in(raw: Mapping[str, Any], key: str, default: int, minimum: int, maximum: int) -> int:
    """An integer field: 400 when it has the wrong type or is below ``minimum``; capped at ``maximum``."""
    value = _optional(raw, key, int, "an integer")
    if value is None:
        return default
    if value < minimum:
        raise _bad(f"{key!r} must be >= {minimum}")
    return min(int(value), maximum)


def _parse_keys(raw: Mapping[str, Any]) -> tuple[str, ...]:
    keys = raw.get("keys")
    if keys is None:
        return SEARCH_KEYS
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _bad("'keys' must be a list of strings")
    unknown = sorted({k for k in keys if k not in SEARCH_KEYS})
    if unknown:
        raise _bad(f"Unsupported search keys: {', '.join(unknown)}")
    return tuple(dict.fromkeys(keys))


def _parse_context(raw: Mapping[str, Any]) -> ContextRequest | None:
    value = _optional(raw, "event_context", dict, "an object")
    if value is None:
        return None
    include_profile = _optional(value, "include_profile", bool, "a boolean")
    return ContextRequest(
        before_limit=_int_in(value, "before_limit", DEFAULT_CONTEXT_LIMIT, 0, MAX_CONTEXT_LIMIT),
        after_limit=_int_in(value, "after_limit", DEFAULT_CONTEXT_LIMIT, 0, MAX_CONTEXT_LIMIT),
        include_profile=bool(include_profile),
    )


def _parse_groupings(raw: Mapping[str, Any]) -> tuple[str, ...]:
    groupings = _optional(raw, "groupings", dict, "an object")
    if groupings is None:
        return ()
    group_by = groupings.get("group_by")
    if group_by is None:
        return ()
    if not isinstance(group_by, list):
        raise _bad("'group_by' must be a list")
    keys: dict[str, None] = {}
    for group in group_by:
        key = group.get("key") if isinstance(group, dict) else None
        if key not in GROUP_KEYS:
            raise _bad(f"Each group_by entry needs a 'key' of {', '.join(GROUP_KEYS)}")
        keys[key] = None
    return tuple(keys)


def parse_room_events(raw: object) -> RoomEventsCriteria:
    """Parses the ``room_events`` criteria object.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM`` without ``search_term``; 400 ``M_INVALID_PARAM`` for any
            field of the wrong type or value, or a ``search_term`` over :data:`MAX_SEARCH_TERM_LENGTH`.
    """
    if not isinstance(raw, dict):
        raise _bad("'room_events' must be an object")
    if "search_term" not in raw:
        raise MatrixError(400, Codes.MISSING_PARAM, "Missing required field 'search_term'")
    term = raw["search_term"]
    if not isinstance(term, str):
        raise _bad("'search_term' must be a string")
    if len(term) > MAX_SEARCH_TERM_LENGTH:
        raise _bad(f"'search_term' is longer than {MAX_SEARCH_TERM_LENGTH} characters")
    order_by = _optional(raw, "order_by", str, "a string") or "rank"
    if order_by not in ("rank", "recent"):
        raise _bad("'order_by' must be 'rank' or 'recent'")
    filter_json = _optional(raw, "filter", dict, "an object") or {}
    include_state = _optional(raw, "include_state", bool, "a boolean")
    return RoomEventsCriteria(
        search_term=term,
        words=tokenize(term),
        keys=_parse_keys(raw),
        by_rank=order_by == "rank",
        event_filter=RoomEventFilter.from_json(filter_json),
        rooms=_str_tuple(filter_json, "rooms"),
        not_rooms=_str_tuple(filter_json, "not_rooms") or (),
        limit=_int_in(filter_json, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        context=_parse_context(raw),
        include_state=bool(include_state),
        group_by=_parse_groupings(raw),
    )


def parse_search_body(body: Mapping[str, Any]) -> RoomEventsCriteria | None:
    """Parses a ``POST /search`` body; None when it asks for no category.

    Raises:
        MatrixError: 400 when ``search_categories`` is missing or not an object, names a category
            other than ``room_events`` (``M_UNRECOGNIZED``), or the criteria are invalid.
    """
    if "search_categories" not in body:
        raise MatrixError(400, Codes.MISSING_PARAM, "Missing required field 'search_categories'")
    categories = body["search_categories"]
    if not isinstance(categories, dict):
        raise _bad("'search_categories' must be an object")
    unknown = sorted(k for k in categories if k != ROOM_EVENTS)
    if unknown:
        raise MatrixError(400, Codes.UNRECOGNIZED, f"Unknown search categories: {', '.join(unknown)[:200]}")
    if ROOM_EVENTS not in categories:
        return None
    return parse_room_events(categories[ROOM_EVENTS])


@dataclass(frozen=True)
class SearchBatch:
    """A ``next_batch`` token: where the next page starts.

    Attributes:
        by_rank: the ordering it was minted for.
        max_stream: the events-stream snapshot of the first page (later events never join the pages).
        position: rank order, how many index rows were read; recency order, the stream ordering of the
            last index row read (the next page reads strictly older rows).
    """

    by_rank: bool
    max_stream: int
    position: int

    def encode(self) -> str:
        return f"{'rank' if self.by_rank else 'recent'}_{self.max_stream}_{self.position}"

    @classmethod
    def decode(cls, token: str, by_rank: bool) -> SearchBatch:
        """Parses a token minted for the same ordering.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` when malformed or minted for the other ordering.
        """
        match = _TOKEN_RE.fullmatch(token)
        if match is None or (match.group(1) == "rank") != by_rank:
            raise _bad("Invalid next_batch token")
        max_stream, position = int(match.group(2)), int(match.group(3))
        if max_stream >= 2**63 or position >= 2**63:
            raise _bad("Invalid next_batch token")
        return cls(by_rank, max_stream, position)
