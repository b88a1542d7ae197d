"""History visibility: which events and which room state a user may read.

Theory of operation (spec client-server-api, "Room History Visibility"):

* Whether a user may see an event depends on the room's state *at that event*: the value of
  ``m.room.history_visibility`` and the user's own ``m.room.member`` membership in the state before
  the event (``StoredEvent.state_group_before``). The rules, in order: ``world_readable`` allows;
  membership ``join`` allows; ``shared`` allows when the user joined the room at any point after the
  event; membership ``invite`` with ``invited`` allows; anything else denies. A missing or unknown
  value counts as ``shared``.
* For a ``m.room.history_visibility`` event the value before *or* after it may allow; for the user's
  own ``m.room.member`` event the membership before *or* after it may allow.
* The per-event inputs depend only on ``(state group, user)``, and state groups never change once
  written, so the pair ``(visibility, membership)`` is memoised per ``(state group, user)`` without
  invalidation. A page of events from one stretch of a room thus costs one state-group read (cached
  by :class:`StateGroupStore`) and one batched event load, never a query per event (audit SCALE-4).
* "Joined at any point after the event" is answered by one query per call for all rooms that need it
  (the stream ordering of the user's latest join in each room), and only when a ``shared`` event is
  not already allowed by the membership rule.

Room state (``/state``, ``/members``) follows the spec's endpoint rules: a joined user reads the current
state; a user who was a member and left (or was kicked or banned) reads the state as of their departure;
anyone else gets 403, unless the room is currently ``world_readable`` (then the current state).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from homeserver.rooms.messages import EventCreator, RoomHead
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.rooms import RoomStore
from homeserver.storage.stores.state_groups import StateGroupStore, StateMap
from sc_proto.errors import Codes, MatrixError

WORLD_READABLE = "world_readable"
SHARED = "shared"
INVITED = "invited"
JOINED = "joined"
HISTORY_VISIBILITIES = frozenset({WORLD_READABLE, SHARED, INVITED, JOINED})

HISTORY_VISIBILITY_TYPE = "m.room.history_visibility"
MEMBER_TYPE = "m.room.member"

_View = tuple[str, str | None]
"""``(history visibility, the user's membership or None)`` in one state."""


def visibility_of(content: Mapping[str, object] | None) -> str:
    """The effective history visibility of an ``m.room.history_visibility`` content (``shared`` when
    missing or not understood)."""
    value = content.get("history_visibility") if content is not None else None
    return value if isinstance(value, str) and value in HISTORY_VISIBILITIES else SHARED


def is_allowed(visibility: str, membership: str | None, joined_later: bool) -> bool:
    """The spec's decision for one event given the state at it.

    Args:
        visibility: the room's history visibility at the event.
        membership: the user's membership at the event (None when they had none).
        joined_later: whether the user joined the room at some point after the event.
    """
    if visibility == WORLD_READABLE or membership == "join":
        return True
    if visibility == SHARED and joined_later:
        return True
    return membership == "invite" and visibility == INVITED


@dataclass(frozen=True)
class RoomAccess:
    """What a user may read of a room's state and history right now.

    Attributes:
        head: the room's current head (current state).
        membership: the user's current membership, or None.
        departure: for a user who was a member and left, was kicked or was banned, their membership
            event: they see the room as of that event and nothing after it. None otherwise.
        world_readable: the room is currently ``world_readable``.
    """

    head: RoomHead
    membership: str | None
    departure: StoredEvent | None
    world_readable: bool

    @property
    def history_limit(self) -> StoredEvent | None:
        """The last event the user may read (their departure), or None when nothing caps it."""
        if self.membership == "join" or self.world_readable:
            return None
        return self.departure

    @property
    def state_group(self) -> int | None:
        """The state group the user reads, or None for the room's current state."""
        limit = self.history_limit
        return None if limit is None else limit.state_group_after


class HistoryVisibilityFilter:
    """Decides which events and which state a user may read.

    Args:
        events: the event store.
        rooms: the room store (latest joins).
        state_groups: the state-group store.
        creator: the event creator (room heads: current state, cached).
        cache_size: ``(state group, user)`` decisions kept in memory.
    """

    def __init__(
        self,
        events: EventStore,
        rooms: RoomStore,
        state_groups: StateGroupStore,
        creator: EventCreator,
        cache_size: int = 100_000,
    ) -> None:
        self._events = events
        self._rooms = rooms
        self._state_groups = state_groups
        self._creator = creator
        self._views: OrderedDict[tuple[int, str], _View] = OrderedDict()
        self._cache_size = cache_size

    # ------------------------------------------------------------------ events

    async def filter_events_for_client(self, user_id: str, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """The events of ``events`` that ``user_id`` may see, in the given order.

        Outliers and rejected events are never visible. Events of several rooms may be mixed.
        """
        candidates = [e for e in events if not e.outlier and e.rejected_reason is None]
        views = await self._get_views(user_id, {e.state_group_before for e in candidates})
        decided: list[tuple[StoredEvent, bool | None]] = []
        need_joins: set[int] = set()
        for stored in candidates:
            options = self._options(user_id, stored, views)
            if any(is_allowed(v, m, False) for v, m in options):
                decided.append((stored, True))
            elif any(v == SHARED for v, _ in options):
                decided.append((stored, None))  # allowed only if the user joined after it
                need_joins.add(stored.room_nid)
            else:
                decided.append((stored, False))
        joins = await self._rooms.get_latest_join_streams(user_id, sorted(need_joins)) if need_joins else {}
        visible: list[StoredEvent] = []
        for stored, allowed in decided:
            if allowed is None:
                allowed = joins.get(stored.room_nid, -1) > stored.stream_ordering
            if allowed:
                visible.append(stored)
        return visible

    async def is_event_visible(self, user_id: str, stored: StoredEvent) -> bool:
        """Whether ``user_id`` may see one event."""
        return bool(await self.filter_events_for_client(user_id, [stored]))

    @staticmethod
    def _options(user_id: str, stored: StoredEvent, views: Mapping[int | None, _View]) -> list[_View]:
        """The ``(visibility, membership)`` pairs any of which may allow the event."""
        visibility, membership = views[stored.state_group_before]
        event = stored.event
        options: list[_View] = [(visibility, membership)]
        if event.type == HISTORY_VISIBILITY_TYPE and event.state_key == "":
            options.append((visibility_of(event.content), membership))
        elif event.type == MEMBER_TYPE and event.state_key == user_id:
            options.append((visibility, event.membership))
        return options

    async def _get_views(self, user_id: str, groups: Iterable[int | None]) -> dict[int | None, _View]:
        """``(visibility, membership)`` of the user in each state group (memoised)."""
        views: dict[int | None, _View] = {}
        missing: dict[int, StateMap] = {}
        for group in groups:
            if group is None:
                views[None] = (SHARED, None)  # the state before a create event is empty
                continue
            cached = self._views.get((group, user_id))
            if cached is not None:
                self._views.move_to_end((group, user_id))
                views[group] = cached
            else:
                missing[group] = await self._state_groups.get_state(group)
        if missing:
            wanted: set[str] = set()
            for state in missing.values():
                for key in ((HISTORY_VISIBILITY_TYPE, ""), (MEMBER_TYPE, user_id)):
                    if key in state:
                        wanted.add(state[key])
            loaded = await self._events.get_events(wanted)
            for group, state in missing.items():
                view = _view_in_state(state, user_id, loaded)
                views[group] = view
                self._remember((group, user_id), view)
        return views

    def _remember(self, key: tuple[int, str], view: _View) -> None:
        self._views[key] = view
        self._views.move_to_end(key)
        while len(self._views) > self._cache_size:
            self._views.popitem(last=False)

    # ------------------------------------------------------------------ room state

    async def get_room_access(self, user_id: str, room_id: str) -> RoomAccess:
        """What ``user_id`` may read of ``room_id`` (spec: ``/state``, ``/members``, ``/messages``).

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` when the room is unknown, or the user is not a member, was
                never one, and the room is not ``world_readable``.
        """
        head = await self._creator.get_head(room_id)
        if head is None:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a member of this room")
        member = await self._creator.state.get_current_member(room_id, user_id, head)
        vis_id = head.state.get((HISTORY_VISIBILITY_TYPE, ""))
        vis_event = await self._events.get_event(vis_id) if vis_id is not None else None
        membership = member.event.membership if member is not None else None
        world_readable = visibility_of(vis_event.event.content if vis_event else None) == WORLD_READABLE
        departure: StoredEvent | None = None
        if member is not None and membership in ("leave", "ban"):
            joins = await self._rooms.get_latest_join_streams(user_id, [head.room.room_nid])
            if head.room.room_nid in joins:
                departure = member
        if membership != "join" and departure is None and not world_readable:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a member of this room")
        return RoomAccess(head, membership, departure, world_readable)

    async def get_visible_state(self, access: RoomAccess) -> StateMap:
        """The state ``(type, state_key) -> event_id`` the user may read: current, or as of their leave."""
        group = access.state_group
        if group is None:
            return access.head.state
        return await self._state_groups.get_state(group)


def _view_in_state(state: StateMap, user_id: str, loaded: Mapping[str, StoredEvent]) -> _View:
    vis_event = loaded.get(state.get((HISTORY_VISIBILITY_TYPE, ""), ""))
    member = loaded.get(state.get((MEMBER_TYPE, user_id), ""))
    visibility = visibility_of(vis_event.event.content if vis_event is not None else None)
    return visibility, (member.event.membership if member is not None else None)
