"""Serialising events for clients (spec client-server-api, "Room Event Format" / ``ClientEvent``).

One function turns stored events into client JSON everywhere events are served (``/sync``,
``/messages``, ``/context``, ``/event``, search, WebSocket), so redaction, ``unsigned`` and
per-device fields are applied the same way on every path. Work that does not depend on the viewer
(redaction, ``prev_content``) is done once per event and cached; per-viewer fields (``age``,
``transaction_id``) are added at the end (PERFORMANCE.md, "recomputing per recipient").

Bundled aggregations (``unsigned.m.relations``, spec "Aggregations of child events") come from an
optional :class:`AggregationBundler` (set by the relations feature): one call per page of events.
Events it embeds (the latest edit, a thread's latest reply) are serialised by this same class one
bundling level down, so nesting is bounded (:data:`MAX_BUNDLE_DEPTH`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.state_groups import StateGroupStore
from sc_proto.events.redaction import redact

JsonDict = dict[str, Any]

MAX_BUNDLE_DEPTH = 2
"""Levels of bundled aggregations: an event's bundle, and the bundles of the events embedded in it."""


@dataclass(frozen=True)
class Viewer:
    """Who events are serialised for (per-device fields depend on it)."""

    user_id: str
    device_id: str | None


NestedSerializer = Callable[[Sequence[StoredEvent]], Awaitable[list[JsonDict]]]
"""Serialises events embedded in a bundle, for the same viewer and form, one bundling level down."""


class AggregationBundler(Protocol):
    """Computes ``unsigned.m.relations`` for a page of events."""

    async def bundle(
        self, events: Sequence[StoredEvent], viewer: Viewer | None, serialize_nested: NestedSerializer
    ) -> dict[str, JsonDict]:
        """``m.relations`` per event ID, for the events of ``events`` that have any."""
        ...


@dataclass(frozen=True)
class _CachedBase:
    """A cached viewer-independent client form and the replaced state event it embeds."""

    body: JsonDict
    prev_id: str | None
    prev_redacted: bool


class EventSerializer:
    """Serialises stored events as client events.

    Args:
        events: the event store (redaction events, previous state events).
        state_groups: the state-group store (``prev_content`` of state events).
        time_msec: the clock (``unsigned.age``).
        cache_size: serialised base forms kept in memory.
    """

    def __init__(
        self, events: EventStore, state_groups: StateGroupStore, time_msec: Callable[[], int], cache_size: int = 20_000
    ) -> None:
        self._events = events
        self._state_groups = state_groups
        self._now = time_msec
        self._cache: OrderedDict[tuple[str, str | None], _CachedBase] = OrderedDict()
        self._cache_size = cache_size
        self.bundler: AggregationBundler | None = None
        """Adds bundled aggregations when set (the relations feature sets it at start)."""

    async def serialize(
        self,
        stored_events: Iterable[StoredEvent],
        viewer: Viewer | None,
        *,
        include_room_id: bool = True,
        bundle_aggregations: bool = True,
    ) -> list[JsonDict]:
        """Client JSON for each event, in order.

        Args:
            stored_events: the events (already filtered for visibility by the caller).
            viewer: who receives them (``transaction_id`` goes only to the sending device).
            include_room_id: False for ``/sync`` timelines and state, where the room is implied.
            bundle_aggregations: add ``unsigned.m.relations`` (when a bundler is set).
        """
        depth = MAX_BUNDLE_DEPTH if bundle_aggregations else 0
        return await self._serialize(list(stored_events), viewer, include_room_id, depth)

    async def _serialize(
        self, events: list[StoredEvent], viewer: Viewer | None, include_room_id: bool, bundle_depth: int
    ) -> list[JsonDict]:
        bases = await self._bases(events)
        bundles: Mapping[str, JsonDict] = {}
        if self.bundler is not None and bundle_depth > 0 and events:

            async def nested(embedded: Sequence[StoredEvent]) -> list[JsonDict]:
                return await self._serialize(list(embedded), viewer, include_room_id, bundle_depth - 1)

            bundles = await self.bundler.bundle(events, viewer, nested)
        now = self._now()
        out: list[JsonDict] = []
        for stored, base in zip(events, bases, strict=True):
            body = dict(base)
            unsigned = dict(body.get("unsigned", {}))
            unsigned["age"] = max(0, now - stored.event.origin_server_ts)
            if (
                viewer is not None
                and stored.txn_id is not None
                and stored.event.sender == viewer.user_id
                and stored.device_id == viewer.device_id
            ):
                unsigned["transaction_id"] = stored.txn_id
            relations = bundles.get(stored.event_id)
            if relations:
                unsigned["m.relations"] = relations
            body["unsigned"] = unsigned
            if not include_room_id:
                body.pop("room_id", None)
            out.append(body)
        return out

    async def _bases(self, events: list[StoredEvent]) -> list[JsonDict]:
        """The viewer-independent client form of each event (cached).

        A cached form embeds ``prev_content``: it is reused only while the replaced state event's
        redaction status is the one it was built with (that event may be redacted later).
        """
        results: list[JsonDict | None] = []
        missing: list[int] = []
        hits: dict[int, _CachedBase] = {}
        for i, stored in enumerate(events):
            cached = self._cache.get((stored.event_id, stored.redacted_by))
            results.append(None if cached is None else cached.body)
            if cached is None:
                missing.append(i)
            elif cached.prev_id is not None:
                hits[i] = cached
        if hits:
            prevs = await self._events.get_events(c.prev_id for c in hits.values() if c.prev_id is not None)
            for i, cached in hits.items():
                replaced = prevs.get(cached.prev_id or "")
                if replaced is None or (replaced.redacted_by is not None) != cached.prev_redacted:
                    results[i] = None
                    missing.append(i)
            missing.sort()
        if missing:
            redaction_ids = [events[i].redacted_by for i in missing if events[i].redacted_by]
            redactions = await self._events.get_events([r for r in redaction_ids if r])
            prev = await self._prev_state([events[i] for i in missing])
            for i in missing:
                stored = events[i]
                prev_event = prev.get(stored.event_id)
                base = self._base(stored, redactions, prev_event)
                key = (stored.event_id, stored.redacted_by)
                self._cache[key] = _CachedBase(
                    base,
                    None if prev_event is None else prev_event.event_id,
                    prev_event is not None and prev_event.redacted_by is not None,
                )
                self._cache.move_to_end(key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
                results[i] = base
        return [r for r in results if r is not None]

    def _base(self, stored: StoredEvent, redactions: Mapping[str, StoredEvent], prev: StoredEvent | None) -> JsonDict:
        event = stored.event
        pdu: Mapping[str, Any] = event.pdu
        if stored.redacted_by is not None:
            pdu = redact(pdu, event.room_version)
        body: JsonDict = {
            "content": dict(pdu.get("content", {})),
            "event_id": event.event_id,
            "origin_server_ts": event.origin_server_ts,
            "room_id": event.room_id,
            "sender": event.sender,
            "type": event.type,
        }
        if event.state_key is not None:
            body["state_key"] = event.state_key
        if event.type == "m.room.redaction" and event.redacts is not None and stored.redacted_by is None:
            body["redacts"] = event.redacts  # the top-level key stays for older clients (v11 moved it)
        unsigned: JsonDict = {}
        if stored.redacted_by is not None:
            redaction = redactions.get(stored.redacted_by)
            if redaction is not None:
                unsigned["redacted_because"] = self._base(redaction, {}, None)
        if prev is not None:
            unsigned["replaces_state"] = prev.event_id
            prev_pdu = redact(prev.event.pdu, prev.event.room_version) if prev.redacted_by else prev.event.pdu
            unsigned["prev_content"] = dict(prev_pdu.get("content", {}))
            unsigned["prev_sender"] = prev.event.sender
        if unsigned:
            body["unsigned"] = unsigned
        return body

    async def _prev_state(self, events: list[StoredEvent]) -> dict[str, StoredEvent]:
        """For state events, the state event each one replaced (if any)."""
        wanted: dict[str, str] = {}
        for stored in events:
            event = stored.event
            if event.state_key is None or stored.state_group_before is None:
                continue
            state = await self._state_groups.get_state(stored.state_group_before)
            prev_id = state.get((event.type, event.state_key))
            if prev_id is not None and prev_id != event.event_id:
                wanted[event.event_id] = prev_id
        loaded = await self._events.get_events(wanted.values())
        return {eid: loaded[pid] for eid, pid in wanted.items() if pid in loaded}
