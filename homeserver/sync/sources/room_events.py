"""The room-events sync source (token name ``e``): ``rooms.join``, ``rooms.invite``, ``rooms.knock``,
``rooms.leave``.

Theory of operation:

1. **Classify rooms.** The user's current memberships (one query over ``current_state``) say which
   rooms are joined, invited, knocked or left at the sync's end position ``to``; a membership
   written after ``to`` (a commit racing the sync) is rewound through its ``state_group_before``. An
   incremental sync also reads the user's membership events in ``(from, to]``: a room whose
   membership at ``from`` was not ``join`` (or that was left and re-joined) is *newly joined* and gets
   full state; a room left, kicked or banned in the range goes to ``leave``; invites and knocks in the
   range go to ``invite``/``knock``. Joined rooms without events in the range are skipped. The
   classification is published as structured facts on the result (``joined_room_ids``,
   ``newly_joined_room_ids``, ``newly_left_room_ids``) before any event filter runs, so per-room
   sources never read them back from the rendered JSON (ADR 0008).
2. **Timelines.** Per room one indexed query returns the newest ``limit + 1`` events of its range
   (``(from, to]``, or ``(from, leave]`` for a left room), all rooms in one transaction, events loaded
   in one batch. The timeline filter and history visibility (events after the user's current join
   are visible without checks) are applied in memory; when they drop events, the next older page is
   read (doubling, a bounded number of rounds; a scan cut short reports ``limited``). ``limited``
   is true when more matching events exist than the limit; ``prev_batch`` is the
   :class:`~homeserver.streams.tokens.RoomPosition` just before the first returned event, so
   ``/messages?dir=b&from=prev_batch`` continues exactly there.
3. **State.** The state at the start of the timeline is the ``state_group_before`` of its first
   event (or, for an empty timeline, the state after the newest event of the range). Initial syncs,
   ``full_state`` and newly joined rooms send it whole; other incremental syncs send the delta
   from the state at ``from`` (the state after the room's newest event at or before ``from``). A
   user who never joined a left room (a rejected invite) gets no state. State events already in the
   timeline are never repeated in ``state`` because the state is taken *before* the timeline.
4. **Lazy-loading members.** With ``lazy_load_members`` only the member events of the timeline's
   senders, the heroes and (when full state is sent) the user are kept, plus every member change of
   a gap. Unless ``include_redundant_members`` is set, member events already sent to the device are
   skipped; what was sent is remembered in memory per ``(user, device)`` and keyed by the
   ``next_batch`` it went out with, so a client that retries an old ``since`` gets them again.
5. Every event is serialised by :class:`~homeserver.events.serialize.EventSerializer` in one batch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from homeserver.events.serialize import EventSerializer, Viewer
from homeserver.storage.ids import StreamPositionTracker
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.rooms import RoomRecord, RoomStore
from homeserver.storage.stores.state_groups import StateGroupStore, StateMap
from homeserver.streams.tokens import RoomPosition
from homeserver.sync.filters import SyncFilter, apply_event_fields
from homeserver.sync.sources.registry import JsonDict, SyncContext, SyncResult
from sc_proto.events.model import StateKey
from sc_proto.events.redaction import redact

logger = logging.getLogger(__name__)

MEMBER = "m.room.member"
STRIPPED_STATE_KEYS: tuple[StateKey, ...] = (
    ("m.room.create", ""),
    ("m.room.name", ""),
    ("m.room.avatar", ""),
    ("m.room.topic", ""),
    ("m.room.join_rules", ""),
    ("m.room.canonical_alias", ""),
    ("m.room.encryption", ""),
)
"""The state a potential joiner sees (spec "Stripped state"); the invite/knock event is added."""

MAX_SCAN_ROUNDS = 4
"""Pages read per room when filters drop events, before reporting the timeline as limited."""
MAX_PAGE = 400


class EventVisibility(Protocol):
    """History visibility (``homeserver.rooms.visibility.HistoryVisibilityFilter`` implements it)."""

    async def filter_events_for_client(self, user_id: str, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """The events ``user_id`` may see, in order."""
        ...


@dataclass
class _RoomPlan:
    """What to send for one joined or left room."""

    room: RoomRecord
    section: str  # "join" or "leave"
    lower: int  # timeline range (lower, upper] in stream orderings
    upper: int
    full_state: bool
    show_state: bool = True
    join_stream: int | None = None  # events after it are visible without checks
    timeline: list[StoredEvent] = field(default_factory=list)
    limited: bool = False
    anchor: StoredEvent | None = None  # the newest event at or before ``upper``
    since_event: StoredEvent | None = None  # the newest event at or before ``lower``
    state_ids: dict[StateKey, str] = field(default_factory=dict)
    start_state: StateMap = field(default_factory=dict)


class LazyMembersCache:
    """Which member events each device was sent, per room, keyed by the ``next_batch`` they went with.

    In memory (documented in docs/sync.md): after a restart every member event counts as unsent,
    which only costs bandwidth. Bounded: ``max_devices`` devices, ``tokens_per_device`` tokens each,
    and a room's set is dropped (sent again) past ``max_members_per_room``.
    """

    def __init__(self, max_devices: int = 10_000, tokens_per_device: int = 3, max_members_per_room: int = 5_000) -> None:
        self._devices: OrderedDict[tuple[str, str | None], OrderedDict[str, dict[str, frozenset[str]]]] = OrderedDict()
        self._max_devices = max_devices
        self._tokens = tokens_per_device
        self._max_members = max_members_per_room

    def sent(self, user_id: str, device_id: str | None, since: str | None) -> dict[str, frozenset[str]]:
        """Room ID -> member event IDs the device had received by ``since`` (empty when unknown)."""
        if since is None:
            return {}
        tokens = self._devices.get((user_id, device_id))
        return dict(tokens.get(since, {})) if tokens is not None else {}

    def record(self, user_id: str, device_id: str | None, token: str, sent: Mapping[str, frozenset[str]]) -> None:
        """Remembers what the device will have received once it gets ``token``."""
        key = (user_id, device_id)
        tokens = self._devices.setdefault(key, OrderedDict())
        self._devices.move_to_end(key)
        tokens[token] = {r: m for r, m in sent.items() if len(m) <= self._max_members}
        tokens.move_to_end(token)
        while len(tokens) > self._tokens:
            tokens.popitem(last=False)
        while len(self._devices) > self._max_devices:
            self._devices.popitem(last=False)


class RoomEventsSource:
    """Fills the ``rooms`` sections from the events stream.

    Args:
        events: the event store.
        rooms: the room store.
        state_groups: the state-group store.
        serializer: turns stored events into client JSON.
        tracker: the events stream's position tracker (its ``current()`` is "now").
        visibility: history visibility.
    """

    name = "e"

    def __init__(
        self,
        events: EventStore,
        rooms: RoomStore,
        state_groups: StateGroupStore,
        serializer: EventSerializer,
        tracker: StreamPositionTracker,
        visibility: EventVisibility,
    ) -> None:
        self._events = events
        self._rooms = rooms
        self._state_groups = state_groups
        self._serializer = serializer
        self._tracker = tracker
        self._visibility = visibility
        self.lazy_members = LazyMembersCache()

    async def current_position(self) -> int:
        return self._tracker.current()

    async def fill_initial(self, ctx: SyncContext, result: SyncResult, to_position: int) -> None:
        await self._fill(ctx, result, None, to_position)

    async def fill_incremental(
        self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int
    ) -> None:
        await self._fill(ctx, result, from_position, to_position)

    # ------------------------------------------------------------------ classification

    async def _fill(self, ctx: SyncContext, result: SyncResult, since: int | None, to: int) -> None:
        memberships = await self._memberships_at(ctx.user_id, to)
        records = await self._rooms.get_rooms_by_nid(sorted(memberships))
        memberships = {n: m for n, m in memberships.items() if n in records and ctx.filter.room_allowed(records[n].room_id)}
        for nid, (membership, _, _) in memberships.items():
            if membership == "join":
                result.joined_room_ids.add(records[nid].room_id)
        result.wait_room_ids.update(result.joined_room_ids)
        if since is None:
            plans, invites, knocks = await self._plan_initial(ctx, memberships, records, to)
        else:
            plans, invites, knocks = await self._plan_incremental(ctx, result, memberships, records, since, to)
        if plans:
            await self._load_timelines(ctx, plans)
            await self._load_state(ctx, plans)
        await self._write_rooms(ctx, result, plans)
        await self._write_stripped(result, invites, "invite", "invite_state")
        await self._write_stripped(result, knocks, "knock", "knock_state")

    async def _memberships_at(self, user_id: str, to: int) -> dict[int, tuple[str, str, int]]:
        """The user's memberships as of stream position ``to`` (``membership, event_id, stream``)."""
        memberships = await self._rooms.get_user_memberships(user_id)
        for nid, (_, event_id, stream) in list(memberships.items()):
            while stream > to:  # written after ``to``: rewind to the membership before it (rare)
                stored = await self._events.get_event(event_id)
                group = stored.state_group_before if stored is not None else None
                state = await self._state_groups.get_state(group) if group is not None else {}
                prev_id = state.get((MEMBER, user_id))
                prev = await self._events.get_event(prev_id) if prev_id is not None else None
                if prev is None or prev.event.membership is None:
                    del memberships[nid]
                    break
                event_id, stream = prev.event_id, prev.stream_ordering
                memberships[nid] = (prev.event.membership, event_id, stream)
        return memberships

    async def _plan_initial(
        self,
        ctx: SyncContext,
        memberships: Mapping[int, tuple[str, str, int]],
        records: Mapping[int, RoomRecord],
        to: int,
    ) -> tuple[list[_RoomPlan], list[tuple[RoomRecord, str]], list[tuple[RoomRecord, str]]]:
        plans: list[_RoomPlan] = []
        invites: list[tuple[RoomRecord, str]] = []
        knocks: list[tuple[RoomRecord, str]] = []
        left: list[_RoomPlan] = []
        for nid, (membership, event_id, stream) in sorted(memberships.items()):
            room = records[nid]
            if membership == "join":
                plans.append(_RoomPlan(room, "join", 0, to, True, join_stream=stream))
            elif membership == "invite":
                invites.append((room, event_id))
            elif membership == "knock":
                knocks.append((room, event_id))
            elif ctx.filter.include_leave:
                left.append(_RoomPlan(room, "leave", 0, stream, True))
        if left:
            forgotten = await self._rooms.get_forgotten_rooms(ctx.user_id)
            left = [p for p in left if p.room.room_nid not in forgotten]
            joins = await self._rooms.get_latest_join_streams(ctx.user_id, [p.room.room_nid for p in left])
            for plan in left:
                plan.show_state = plan.room.room_nid in joins
        return plans + left, invites, knocks

    async def _plan_incremental(
        self,
        ctx: SyncContext,
        result: SyncResult,
        memberships: Mapping[int, tuple[str, str, int]],
        records: Mapping[int, RoomRecord],
        since: int,
        to: int,
    ) -> tuple[list[_RoomPlan], list[tuple[RoomRecord, str]], list[tuple[RoomRecord, str]]]:
        changes: dict[int, list[str]] = {}
        for nid, event_id, _ in await self._rooms.get_membership_events_for_user(ctx.user_id, since, to):
            changes.setdefault(nid, []).append(event_id)
        before = await self._memberships_before(ctx.user_id, changes)
        joined = [n for n, m in memberships.items() if m[0] == "join"]
        active = await self._events.get_rooms_changed_since(joined, since) if joined else set()
        plans: list[_RoomPlan] = []
        invites: list[tuple[RoomRecord, str]] = []
        knocks: list[tuple[RoomRecord, str]] = []
        left: list[_RoomPlan] = []
        for nid, (membership, event_id, stream) in sorted(memberships.items()):
            room, changed = records[nid], nid in changes
            prev, saw = before.get(nid, (None, set()))
            if membership == "join":
                newly = changed and (prev != "join" or saw != {"join"})
                if newly:
                    result.newly_joined_room_ids.add(room.room_id)
                if newly or ctx.full_state or nid in active:
                    plans.append(_RoomPlan(room, "join", since, to, newly or ctx.full_state, join_stream=stream))
            elif not changed:
                continue
            elif membership == "invite":
                invites.append((room, event_id))
            elif membership == "knock":
                knocks.append((room, event_id))
            else:
                if prev == "join" or "join" in saw:
                    result.newly_left_room_ids.add(room.room_id)
                left.append(_RoomPlan(room, "leave", since, stream, prev != "join" or "join" in saw))
        if left:
            forgotten = await self._rooms.get_forgotten_rooms(ctx.user_id)
            left = [p for p in left if p.room.room_nid not in forgotten]
            joins = await self._rooms.get_latest_join_streams(ctx.user_id, [p.room.room_nid for p in left])
            for plan in left:
                plan.show_state = plan.room.room_nid in joins
        return plans + left, invites, knocks

    async def _memberships_before(
        self, user_id: str, changes: Mapping[int, list[str]]
    ) -> dict[int, tuple[str | None, set[str]]]:
        """Per changed room: the user's membership before its first change in the range, and the set
        of memberships the range's events set."""
        if not changes:
            return {}
        loaded = await self._events.get_events(e for ids in changes.values() for e in ids)
        prev_ids: dict[int, str] = {}
        saw: dict[int, set[str]] = {}
        for nid, ids in changes.items():
            saw[nid] = {loaded[e].event.membership or "" for e in ids if e in loaded}
            first = loaded.get(ids[0])
            if first is None or first.state_group_before is None:
                continue
            state = await self._state_groups.get_state(first.state_group_before)
            prev_id = state.get((MEMBER, user_id))
            if prev_id is not None:
                prev_ids[nid] = prev_id
        prev_events = await self._events.get_events(prev_ids.values())
        result: dict[int, tuple[str | None, set[str]]] = {}
        for nid in changes:
            prev = prev_events.get(prev_ids.get(nid, ""))
            result[nid] = (prev.event.membership if prev is not None else None, saw[nid])
        return result

    # ------------------------------------------------------------------ timelines

    async def _load_timelines(self, ctx: SyncContext, plans: list[_RoomPlan]) -> None:
        limit = ctx.filter.timeline_limit
        page = limit + 1
        by_nid = {p.room.room_nid: p for p in plans}
        matched: dict[int, list[StoredEvent]] = {nid: [] for nid in by_nid}
        bounds = {nid: (p.lower, p.upper) for nid, p in by_nid.items()}
        for _round in range(MAX_SCAN_ROUNDS):
            ids = await self._events.get_recent_room_event_ids(bounds, page)
            loaded = await self._events.get_events(e for room_ids in ids.values() for e in room_ids)
            candidates: list[StoredEvent] = []
            for nid, room_ids in ids.items():
                plan = by_nid[nid]
                raw = [loaded[e] for e in room_ids if e in loaded]
                if plan.anchor is None and raw:
                    plan.anchor = raw[0]
                candidates.extend(s for s in raw if self._timeline_match(ctx.filter, plan, s))
                if len(room_ids) < page or not raw:
                    del bounds[nid]  # the range is exhausted
                else:
                    bounds[nid] = (plan.lower, raw[-1].stream_ordering - 1)
            for stored in await self._visible(ctx.user_id, by_nid, candidates):
                matched[stored.room_nid].append(stored)
            for nid in list(bounds):
                if len(matched[nid]) > limit:
                    del bounds[nid]
            if not bounds:
                break
            page = min(page * 2, MAX_PAGE)
        for nid, plan in by_nid.items():
            found = matched[nid]
            plan.limited = len(found) > limit or nid in bounds
            plan.timeline = list(reversed(found[:limit]))

    @staticmethod
    def _timeline_match(flt: SyncFilter, plan: _RoomPlan, stored: StoredEvent) -> bool:
        event = stored.event
        return flt.timeline.matches_event(plan.room.room_id, event.type, event.sender, event.content)

    async def _visible(
        self, user_id: str, plans: Mapping[int, _RoomPlan], candidates: list[StoredEvent]
    ) -> list[StoredEvent]:
        """History visibility; events after the user's current join are visible without checks."""
        join_streams = {p.room.room_nid: p.join_stream for p in plans.values() if p.join_stream is not None}
        rest = [s for s in candidates if s.room_nid not in join_streams or s.stream_ordering <= join_streams[s.room_nid]]
        if not rest:
            return candidates
        allowed = {s.event_id for s in await self._visibility.filter_events_for_client(user_id, rest)}
        rest_ids = {s.event_id for s in rest}
        return [s for s in candidates if s.event_id not in rest_ids or s.event_id in allowed]

    # ------------------------------------------------------------------ state

    async def _load_state(self, ctx: SyncContext, plans: list[_RoomPlan]) -> None:
        need_anchor = {p.room.room_nid: (0, p.upper) for p in plans if p.anchor is None}
        need_since = {p.room.room_nid: (0, p.lower) for p in plans if not p.full_state and p.show_state}
        anchors = await self._newest_events(need_anchor)
        since_events = await self._newest_events(need_since)
        for plan in plans:
            nid = plan.room.room_nid
            plan.anchor = plan.anchor or anchors.get(nid)
            plan.since_event = since_events.get(nid)
            if not plan.show_state:
                continue
            start = await self._state_at_start(plan)
            plan.start_state = start
            if plan.full_state:
                plan.state_ids = dict(start)
            else:
                since_group = plan.since_event.state_group_after if plan.since_event is not None else None
                since_state = await self._group_state(since_group)
                plan.state_ids = {k: v for k, v in start.items() if since_state.get(k) != v}

    async def _newest_events(self, bounds: Mapping[int, tuple[int, int]]) -> dict[int, StoredEvent]:
        if not bounds:
            return {}
        ids = await self._events.get_recent_room_event_ids(bounds, 1)
        loaded = await self._events.get_events(i[0] for i in ids.values() if i)
        return {nid: loaded[i[0]] for nid, i in ids.items() if i and i[0] in loaded}

    async def _state_at_start(self, plan: _RoomPlan) -> StateMap:
        if plan.timeline:
            return await self._group_state(plan.timeline[0].state_group_before)
        if plan.anchor is not None:
            return await self._group_state(plan.anchor.state_group_after)
        return {}

    async def _group_state(self, group: int | None) -> StateMap:
        return await self._state_groups.get_state(group) if group is not None else {}

    # ------------------------------------------------------------------ writing

    async def _write_rooms(self, ctx: SyncContext, result: SyncResult, plans: list[_RoomPlan]) -> None:
        plans = [p for p in plans if p.full_state or p.timeline or p.state_ids or p.section == "leave"]
        if not plans:
            if ctx.next_batch is not None and ctx.filter.state.lazy_load_members:
                self._record_lazy(ctx, self.lazy_members.sent(ctx.user_id, ctx.device_id, ctx.since_token))
            return
        summaries = await self._rooms.get_room_summaries(
            [p.room.room_nid for p in plans if p.section == "join"], ctx.user_id
        )
        lazy = ctx.filter.state.lazy_load_members
        sent_before = self.lazy_members.sent(ctx.user_id, ctx.device_id, ctx.since_token) if lazy else {}
        sent_now: dict[str, frozenset[str]] = dict(sent_before)
        candidates: dict[int, dict[StateKey, str]] = {}
        for plan in plans:
            heroes = summaries.get(plan.room.room_nid, (0, 0, []))[2]
            candidates[id(plan)] = self._state_candidates(ctx, plan, heroes, sent_before.get(plan.room.room_id, frozenset()))
        state_events = await self._events.get_events(e for c in candidates.values() for e in c.values())
        chosen: dict[int, list[StoredEvent]] = {}
        for plan in plans:
            state = self._filter_state(ctx, candidates[id(plan)], state_events)
            chosen[id(plan)] = state
            members = {s.event_id for s in state if s.event.type == MEMBER}
            if members:
                sent_now[plan.room.room_id] = sent_now.get(plan.room.room_id, frozenset()) | members
        if ctx.next_batch is not None and ctx.filter.state.lazy_load_members:
            self._record_lazy(ctx, sent_now)
        everything = [s for p in plans for s in (*p.timeline, *chosen[id(p)])]
        serialised = iter(await self._serialise(ctx, everything))
        for plan in plans:
            timeline = [next(serialised) for _ in plan.timeline]
            state_json = [next(serialised) for _ in chosen[id(plan)]]
            body: JsonDict = {"events": timeline, "limited": plan.limited}
            prev_batch = self._prev_batch(plan)
            if prev_batch is not None:
                body["prev_batch"] = prev_batch
            if plan.section == "join":
                entry = result.joined_room(plan.room.room_id)
                joined, invited, heroes = summaries.get(plan.room.room_nid, (0, 0, []))
                entry["summary"] = {"m.heroes": heroes, "m.joined_member_count": joined, "m.invited_member_count": invited}
            else:
                entry = result.leave.setdefault(plan.room.room_id, {"account_data": {"events": []}})
            entry["timeline"] = body
            entry["state"] = {"events": state_json}

    def _record_lazy(self, ctx: SyncContext, sent: Mapping[str, frozenset[str]]) -> None:
        assert ctx.next_batch is not None
        self.lazy_members.record(ctx.user_id, ctx.device_id, ctx.next_batch, sent)

    @staticmethod
    def _prev_batch(plan: _RoomPlan) -> str | None:
        if plan.timeline:
            first = plan.timeline[0]
            return RoomPosition(first.depth, first.stream_ordering - 1).encode()
        if plan.anchor is not None:
            return RoomPosition(plan.anchor.depth, plan.anchor.stream_ordering).encode()
        return None

    @staticmethod
    def _state_candidates(
        ctx: SyncContext, plan: _RoomPlan, heroes: Sequence[str], already_sent: frozenset[str]
    ) -> dict[StateKey, str]:
        """The state keys to consider sending, after lazy-loading (see the module docstring).

        Full state keeps the member events of the wanted users (timeline senders, the heroes of a room
        without a name or alias, the user);
        a delta keeps every member change of the gap and adds the wanted users' member events from
        the state at the start of the timeline, unless the device already has them.
        """
        if not ctx.filter.state.lazy_load_members:
            return dict(plan.state_ids)
        flt = ctx.filter.state
        wanted: set[str] = {s.event.sender for s in plan.timeline}
        if not any(k in plan.start_state for k in (("m.room.name", ""), ("m.room.canonical_alias", ""))):
            wanted.update(heroes)  # heroes name the room only when it has no name or alias
        if plan.full_state:
            wanted.add(ctx.user_id)
        chosen: dict[StateKey, str] = {}
        for key, event_id in plan.state_ids.items():
            if key[0] != MEMBER or not plan.full_state:
                chosen[key] = event_id
            elif key[1] in wanted and (flt.include_redundant_members or event_id not in already_sent):
                chosen[key] = event_id
        if not plan.full_state and plan.show_state:
            for user in wanted:
                member_id = plan.start_state.get((MEMBER, user))
                if member_id is not None and (flt.include_redundant_members or member_id not in already_sent):
                    chosen.setdefault((MEMBER, user), member_id)
        return chosen

    @staticmethod
    def _filter_state(ctx: SyncContext, state_ids: Mapping[StateKey, str], loaded: Mapping[str, StoredEvent]) -> list[StoredEvent]:
        """Applies the ``room.state`` filter's types and senders."""
        flt = ctx.filter.state
        kept: list[StoredEvent] = []
        for (etype, _skey), event_id in sorted(state_ids.items()):
            stored = loaded.get(event_id)
            if stored is not None and flt.matches(etype, stored.event.sender):
                kept.append(stored)
        return kept

    async def _serialise(self, ctx: SyncContext, events: list[StoredEvent]) -> list[JsonDict]:
        if ctx.filter.event_format == "federation":
            out: list[JsonDict] = []
            for stored in events:
                pdu: Mapping[str, Any] = stored.event.pdu
                if stored.redacted_by is not None:
                    pdu = redact(pdu, stored.event.room_version)
                out.append(dict(pdu))
        else:
            out = await self._serializer.serialize(events, Viewer(ctx.user_id, ctx.device_id), include_room_id=False)
        fields = ctx.filter.event_fields
        return out if fields is None else [apply_event_fields(e, fields) for e in out]

    async def _write_stripped(
        self, result: SyncResult, rooms: list[tuple[RoomRecord, str]], section: str, key: str
    ) -> None:
        """Invites and knocks: stripped state before the membership event, plus that event."""
        if not rooms:
            return
        members = await self._events.get_events(e for _, e in rooms)
        wanted: dict[str, list[str]] = {}
        for room, event_id in rooms:
            stored = members.get(event_id)
            if stored is None:
                continue
            state = await self._group_state(stored.state_group_before)
            keys = [*STRIPPED_STATE_KEYS, (MEMBER, stored.event.sender)]
            wanted[room.room_id] = [state[k] for k in keys if k in state]
        loaded = await self._events.get_events(e for ids in wanted.values() for e in ids)
        target = result.invite if section == "invite" else result.knock
        for room, event_id in rooms:
            stored = members.get(event_id)
            if stored is None:
                continue
            events = [loaded[e] for e in wanted.get(room.room_id, []) if e in loaded]
            events = [e for e in events if e.event_id != event_id] + [stored]
            stripped = [_stripped(e) for e in events]
            out_of_band = stored.event.unsigned.get(f"{section}_room_state")
            if stored.state_group_before is None and isinstance(out_of_band, list):
                # A room we are not in (an invite from another server, a remote knock): the stripped
                # state its server sent, stored with the membership event (ADR 0016).
                stripped = [dict(e) for e in out_of_band if isinstance(e, Mapping)] + stripped[-1:]
            target[room.room_id] = {key: {"events": stripped}}


def _stripped(stored: StoredEvent) -> JsonDict:
    event = stored.event
    pdu: Mapping[str, Any] = event.pdu
    if stored.redacted_by is not None:
        pdu = redact(pdu, event.room_version)
    return {
        "type": event.type,
        "state_key": event.state_key or "",
        "content": dict(pdu.get("content", {})),
        "sender": event.sender,
    }
