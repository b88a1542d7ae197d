"""Bundled aggregations: ``unsigned.m.relations`` on events served to clients.

Theory of operation (spec client-server-api, "Aggregations of child events" and the per-relation
"Server-side aggregation" sections):

* ``m.replace``: the most recent valid replacement (greatest ``origin_server_ts``, then greatest event
  ID), serialised like any event; never bundled on a redacted original. Replacements by anyone other
  than the original sender are not valid (the store's query applies the validity rules).
* ``m.thread``: ``latest_event`` (the latest reply, topologically, itself with bundled aggregations one
  level down), ``count`` and ``current_user_participated`` (the viewer sent the root or a reply).
* ``m.reference``: ``chunk`` of ``{"event_id"}`` of every reference.
* ``m.annotation`` is not aggregated (spec v1.7+). State events get no bundle (spec warning).
* Redacted children never count: the store skips them.

The viewer-independent part of each parent's aggregation (:class:`Summary`) is cached by event ID and
read for a whole page in one transaction (audit SCALE-4). Whether the parent is redacted, and who is
looking, are applied per call. The cache entry of an event is dropped after commit whenever a relation
to it is persisted or a relation to it (or the event itself) is redacted; a read that raced such a
change does not store its result.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from homeserver.events.serialize import JsonDict, NestedSerializer, Viewer
from homeserver.relations.model import REL_REFERENCE, REL_REPLACE, REL_THREAD
from homeserver.rooms.visibility import HistoryVisibilityFilter
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.relations import RelationStore, ThreadCounts


@dataclass(frozen=True)
class Summary:
    """What the server knows of one parent's children, whoever is looking.

    Attributes:
        edit_id: the latest valid replacement, if any.
        thread: the thread rooted at the event, if it has unredacted replies.
        references: the ``m.reference`` children, oldest first.
    """

    edit_id: str | None = None
    thread: ThreadCounts | None = None
    references: tuple[str, ...] = ()


_EMPTY = Summary()


class RelationAggregations:
    """Computes bundled aggregations for pages of events (the serializer's bundler).

    Args:
        store: the relations store.
        events: the event store (embedded events).
        visibility: history visibility (embedded events the viewer may not see are left out).
        cache_size: summaries kept in memory.
    """

    def __init__(
        self,
        store: RelationStore,
        events: EventStore,
        visibility: HistoryVisibilityFilter,
        cache_size: int = 50_000,
    ) -> None:
        self._store = store
        self._events = events
        self._visibility = visibility
        self._cache: OrderedDict[str, Summary] = OrderedDict()
        self._cache_size = cache_size
        self._reads_in_flight: list[set[str]] = []

    def invalidate(self, event_ids: Iterable[str]) -> None:
        """Forgets the summaries of ``event_ids`` (a relation to them was persisted or redacted)."""
        ids = set(event_ids)
        for event_id in ids:
            self._cache.pop(event_id, None)
        for pending in self._reads_in_flight:
            pending |= ids

    async def get_summaries(self, parents: Sequence[StoredEvent]) -> dict[str, Summary]:
        """The summary of each parent (an empty one when it has no children)."""
        out: dict[str, Summary] = {}
        missing: list[StoredEvent] = []
        for stored in parents:
            cached = self._cache.get(stored.event_id)
            if cached is None:
                missing.append(stored)
            else:
                self._cache.move_to_end(stored.event_id)
                out[stored.event_id] = cached
        if not missing:
            return out
        invalidated: set[str] = set()
        self._reads_in_flight.append(invalidated)
        try:
            rows = await self._store.get_aggregation_rows([(s.event_id, s.room_nid) for s in missing])
        finally:
            self._reads_in_flight.remove(invalidated)
        for stored in missing:
            event_id = stored.event_id
            edits = rows.edits.get(event_id)
            summary = Summary(
                edit_id=max(edits)[1] if edits else None,
                thread=rows.threads.get(event_id),
                references=tuple(rows.references.get(event_id, ())),
            )
            summary = _EMPTY if summary == _EMPTY else summary
            out[event_id] = summary
            if event_id not in invalidated:
                self._remember(event_id, summary)
        return out

    def _remember(self, event_id: str, summary: Summary) -> None:
        self._cache[event_id] = summary
        self._cache.move_to_end(event_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def bundle(
        self, events: Sequence[StoredEvent], viewer: Viewer | None, serialize_nested: NestedSerializer
    ) -> dict[str, JsonDict]:
        """``m.relations`` for each event of ``events`` that has any (keyed by event ID).

        Args:
            events: the events being served.
            viewer: who they are served to (None: no per-user filtering, no participation).
            serialize_nested: serialises embedded events in the same form, one bundling level down.
        """
        parents = [e for e in events if e.event.state_key is None and not e.outlier]
        if not parents:
            return {}
        summaries = await self.get_summaries(parents)
        embedded: set[str] = set()
        for stored in parents:
            summary = summaries[stored.event_id]
            if summary.edit_id is not None and stored.redacted_by is None:
                embedded.add(summary.edit_id)
            if summary.thread is not None and summary.thread.latest_event_id is not None:
                embedded.add(summary.thread.latest_event_id)
        serialized = await self._serialize_embedded(sorted(embedded), viewer, serialize_nested)
        out: dict[str, JsonDict] = {}
        for stored in parents:
            relations = self._relations_for(stored, summaries[stored.event_id], viewer, serialized)
            if relations:
                out[stored.event_id] = relations
        return out

    async def _serialize_embedded(
        self, event_ids: list[str], viewer: Viewer | None, serialize_nested: NestedSerializer
    ) -> dict[str, JsonDict]:
        if not event_ids:
            return {}
        loaded = await self._events.get_events(event_ids)
        candidates = [loaded[e] for e in event_ids if e in loaded]
        if viewer is not None:
            candidates = await self._visibility.filter_events_for_client(viewer.user_id, candidates)
        bodies = await serialize_nested(candidates)
        return {stored.event_id: body for stored, body in zip(candidates, bodies, strict=True)}

    @staticmethod
    def _relations_for(
        stored: StoredEvent, summary: Summary, viewer: Viewer | None, serialized: dict[str, JsonDict]
    ) -> JsonDict:
        relations: JsonDict = {}
        if summary.edit_id is not None and stored.redacted_by is None and summary.edit_id in serialized:
            relations[REL_REPLACE] = serialized[summary.edit_id]
        thread = summary.thread
        if thread is not None and thread.count > 0 and thread.latest_event_id in serialized:
            participated = viewer is not None and (
                viewer.user_id == stored.event.sender or viewer.user_id in thread.senders
            )
            relations[REL_THREAD] = {
                "latest_event": serialized[thread.latest_event_id],
                "count": thread.count,
                "current_user_participated": participated,
            }
        if summary.references:
            relations[REL_REFERENCE] = {"chunk": [{"event_id": e} for e in summary.references]}
        return relations
