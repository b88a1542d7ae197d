"""Reading a room: ``/messages`` pagination, ``/context``, single events, timestamps, state, members.

Theory of operation:

* Positions. A :class:`~homeserver.streams.tokens.RoomPosition` ``t<depth>-<stream>`` is the gap just
  after the event with topological key ``(depth, stream)``. Going backwards from a position returns
  the events at or before it (newest first); going forwards, the events after it (oldest first). So
  one token names the same gap in both directions, and the token after a page is: forwards, the key of
  the last event read; backwards, the gap just before the last event read (``(depth, stream - 1)``:
  streams are integers and unique, so no event fits between).
* Sync tokens (``sc1_…``, and the live ``s<stream>`` form) are accepted wherever a pagination token is:
  their ``e`` (events) position becomes the gap just after the room's last event with a stream ordering
  at or below it. In a linear room (every local room until federation lands) stream and topological
  orders agree, so paginating back from a sync token returns exactly the events the sync had already
  covered, with no gap and no duplicate.
* Visibility. Every event goes through
  :meth:`~homeserver.rooms.visibility.HistoryVisibilityFilter.filter_events_for_client`. Pages are
  fetched ``limit`` at a time; when filters or visibility hide events a few more rounds are read
  (at most :data:`MAX_ROUNDS`), and the returned token always follows the last event *read*, never the
  last event *returned*, so hidden events are skipped but nothing is skipped twice.
* Backfill. When a backwards page reaches the start of what we hold, the ``backfill`` callable
  (the room input's) fetches older history from another server in the room, and the page is read
  again; a room whose create event we hold has nothing older.
* A user who left (or was kicked or banned) reads history up to their departure and the state as of
  it; :class:`~homeserver.rooms.visibility.RoomAccess` caps both.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from homeserver.rooms.visibility import MEMBER_TYPE, HistoryVisibilityFilter, RoomAccess
from homeserver.storage.ids import StreamPositionTracker
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.state_groups import StateGroupStore, StateMap
from homeserver.streams.tokens import TOKEN_VERSION, RoomPosition, StreamToken
from sc_proto.errors import Codes, MatrixError
from sc_proto.json import decode_json

logger = logging.getLogger(__name__)

Backfill = Callable[[str, int], Awaitable[bool]]
"""``(room_id, limit) -> whether older events were fetched from other servers and stored``."""

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
MAX_ROUNDS = 4
"""Pages read at most per ``/messages`` call when filters or visibility hide events."""

MAX_FILTER_LENGTH = 16 * 1024
_MAX_BIGINT = 2**63 - 1
_LIVE_TOKEN_RE = re.compile(r"s(\d{1,19})")
MEMBERSHIPS = frozenset({"join", "invite", "knock", "leave", "ban"})


# ---------------------------------------------------------------------- filters


def _str_list(raw: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, Codes.INVALID_PARAM, f"filter: {key!r} must be a list of strings")
    return tuple(value)


def _bool(raw: Mapping[str, Any], key: str) -> bool | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise MatrixError(400, Codes.INVALID_PARAM, f"filter: {key!r} must be a boolean")
    return value


def _type_matches(patterns: Sequence[str], event_type: str) -> bool:
    for pattern in patterns:
        if "*" in pattern:
            regex = ".*".join(re.escape(part) for part in pattern.split("*"))
            if re.fullmatch(regex, event_type, re.DOTALL):
                return True
        elif pattern == event_type:
            return True
    return False


@dataclass(frozen=True)
class RoomEventFilter:
    """A parsed ``RoomEventFilter`` (spec "Filtering"); unknown keys are ignored.

    ``types``/``not_types`` may use ``*`` as a wildcard. ``rooms``/``not_rooms`` and ``limit`` do not
    apply to single-room endpoints and are ignored there.
    """

    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False

    @classmethod
    def from_json(cls, raw: object) -> RoomEventFilter:
        """Builds a filter from a decoded JSON value.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` when it is not an object or a field has the wrong type.
        """
        if not isinstance(raw, dict):
            raise MatrixError(400, Codes.INVALID_PARAM, "filter must be a JSON object")
        return cls(
            types=_str_list(raw, "types"),
            not_types=_str_list(raw, "not_types") or (),
            senders=_str_list(raw, "senders"),
            not_senders=_str_list(raw, "not_senders") or (),
            contains_url=_bool(raw, "contains_url"),
            lazy_load_members=bool(_bool(raw, "lazy_load_members")),
            include_redundant_members=bool(_bool(raw, "include_redundant_members")),
        )

    def sql_types(self) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
        """``(types, not_types)`` the database can apply (wildcard lists are left to :meth:`matches`)."""
        types = None if self.types is not None and any("*" in t for t in self.types) else self.types
        not_types = () if any("*" in t for t in self.not_types) else self.not_types
        return types, not_types

    def matches(self, stored: StoredEvent) -> bool:
        """Whether the event passes every condition of the filter."""
        event = stored.event
        if self.types is not None and not _type_matches(self.types, event.type):
            return False
        if _type_matches(self.not_types, event.type):
            return False
        if self.senders is not None and event.sender not in self.senders:
            return False
        if event.sender in self.not_senders:
            return False
        if self.contains_url is not None:
            has_url = isinstance(event.content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True


def parse_room_event_filter(raw: str | None) -> RoomEventFilter:
    """Parses the ``filter`` query parameter (a JSON ``RoomEventFilter``); absent means no filter.

    Raises:
        MatrixError: 400 ``M_NOT_JSON`` when it is not JSON, ``M_INVALID_PARAM`` when it is not a
            valid filter or too long.
    """
    if raw is None or not raw.strip():
        return RoomEventFilter()
    if len(raw) > MAX_FILTER_LENGTH:
        raise MatrixError(400, Codes.INVALID_PARAM, "filter is too long")
    try:
        decoded = decode_json(raw, allow_floats=True)
    except (MatrixError, ValueError, RecursionError):
        raise MatrixError(400, Codes.NOT_JSON, "filter is not valid JSON") from None
    return RoomEventFilter.from_json(decoded)


# ---------------------------------------------------------------------- positions


def position_of(stored: StoredEvent) -> RoomPosition:
    """The gap just after an event."""
    return RoomPosition(stored.depth, stored.stream_ordering)


def position_before(stored: StoredEvent) -> RoomPosition:
    """The gap just before an event."""
    return RoomPosition(stored.depth, stored.stream_ordering - 1)


@dataclass(frozen=True)
class MessagesPage:
    """One ``/messages`` page: ``end`` is None when there is nothing more to read."""

    chunk: list[StoredEvent]
    start: RoomPosition
    end: RoomPosition | None
    state: list[StoredEvent] = field(default_factory=list)


@dataclass(frozen=True)
class EventContext:
    """The answer of ``/context``."""

    event: StoredEvent
    events_before: list[StoredEvent]
    events_after: list[StoredEvent]
    start: RoomPosition
    end: RoomPosition
    state: list[StoredEvent]


class RoomReader:
    """Reads room history and state on behalf of a user, applying history visibility.

    Args:
        events: the event store.
        state_groups: the state-group store.
        visibility: the history-visibility filter (room access, per-event decisions).
        stream_tracker: the events stream's position (sync tokens are clamped to it).
        backfill: ``(room_id, limit) -> added?``: fetches history older than the oldest event held
            from other servers (the room input's ``backfill``); None: what we hold is all there is.
    """

    def __init__(
        self,
        events: EventStore,
        state_groups: StateGroupStore,
        visibility: HistoryVisibilityFilter,
        stream_tracker: StreamPositionTracker,
        backfill: Backfill | None = None,
    ) -> None:
        self._backfill = backfill
        self._events = events
        self._state_groups = state_groups
        self._visibility = visibility
        self._tracker = stream_tracker
        self._backfill = backfill

    # ------------------------------------------------------------------ tokens

    async def parse_token(self, room_nid: int, token: str) -> RoomPosition:
        """Turns a pagination or sync token into a position in the room.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a malformed token.
        """
        if token.startswith("t"):
            position = RoomPosition.decode(token)
            if abs(position.depth) > _MAX_BIGINT or abs(position.stream) > _MAX_BIGINT:
                raise MatrixError(400, Codes.INVALID_PARAM, "Invalid pagination token")
            return position
        now = self._tracker.current()
        live = _LIVE_TOKEN_RE.fullmatch(token)
        if live is not None:
            stream = int(live.group(1))
        elif token.split("_", 1)[0] == TOKEN_VERSION:
            stream = StreamToken.decode(token, StreamToken({"e": now})).get("e", now)
        else:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid pagination token")
        key = await self._events.get_room_position_at_stream(room_nid, min(stream, now))
        return RoomPosition(0, 0) if key is None else RoomPosition(*key)

    async def _latest_position(self, access: RoomAccess) -> RoomPosition:
        stored = await self._events.get_events(access.head.extremities)
        return max((position_of(s) for s in stored.values()), default=RoomPosition(0, 0))

    # ------------------------------------------------------------------ /messages

    async def get_messages(
        self,
        user_id: str,
        room_id: str,
        *,
        from_token: str | None,
        to_token: str | None,
        backwards: bool,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> MessagesPage:
        """One page of the room's history for ``user_id``.

        Raises:
            MatrixError: 403 when the user may not read the room, 400 for bad tokens.
        """
        access = await self._visibility.get_room_access(user_id, room_id)
        room_nid = access.head.room.room_nid
        from_pos = await self.parse_token(room_nid, from_token) if from_token is not None else None
        to_pos = await self.parse_token(room_nid, to_token) if to_token is not None else None
        cap = access.history_limit
        if cap is not None:
            if backwards and (from_pos is None or from_pos > position_of(cap)):
                from_pos = position_of(cap)
            if not backwards and (to_pos is None or to_pos > position_of(cap)):
                to_pos = position_of(cap)
        if from_pos is None:
            from_pos = await self._latest_position(access) if backwards else RoomPosition(0, 0)
        chunk, end = await self._read_pages(user_id, room_nid, from_pos, to_pos, backwards, limit, event_filter)
        if (
            backwards and end is None and to_pos is None and access.history_limit is None
            and await self._backfilled(room_id, limit)
        ):
            # The start of what we hold was reached and older events were fetched: read on through them.
            chunk, end = await self._read_pages(user_id, room_nid, from_pos, to_pos, backwards, limit, event_filter)
            if end is None and chunk:
                end = position_before(chunk[-1])  # more may be fetched: the client pages on from here
        state: list[StoredEvent] = []
        if event_filter.lazy_load_members and chunk:
            state = await self._member_events(chunk[0].state_group_after, {e.event.sender for e in chunk})
        return MessagesPage(chunk, from_pos, end, state)

    async def _backfilled(self, room_id: str, limit: int) -> bool:
        """Whether backfill inserted older events (failures are logged: local history is still served)."""
        if self._backfill is None:
            return False
        try:
            return await self._backfill(room_id, limit)
        except Exception:
            logger.warning("backfill failed", exc_info=True, extra={"room_id": room_id})
            return False

    async def _read_pages(
        self,
        user_id: str,
        room_nid: int,
        from_pos: RoomPosition,
        to_pos: RoomPosition | None,
        backwards: bool,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> tuple[list[StoredEvent], RoomPosition | None]:
        """Reads up to ``limit`` visible events; returns them and the token after the last one read."""
        types, not_types = event_filter.sql_types()
        chunk: list[StoredEvent] = []
        cursor = from_pos
        more = True
        for _ in range(MAX_ROUNDS):
            want = limit - len(chunk)
            ids = await self._events.get_room_event_orderings(
                room_nid,
                from_key=(cursor.depth, cursor.stream),
                to_key=None if to_pos is None else (to_pos.depth, to_pos.stream),
                backwards=backwards,
                limit=want + 1,
                types=types,
                not_types=not_types,
                senders=event_filter.senders,
                not_senders=event_filter.not_senders,
            )
            more = len(ids) > want
            page = await self._load_ordered(ids[:want])
            if page:
                cursor = position_before(page[-1]) if backwards else position_of(page[-1])
            matching = [e for e in page if event_filter.matches(e)]
            chunk.extend(await self._visibility.filter_events_for_client(user_id, matching))
            if not more or len(chunk) >= limit:
                break
        return chunk, (cursor if more else None)

    async def _load_ordered(self, event_ids: Sequence[str]) -> list[StoredEvent]:
        loaded = await self._events.get_events(event_ids)
        return [loaded[e] for e in event_ids if e in loaded]

    async def _member_events(self, state_group: int | None, users: set[str]) -> list[StoredEvent]:
        """The ``m.room.member`` events of ``users`` in a state group (lazy-loaded members)."""
        if state_group is None:
            return []
        state = await self._state_groups.get_state(state_group)
        ids = [state[(MEMBER_TYPE, u)] for u in sorted(users) if (MEMBER_TYPE, u) in state]
        return await self._load_ordered(ids)

    # ------------------------------------------------------------------ /context and /event

    async def get_visible_event(self, user_id: str, room_id: str, event_id: str) -> StoredEvent:
        """An event of ``room_id`` that ``user_id`` may see.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` when unknown, in another room, or not visible.
        """
        stored = await self._events.get_event(event_id)
        if stored is None or stored.event.room_id != room_id or not await self._visibility.is_event_visible(
            user_id, stored
        ):
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        return stored

    async def get_context(
        self, user_id: str, room_id: str, event_id: str, limit: int, event_filter: RoomEventFilter
    ) -> EventContext:
        """The events around ``event_id`` (``limit`` split between before and after) and the state at
        the last one returned.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` when the event is unknown or not visible.
        """
        event = await self.get_visible_event(user_id, room_id, event_id)
        types, not_types = event_filter.sql_types()
        before_limit = limit // 2
        after_limit = limit - before_limit
        pages: list[list[StoredEvent]] = []
        for backwards, count, key in (
            (True, before_limit, position_before(event)),
            (False, after_limit, position_of(event)),
        ):
            ids = await self._events.get_room_event_orderings(
                event.room_nid, from_key=(key.depth, key.stream), to_key=None, backwards=backwards, limit=count,
                types=types, not_types=not_types, senders=event_filter.senders, not_senders=event_filter.not_senders,
            ) if count > 0 else []
            pages.append(await self._load_ordered(ids))
        before_raw, after_raw = pages
        start = position_before(before_raw[-1]) if before_raw else position_before(event)
        end = position_of(after_raw[-1]) if after_raw else position_of(event)
        before = await self._visibility.filter_events_for_client(
            user_id, [e for e in before_raw if event_filter.matches(e)]
        )
        after = await self._visibility.filter_events_for_client(
            user_id, [e for e in after_raw if event_filter.matches(e)]
        )
        last = after[-1] if after else event
        state = await self._context_state(last, [*before, event, *after], event_filter)
        return EventContext(event, before, after, start, end, state)

    async def _context_state(
        self, last: StoredEvent, returned: Sequence[StoredEvent], event_filter: RoomEventFilter
    ) -> list[StoredEvent]:
        if last.state_group_after is None:
            return []
        state = await self._state_groups.get_state(last.state_group_after)
        senders = {e.event.sender for e in returned}
        keys = sorted(
            k for k in state
            if not (event_filter.lazy_load_members and k[0] == MEMBER_TYPE and k[1] not in senders)
        )
        events = await self._load_ordered([state[k] for k in keys])
        return [e for e in events if event_filter.matches(e)]

    async def get_event_at_timestamp(self, user_id: str, room_id: str, ts: int, forwards: bool) -> StoredEvent:
        """The closest event to ``ts`` in the given direction that the user may see.

        Raises:
            MatrixError: 403 when the user may not read the room; 404 when there is no such event.
        """
        access = await self._visibility.get_room_access(user_id, room_id)
        event_id = await self._events.get_event_at_timestamp(access.head.room.room_nid, ts, forwards)
        stored = None if event_id is None else await self._events.get_event(event_id)
        if stored is None or not await self._visibility.is_event_visible(user_id, stored):
            direction = "forward" if forwards else "backward"
            raise MatrixError(404, Codes.NOT_FOUND, f"Unable to find event from {ts} in {direction} direction")
        return stored

    # ------------------------------------------------------------------ state and members

    async def get_state(self, user_id: str, room_id: str) -> StateMap:
        """The state ``user_id`` may read: current, or as of their departure.

        Raises:
            MatrixError: 403 when the user may not read the room's state.
        """
        access = await self._visibility.get_room_access(user_id, room_id)
        return await self._visibility.get_visible_state(access)

    async def get_state_events(self, state: StateMap) -> list[StoredEvent]:
        """The events of a state, ordered by ``(type, state_key)``."""
        return await self._load_ordered([state[k] for k in sorted(state)])

    async def get_members(
        self,
        user_id: str,
        room_id: str,
        *,
        at_token: str | None,
        membership: str | None,
        not_membership: str | None,
    ) -> list[StoredEvent]:
        """The room's ``m.room.member`` events, now or at a token, filtered by membership.

        With both ``membership`` and ``not_membership`` an event is kept when either condition holds
        (the spec's "or").

        Raises:
            MatrixError: 403 when the user may not read the room's state; 400 for a bad token.
        """
        access = await self._visibility.get_room_access(user_id, room_id)
        if at_token is None:
            state = await self._visibility.get_visible_state(access)
        else:
            state = await self._state_at(access, await self.parse_token(access.head.room.room_nid, at_token))
        members = await self.get_state_events({k: v for k, v in state.items() if k[0] == MEMBER_TYPE})

        def keep(stored: StoredEvent) -> bool:
            value = stored.event.membership
            if membership is None and not_membership is None:
                return True
            return (membership is not None and value == membership) or (
                not_membership is not None and value != not_membership
            )

        return [m for m in members if keep(m)]

    async def _state_at(self, access: RoomAccess, position: RoomPosition) -> StateMap:
        """The state after the last event at or before ``position`` (capped at the user's departure)."""
        cap = access.history_limit
        if cap is not None and position > position_of(cap):
            position = position_of(cap)
        ids = await self._events.get_room_event_orderings(
            access.head.room.room_nid, from_key=(position.depth, position.stream), to_key=None,
            backwards=True, limit=1,
        )
        anchor = await self._load_ordered(ids)
        if not anchor or anchor[0].state_group_after is None:
            return {}
        return await self._state_groups.get_state(anchor[0].state_group_after)
