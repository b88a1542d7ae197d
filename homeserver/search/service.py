"""Server-side search of room events (spec client-server-api, "Server Side Search").

Theory of operation:

* Which rooms: every room the user is joined to, and every room they left (or were banned from)
  after having joined, except forgotten ones; the spec searches "all rooms that the user has been
  in, including those that they have left". In a departed room nothing after the departure is ever
  returned ("it won't include events in rooms that happened after you left").
* Which events: index rows matching every word of the term (:mod:`homeserver.storage.stores.search`),
  then the filter's conditions, then history visibility
  (:meth:`~homeserver.rooms.visibility.HistoryVisibilityFilter.filter_events_for_client`), so a user
  finds only what ``/messages`` would show them. Events go out through the shared serializer.
* Pages: index rows are read a batch at a time (a few rounds when visibility hides many), and
  ``next_batch`` always points just past the last row *read*, never the last result returned, so
  hidden rows are skipped once and no result appears on two pages. The first page fixes an
  events-stream snapshot; later pages never include events that arrived after it. Rank pages are
  offsets into the rank order; recency pages continue below the last stream ordering read.
* ``count`` is an estimate (the spec allows one): the number of matching index rows scaled by the
  visible fraction of the rows read, exact when everything fitted on the first page. It never
  reveals the exact number of matches the user may not see.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events.serialize import EventSerializer, Viewer
from homeserver.rooms.pagination import RoomEventFilter, position_before, position_of
from homeserver.rooms.visibility import MEMBER_TYPE, HistoryVisibilityFilter
from homeserver.search.indexer import extract_search_text
from homeserver.search.query import (
    ContextRequest,
    RoomEventsCriteria,
    SearchBatch,
    iter_words,
)
from homeserver.storage.ids import StreamPositionTracker
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.rooms import RoomStore
from homeserver.storage.stores.search import SearchHit, SearchQuery, SearchStore
from homeserver.storage.stores.state_groups import StateGroupStore
from sc_proto.errors import MatrixError

JsonDict = dict[str, Any]

MAX_ROUNDS = 5
"""Batches of index rows read at most per request when filters or visibility hide results."""

MIN_BATCH = 20
"""Index rows read per batch at least (a batch is at least one page)."""

MAX_HIGHLIGHTS = 50


@dataclass(frozen=True)
class _SearchableRoom:
    room_id: str
    cap: int | None
    """The user's departure (stream ordering) in a room they left: nothing later is returned."""


@dataclass(frozen=True)
class _Page:
    results: list[tuple[SearchHit, StoredEvent]]
    position: int
    rows_read: int
    more: bool


class RoomEventSearch:
    """Answers ``room_events`` searches.

    Args:
        store: the search index.
        events: the event store.
        rooms: the room store (memberships, room IDs).
        state_groups: the state-group store (historic profiles).
        visibility: history visibility.
        serializer: client serialisation of events.
        tracker: the events stream position (snapshot of a first page).
    """

    def __init__(
        self,
        store: SearchStore,
        events: EventStore,
        rooms: RoomStore,
        state_groups: StateGroupStore,
        visibility: HistoryVisibilityFilter,
        serializer: EventSerializer,
        tracker: StreamPositionTracker,
    ) -> None:
        self._store = store
        self._events = events
        self._rooms = rooms
        self._state_groups = state_groups
        self._visibility = visibility
        self._serializer = serializer
        self._tracker = tracker

    async def search(self, viewer: Viewer, criteria: RoomEventsCriteria, next_batch: str | None) -> JsonDict:
        """The ``room_events`` response object for one page.

        Raises:
            MatrixError: 400 when ``next_batch`` is malformed or was minted for the other ordering.
        """
        if next_batch:
            batch = SearchBatch.decode(next_batch, criteria.by_rank)
        else:
            snapshot = self._tracker.current()
            batch = SearchBatch(criteria.by_rank, snapshot, 0 if criteria.by_rank else snapshot + 1)
        rooms = await self._searchable_rooms(viewer.user_id, criteria)
        query = SearchQuery(criteria.words, tuple(sorted(rooms)), criteria.keys, batch.max_stream, criteria.by_rank)
        page = await self._read_page(viewer.user_id, query, batch.position, criteria, rooms)
        body: JsonDict = {
            "results": await self._results(viewer, page.results, criteria, rooms),
            "count": await self._count(query, page, first_page=not next_batch),
            "highlights": _highlights(criteria.words, [s for _, s in page.results]),
        }
        if page.more:
            body["next_batch"] = SearchBatch(criteria.by_rank, batch.max_stream, page.position).encode()
        if criteria.group_by:
            body["groups"] = _groups(criteria.group_by, [s for _, s in page.results])
        if criteria.include_state:
            body["state"] = await self._room_states(viewer, [s for _, s in page.results])
        return body

    # ------------------------------------------------------------------ rooms and rows

    async def _searchable_rooms(self, user_id: str, criteria: RoomEventsCriteria) -> dict[int, _SearchableRoom]:
        memberships = await self._rooms.get_user_memberships(user_id)
        forgotten = await self._rooms.get_forgotten_rooms(user_id)
        current = {
            nid: m for nid, m in memberships.items() if m[0] in ("join", "leave", "ban") and nid not in forgotten
        }
        departed = [nid for nid, m in current.items() if m[0] != "join"]
        joins = await self._rooms.get_latest_join_streams(user_id, departed) if departed else {}
        caps: dict[int, int | None] = {}
        for nid, (membership, _, stream) in current.items():
            if membership == "join":
                caps[nid] = None
            elif joins.get(nid, stream) < stream:
                caps[nid] = stream  # they joined, then left: search up to their departure
        records = await self._rooms.get_rooms_by_nid(sorted(caps))
        wanted = set(criteria.rooms) if criteria.rooms is not None else None
        excluded = set(criteria.not_rooms)
        return {
            nid: _SearchableRoom(record.room_id, caps[nid])
            for nid, record in records.items()
            if (wanted is None or record.room_id in wanted) and record.room_id not in excluded
        }

    async def _read_page(
        self,
        user_id: str,
        query: SearchQuery,
        position: int,
        criteria: RoomEventsCriteria,
        rooms: Mapping[int, _SearchableRoom],
    ) -> _Page:
        limit = criteria.limit
        fetch = max(limit, MIN_BATCH)
        results: list[tuple[SearchHit, StoredEvent]] = []
        rows_read = 0
        for _ in range(MAX_ROUNDS):
            if query.by_rank:
                hits = await self._store.search(query, limit=fetch, offset=position)
            else:
                hits = await self._store.search(query, limit=fetch, before_stream=position)
            full = len(hits) == fetch
            visible = await self._visible(user_id, hits, criteria.event_filter, rooms)
            for index, hit in enumerate(hits):
                position = position + 1 if query.by_rank else hit.stream_ordering
                rows_read += 1
                stored = visible.get(hit.event_id)
                if stored is not None:
                    results.append((hit, stored))
                if len(results) >= limit:
                    return _Page(results, position, rows_read, full or index < len(hits) - 1)
            if not full:
                return _Page(results, position, rows_read, False)
        return _Page(results, position, rows_read, True)

    async def _visible(
        self,
        user_id: str,
        hits: Sequence[SearchHit],
        event_filter: RoomEventFilter,
        rooms: Mapping[int, _SearchableRoom],
    ) -> dict[str, StoredEvent]:
        """The hits the user may see and that pass the filter, by event ID."""
        loaded = await self._events.get_events(h.event_id for h in hits)
        candidates: list[StoredEvent] = []
        for hit in hits:
            stored = loaded.get(hit.event_id)
            room = rooms.get(hit.room_nid)
            if stored is None or room is None or stored.redacted_by is not None:
                continue
            if room.cap is not None and stored.stream_ordering > room.cap:
                continue
            if event_filter.matches(stored):
                candidates.append(stored)
        visible = await self._visibility.filter_events_for_client(user_id, candidates)
        return {s.event_id: s for s in visible}

    async def _count(self, query: SearchQuery, page: _Page, *, first_page: bool) -> int:
        if first_page and not page.more:
            return len(page.results)
        if page.rows_read == 0:
            return 0
        total = await self._store.count(query)
        return max(len(page.results), round(total * len(page.results) / page.rows_read))

    # ------------------------------------------------------------------ response parts

    async def _results(
        self,
        viewer: Viewer,
        results: Sequence[tuple[SearchHit, StoredEvent]],
        criteria: RoomEventsCriteria,
        rooms: Mapping[int, _SearchableRoom],
    ) -> list[JsonDict]:
        serialized = await self._serializer.serialize([s for _, s in results], viewer)
        out: list[JsonDict] = []
        for (hit, stored), event_json in zip(results, serialized, strict=True):
            entry: JsonDict = {"rank": hit.rank if math.isfinite(hit.rank) else 0.0, "result": event_json}
            if criteria.context is not None:
                cap = rooms[stored.room_nid].cap if stored.room_nid in rooms else None
                entry["context"] = await self._context(viewer, stored, criteria.context, criteria.event_filter, cap)
            out.append(entry)
        return out

    async def _context(
        self, viewer: Viewer, stored: StoredEvent, request: ContextRequest, event_filter: RoomEventFilter, cap: int | None
    ) -> JsonDict:
        """``events_before``/``events_after`` the result (visible ones), their tokens, and profiles."""
        types, not_types = event_filter.sql_types()
        pages: list[list[StoredEvent]] = []
        for backwards, count, key in (
            (True, request.before_limit, position_before(stored)),
            (False, request.after_limit, position_of(stored)),
        ):
            ids = await self._events.get_room_event_orderings(
                stored.room_nid, from_key=(key.depth, key.stream), to_key=None, backwards=backwards, limit=count,
                types=types, not_types=not_types, senders=event_filter.senders, not_senders=event_filter.not_senders,
            ) if count > 0 else []
            loaded = await self._events.get_events(ids)
            pages.append([loaded[e] for e in ids if e in loaded])
        before_raw, after_raw = pages
        start = position_before(before_raw[-1]) if before_raw else position_before(stored)
        end = position_of(after_raw[-1]) if after_raw else position_of(stored)
        before, after = [
            await self._visibility.filter_events_for_client(
                viewer.user_id,
                [e for e in page if event_filter.matches(e) and (cap is None or e.stream_ordering <= cap)],
            )
            for page in (before_raw, after_raw)
        ]
        context: JsonDict = {
            "start": start.encode(),
            "end": end.encode(),
            "events_before": await self._serializer.serialize(before, viewer),
            "events_after": await self._serializer.serialize(after, viewer),
        }
        if request.include_profile:
            context["profile_info"] = await self._profiles(stored, [stored, *before, *after])
        return context

    async def _profiles(self, result: StoredEvent, events: Sequence[StoredEvent]) -> JsonDict:
        """Each sender's display name and avatar as of the result event (historic profiles)."""
        group = result.state_group_after
        if group is None:
            return {}
        state = await self._state_groups.get_state(group)
        senders = sorted({e.event.sender for e in events})
        wanted = {s: state[(MEMBER_TYPE, s)] for s in senders if (MEMBER_TYPE, s) in state}
        members = await self._events.get_events(wanted.values())
        profiles: JsonDict = {}
        for sender, event_id in wanted.items():
            member = members.get(event_id)
            if member is None or member.redacted_by is not None:
                continue
            content = member.event.content
            profile = {k: content[k] for k in ("displayname", "avatar_url") if isinstance(content.get(k), str)}
            profiles[sender] = profile
        return profiles

    async def _room_states(self, viewer: Viewer, results: Sequence[StoredEvent]) -> JsonDict:
        """The state each room with results shows the user (current, or as of their departure)."""
        states: JsonDict = {}
        for room_id in dict.fromkeys(s.event.room_id for s in results):
            try:
                access = await self._visibility.get_room_access(viewer.user_id, room_id)
            except MatrixError:
                continue
            state = await self._visibility.get_visible_state(access)
            loaded = await self._events.get_events(state.values())
            events = [loaded[state[k]] for k in sorted(state) if state[k] in loaded]
            states[room_id] = await self._serializer.serialize(events, viewer)
        return states


def _groups(group_by: Sequence[str], results: Sequence[StoredEvent]) -> JsonDict:
    """``groups.<key>.<value> = {results: [event IDs], order}``; ``order`` ranks groups by their best
    result on this page (1 first). Groups carry no ``next_batch``: paginate with the top-level one."""
    groups: JsonDict = {}
    for key in group_by:
        bucket: dict[str, JsonDict] = {}
        for stored in results:
            value = stored.event.room_id if key == "room_id" else stored.event.sender
            entry = bucket.setdefault(value, {"results": [], "order": len(bucket) + 1})
            entry["results"].append(stored.event_id)
        groups[key] = bucket
    return groups


def _highlights(words: Sequence[str], results: Sequence[StoredEvent]) -> list[str]:
    """The query's words, plus the words of the results they matched as prefixes (``meet`` found
    ``meeting``), so clients can highlight what matched."""
    found: dict[str, None] = dict.fromkeys(words)
    for stored in results:
        extracted = extract_search_text(stored.event)
        if extracted is None:
            continue
        for word in iter_words(extracted[1]):
            if len(found) >= MAX_HIGHLIGHTS:
                break
            if any(word.startswith(w) for w in words):
                found.setdefault(word, None)
    return list(found)
