"""The room input: one ordered queue per room for local events and received PDUs (DESIGN.md 2.4).

Theory of operation: every event that enters a room — built here (:meth:`RoomInput.send_local`,
:meth:`RoomInput.create_room`) or received from another server (:meth:`RoomInput.receive_pdu`) —
is handled inside the room's turn of one :class:`~homeserver.util.linearizer.Linearizer`, so local and
remote events are ordered by one mechanism. In its turn an event is authorised against the state
before it, persisted in one transaction (:class:`~homeserver.events.persister.EventPersister`) and the
room's head advanced (:class:`~homeserver.rooms.state_reader.RoomStateReader`).

Received PDUs (Server-Server API, "Checks performed on receipt of a PDU"). The caller (the federation
adapter) has already checked the PDU's format, signatures and content hash (steps 1-3); this module does
the rest:

* a known event is a DUPLICATE; a PDU for an unknown room that is not its create event is a 404;
* missing prev events are asked of the origin first (``get_missing_events``; those received are
  processed oldest first, so the auth events they carry arrive with them);
* step 4: auth against the event's own auth events (those we lack are first fetched from the origin,
  ``/event_auth``, checked and stored as outliers: :mod:`homeserver.events.auth_fetch`); failure
  stores it REJECTED (``rejected_reason``; never in current state, timeline or extremities);
* ``outlier=True``, or prev events still missing or without state after asking the origin: stored
  as an OUTLIER (no state, hidden from clients);
* step 5: the state before = the state after its prev events (one prev: its state group; several:
  state resolution with ``sc_proto.state``, room-version aware); failure -> REJECTED;
* step 6: auth against the room's current state; failure -> SOFT_FAILED (stored with its state, not a
  forward extremity, never sent to clients);
* otherwise ACCEPTED: it replaces its prev events among the forward extremities, and the current state
  becomes the state after it when its prevs covered every extremity, else the resolution of the
  states after every remaining extremity and the state after it (the same events give the same
  state whatever order they arrived in).

Backfill (:meth:`RoomInput.backfill`, called by ``/messages`` at the start of what we hold): older
events from another server are checked like received PDUs and stored in the timeline behind what we
hold, with negative stream orderings; they move neither the extremities nor the current state.

Invariant: only code holding the room's turn changes the room's head or its rows.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from homeserver.api.ports import RemoteEventFetcher
from homeserver.api.services import PDUOutcome, PDUStatus
from homeserver.events.auth_fetch import fetch_missing_auth_events
from homeserver.events.persister import EventPersister, PersistContext, PersistedEvent, TxnKey
from homeserver.rooms.event_builder import LocalEventBuilder
from homeserver.rooms.state_reader import RoomHead, RoomStateReader
from homeserver.storage.ids import IdAllocator
from homeserver.storage.pool import DatabasePool
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.rooms import RoomRecord, RoomStore
from homeserver.storage.stores.state_groups import StateGroupStore, StateMap
from homeserver.util.linearizer import Linearizer
from sc_proto.auth.power_levels import get_named_level, get_user_power_level
from sc_proto.auth.rules import check_auth, check_auth_events_match
from sc_proto.errors import AuthError, Codes, InvalidEventError, InvalidIdentifierError, MatrixError
from sc_proto.events.model import Event, StateKey
from sc_proto.identifiers import UserID
from sc_proto.room_versions import RoomVersion, get_room_version
from sc_proto.state import MissingEventsError, prepare

logger = logging.getLogger(__name__)

MAX_MISSING_EVENTS = 20
"""How many missing prev events to ask the origin for (``/get_missing_events`` limit)."""

MAX_BACKFILL_EXHAUSTED = 10_000
"""Oldest events remembered as having nothing older to backfill (the memo is cleared beyond it)."""

EventCheck = Callable[[RoomHead, Event], Awaitable[None]]
"""A check run on each local event in the room's turn; raises :class:`MatrixError` to refuse it."""


class RoomInput:
    """The per-room ordered input of events; implements :class:`homeserver.api.services.RoomEventsAPI`.

    Args:
        pool: the database pool (room id allocation).
        events: the event store.
        rooms: the room store.
        state_groups: the state-group store.
        state: the room-state reader (head cache).
        builder: the local event builder.
        persister: writes events.
        room_nids: allocator of room ids.
        time_msec: the clock.
        fetcher: asks other servers for missing events (default: none).
    """

    def __init__(
        self,
        pool: DatabasePool,
        events: EventStore,
        rooms: RoomStore,
        state_groups: StateGroupStore,
        state: RoomStateReader,
        builder: LocalEventBuilder,
        persister: EventPersister,
        room_nids: IdAllocator,
        time_msec: Callable[[], int],
        fetcher: RemoteEventFetcher | None = None,
    ) -> None:
        from homeserver.api.local import LocalOnlyEventFetcher

        self._pool = pool
        self._events = events
        self._rooms = rooms
        self._state_groups = state_groups
        self._state = state
        self._builder = builder
        self._persister = persister
        self._room_nids = room_nids
        self._now = time_msec
        self._fetcher: RemoteEventFetcher = fetcher if fetcher is not None else LocalOnlyEventFetcher()
        self.queue = Linearizer("room_input")
        self._rooms_being_created: set[str] = set()
        self._backfill_exhausted: set[str] = set()
        self.event_checks: list[EventCheck] = []
        """Checks every locally created event passes, in the room's turn after the auth rules (e.g.
        duplicate annotations); a check raises :class:`MatrixError` to refuse the event."""

    @property
    def fetcher(self) -> RemoteEventFetcher:
        """The port that fetches missing events (also used by backfill)."""
        return self._fetcher

    async def check_own_auth_events(self, event: Event, head: RoomHead) -> str | None:
        """Step 4 of the PDU checks (see :meth:`_check_own_auth_events`); for backfill."""
        return await self._check_own_auth_events(event, head)

    def use_fetcher(self, fetcher: RemoteEventFetcher) -> None:
        """Installs the port that fetches missing events (composition root, before serving): the
        federation adapter's fetcher reads the rooms core, so it is built after this object."""
        self._fetcher = fetcher

    # ------------------------------------------------------------------ local events

    async def send_local(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        txn: TxnKey | None = None,
        redacts: str | None = None,
        extra_users: frozenset[str] = frozenset(),
        check: Callable[[RoomHead, dict[StateKey, Event]], Any] | None = None,
        before_persist: Callable[[Event], Awaitable[Event]] | None = None,
    ) -> StoredEvent:
        """Creates, authorises and persists one local event in ``room_id`` in the room's turn.

        Args:
            check: an extra check with the head and the auth state (raise to refuse).
            before_persist: awaited with the authorised event; returns the event to persist instead
                (same event ID), e.g. an invite countersigned by the invitee's server. Raise to refuse.

        Raises:
            MatrixError: 404 when the room is unknown, 403 when the auth rules refuse the event,
                413 when it is too large.
        """
        async with self.queue.queue(room_id):
            if txn is not None:
                existing = await self._events.get_txn_event_id(txn.user_id, txn.device_id, txn.room_id, txn.txn_id)
                if existing is not None:
                    stored = await self._events.get_event(existing)
                    if stored is not None:
                        return stored
            head = await self._state.get_head(room_id)
            if head is None:
                raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
            event, state_events = await self._builder.build(head, sender, event_type, content, state_key, redacts)
            try:
                check_auth(event, state_events, head.version)
            except AuthError as e:
                raise MatrixError(403, Codes.FORBIDDEN, e.reason) from None
            if check is not None:
                await _maybe_await(check(head, state_events))
            for event_check in self.event_checks:
                await event_check(head, event)
            if before_persist is not None:
                event = await before_persist(event)
            applies = None
            if event.type == "m.room.redaction" and event.redacts is not None:
                applies = await self._redaction_target(head, event, state_events)
            persisted = await self._persister.persist(
                head.room, event, PersistContext(head.state_group, head.state, txn, applies, extra_users)
            )
            self._advance_linear(head, persisted)
            return persisted.stored

    def _advance_linear(self, head: RoomHead, persisted: PersistedEvent) -> None:
        """Installs the head after an event whose prevs were all the room's extremities."""
        stored = persisted.stored
        self._state.install_head(
            RoomHead(
                head.room, head.version, stored.state_group_after, persisted.state_after, (stored.event_id,),
                max(head.max_depth, stored.depth),
            )
        )

    async def _redaction_target(self, head: RoomHead, redaction: Event, state: dict[StateKey, Event]) -> str | None:
        """The event a redaction takes effect on, or None when it must not (not the sender's own
        event and the sender lacks the ``redact`` power level, or the target is in another room)."""
        target_id = redaction.redacts
        assert target_id is not None
        target = await self._events.get_event(target_id)
        if target is None or target.event.room_id != head.room.room_id:
            return None
        if target.event.sender == redaction.sender:
            return target_id
        pl = state.get(("m.room.power_levels", ""))
        create = state.get(("m.room.create", ""))
        level = get_user_power_level(redaction.sender, pl, create, head.version)
        if level >= get_named_level(pl, "redact", 50, head.version):
            return target_id
        raise MatrixError(403, Codes.FORBIDDEN, "You may only redact your own events")

    async def create_room(
        self, creator: str, room_version: RoomVersion, create_content: Mapping[str, Any], legacy_room_id: str | None
    ) -> StoredEvent:
        """Creates a room with its ``m.room.create`` event and returns that event.

        Args:
            legacy_room_id: the room ID for versions before 12 (``!opaque:server``); v12 derives it.
        """
        content = dict(create_content)
        content["room_version"] = room_version.identifier
        if not room_version.implicit_room_creator:
            content["creator"] = creator
        # In v12 the room ID is the create event's hash: two rooms created by the same user with the
        # same content in the same millisecond would collide, so the timestamp moves on until unique.
        ts = self._now()
        for _ in range(100):
            room_id = None if room_version.room_id_from_create_event else legacy_room_id
            event = self._builder.build_create(creator, room_version, content, room_id, ts)
            ts += 1
            # Claim the ID before any await, so a concurrent identical request moves on to the next
            # timestamp instead of racing us to the same room (and the database's unique key).
            if event.room_id in self._rooms_being_created:
                continue
            self._rooms_being_created.add(event.room_id)
            if await self._rooms.get_room(event.room_id) is None:
                break
            self._rooms_being_created.discard(event.room_id)
        else:
            raise MatrixError(500, Codes.UNKNOWN, "Could not allocate a room ID")
        try:
            try:
                check_auth(event, {}, room_version)
            except AuthError as e:
                raise MatrixError(400, Codes.BAD_JSON, e.reason) from None
            async with self.queue.queue(event.room_id):
                return await self._persist_create(event, room_version, creator)
        finally:
            self._rooms_being_created.discard(event.room_id)

    async def _persist_create(self, event: Event, room_version: RoomVersion, creator: str) -> StoredEvent:
        """Persists a room's create event with the room row (in the room's turn)."""
        room_nid: int = await self._pool.run_txn("allocate_room_nid", self._room_nids.next_id_txn)
        room = RoomRecord(room_nid, event.room_id, room_version.identifier, creator, False, self._now())
        persisted = await self._persister.persist(room, event, PersistContext(None, {}, new_room=(room_nid, creator)))
        self._advance_linear(RoomHead(room, room_version, None, {}, (), 0), persisted)
        return persisted.stored

    # ------------------------------------------------------------------ received PDUs

    async def receive_pdu(self, origin: str, event: Event, *, outlier: bool = False) -> PDUOutcome:
        """Authorises and persists a PDU from ``origin`` in its room's turn (see the module docstring).

        The caller has verified the PDU's signatures and content hash. A PDU whose prev events are
        still missing after asking ``origin`` is stored as an outlier.

        Raises:
            MatrixError: 404 for a room we do not know when the PDU is not its create event.
        """
        async with self.queue.queue(event.room_id):
            return await self._receive_in_turn(origin, event, outlier, fetch_missing=True)

    async def _receive_in_turn(self, origin: str, event: Event, outlier: bool, *, fetch_missing: bool) -> PDUOutcome:
        if await self._events.get_event(event.event_id) is not None:
            return PDUOutcome(event.event_id, PDUStatus.DUPLICATE)
        head = await self._state.get_head(event.room_id)
        if head is None:
            if event.type == "m.room.create" and event.state_key == "" and not event.prev_event_ids:
                return await self._receive_create(event)
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        rv = head.version
        prevs = await self._events.get_events(event.prev_event_ids) if not outlier else {}
        if not outlier and fetch_missing and len(prevs) < len(set(event.prev_event_ids)):
            # Prev events first (their auth events then come with them), then the auth events still missing.
            await self._fetch_missing(origin, event, head)
            head = await self._state.get_head(event.room_id) or head
            prevs = await self._events.get_events(event.prev_event_ids)
        reason = await self._check_own_auth_events(event, head, origin)
        if reason is not None:
            return await self._store_hidden(head, event, None, {}, rejected_reason=reason)
        if outlier:
            return await self._store_hidden(head, event, None, {}, outlier=True)
        usable = [p for p in prevs.values() if p.state_group_after is not None and p.rejected_reason is None]
        if len(usable) < len(set(event.prev_event_ids)):
            logger.info("storing %s as an outlier: prev events missing", event.event_id, extra={"room_id": event.room_id})
            return await self._store_hidden(head, event, None, {}, outlier=True)
        groups = [p.state_group_after for p in usable if p.state_group_after is not None]
        state_before = await self._state_after_prevs(rv, groups)
        if state_before is None:
            return await self._store_hidden(head, event, None, {}, outlier=True)
        group_before = groups[0] if len(set(groups)) == 1 else None
        try:
            check_auth(event, await self._state.get_state_events(state_before), rv)
        except AuthError as e:
            return await self._store_hidden(head, event, group_before, state_before, rejected_reason=e.reason)
        try:
            check_auth(event, await self._state.get_state_events(head.state), rv)
        except AuthError as e:
            outcome = await self._store_hidden(head, event, group_before, state_before, soft_failed=True)
            return PDUOutcome(event.event_id, PDUStatus.SOFT_FAILED, e.reason, outcome.stream_ordering)
        return await self._accept(head, event, group_before, state_before)

    async def _check_own_auth_events(self, event: Event, head: RoomHead, origin: str | None = None) -> str | None:
        """Step 4: the reason the event fails against its own auth events, or None when it passes.

        With ``origin``, auth events we lack are first fetched from it, checked and stored as
        outliers (:mod:`homeserver.events.auth_fetch`); those still missing reject the event.
        """
        stored = await self._events.get_events(event.auth_event_ids)
        missing = set(event.auth_event_ids) - set(stored)
        if missing and origin is not None:
            await fetch_missing_auth_events(self._fetcher, self._events, self._persister, origin, event, head, missing)
            stored = await self._events.get_events(event.auth_event_ids)
        if len(stored) < len(set(event.auth_event_ids)):
            return "missing auth events"
        by_id = {e: s.event for e, s in stored.items()}
        rejected = {e for e, s in stored.items() if s.rejected_reason is not None}
        auth_state: dict[StateKey, Event] = {}
        for s in stored.values():
            if s.rejected_reason is None and s.event.state_key is not None:
                auth_state[(s.event.type, s.event.state_key)] = s.event
        if head.version.room_id_from_create_event:
            create = await self._state.get_state_events(head.state, [("m.room.create", "")])
            auth_state.update(create)
        try:
            check_auth_events_match(event, by_id, head.version, rejected)
            check_auth(event, auth_state, head.version)
        except AuthError as e:
            return e.reason
        return None

    async def _fetch_missing(self, origin: str, event: Event, head: RoomHead) -> None:
        """Asks ``origin`` for the events between our extremities and ``event``; receives them oldest first."""
        try:
            found = await self._fetcher.get_missing_events(
                origin, event.room_id, list(head.extremities), [event.event_id], MAX_MISSING_EVENTS
            )
        except MatrixError as e:
            logger.info("get_missing_events from %s failed: %s", origin, e.errcode, extra={"room_id": event.room_id})
            return
        parsed: list[Event] = []
        for pdu in found:
            try:
                parsed.append(Event.from_pdu(pdu, head.version))
            except InvalidEventError:
                logger.info("ignoring a malformed missing event from %s", origin, extra={"room_id": event.room_id})
        for missing in sorted(parsed, key=lambda e: (e.depth, e.event_id)):
            if missing.room_id != event.room_id:
                continue
            # NOTSPEC: the fetched events' signatures are the fetcher's to verify (the federation adapter).
            await self._receive_in_turn(origin, missing, False, fetch_missing=False)
            head = await self._state.get_head(event.room_id) or head

    async def _state_after_prevs(self, rv: RoomVersion, groups: Sequence[int]) -> StateMap | None:
        """The state before an event: its prev events' state, resolved when they differ (None if unresolvable)."""
        states = [await self._state_groups.get_state(g) for g in dict.fromkeys(groups)]
        if len(states) == 1:
            return states[0]
        return await self.resolve(rv, states)

    async def resolve(
        self, rv: RoomVersion, states: Sequence[StateMap], unstored: Sequence[Event] = ()
    ) -> StateMap | None:
        """Resolves room states with ``sc_proto.state`` (prepare -> load -> resolve); None when
        events it needs are missing.

        Args:
            unstored: events the states name that are not persisted yet (the event being accepted,
                whose state after is resolved against the current state before it is written).
        """
        prep = prepare(states)
        prep.add_events(unstored)
        rejected: set[str] = set()
        while needed := prep.needed_event_ids():
            loaded = await self._events.get_events(needed)
            if not loaded:
                break
            rejected.update(e for e, s in loaded.items() if s.rejected_reason is not None)
            prep.add_events(s.event for s in loaded.values())
        try:
            # TODO(#19): run resolution off the reactor (the CPU thread runner is built after the rooms core).
            return prep.resolve(rv, rejected_event_ids=rejected)
        except MissingEventsError:
            logger.warning("state resolution is missing events")
            return None

    async def _accept(self, head: RoomHead, event: Event, group_before: int | None, state_before: StateMap) -> PDUOutcome:
        state_after = dict(state_before)
        if event.state_key is not None:
            state_after[(event.type, event.state_key)] = event.event_id
        remaining = tuple(e for e in head.extremities if e not in set(event.prev_event_ids))
        current_after: StateMap = state_after
        if remaining:
            resolved = await self.resolve(
                head.version, [*await self._extremity_states(head, remaining), state_after], unstored=[event]
            )
            current_after = resolved if resolved is not None else head.state
        ctx = PersistContext(
            group_before, state_before, current_state_before=head.state, current_state_after=current_after
        )
        persisted = await self._persister.persist(head.room, event, ctx)
        stored = persisted.stored
        extremities = (*remaining, stored.event_id)
        group = stored.state_group_after if not remaining else None
        self._state.install_head(
            RoomHead(head.room, head.version, group, current_after, extremities, max(head.max_depth, stored.depth))
        )
        return PDUOutcome(event.event_id, PDUStatus.ACCEPTED, None, stored.stream_ordering)

    async def _extremity_states(self, head: RoomHead, extremities: Sequence[str]) -> list[StateMap]:
        """The state after each of ``extremities`` (the room's current state for one we hold no state of).

        The current state of a forked room is the resolution of its forward extremities' states, not
        of the previous current state (itself a resolution) with the new event's: resolving
        pairwise against it would depend on the order events arrived in, and servers that got the
        same events in different orders would disagree.
        """
        stored = await self._events.get_events(extremities)
        states: list[StateMap] = []
        for event_id in extremities:
            group = stored[event_id].state_group_after if event_id in stored else None
            if group is None:
                if head.state not in states:
                    states.append(head.state)
                continue
            states.append(await self._state_groups.get_state(group))
        return states

    async def _store_hidden(
        self,
        head: RoomHead,
        event: Event,
        group_before: int | None,
        state_before: StateMap,
        *,
        outlier: bool = False,
        rejected_reason: str | None = None,
        soft_failed: bool = False,
    ) -> PDUOutcome:
        """Stores an outlier, rejected or soft-failed event: the room's head does not move."""
        ctx = PersistContext(
            group_before, state_before, outlier=outlier, rejected_reason=rejected_reason, soft_failed=soft_failed
        )
        persisted = await self._persister.persist(head.room, event, ctx)
        if outlier:
            return PDUOutcome(event.event_id, PDUStatus.OUTLIER)
        if rejected_reason is not None:
            return PDUOutcome(event.event_id, PDUStatus.REJECTED, rejected_reason)
        return PDUOutcome(event.event_id, PDUStatus.SOFT_FAILED, None, persisted.stored.stream_ordering)

    async def _receive_create(self, event: Event) -> PDUOutcome:
        """A remote room's create event: the room row and its first event."""
        version_id = event.content.get("room_version", "1")
        try:
            rv = get_room_version(str(version_id))
            check_auth(event, {}, rv)
        except (AuthError, MatrixError):
            raise MatrixError(400, Codes.BAD_JSON, "Invalid create event") from None
        stored = await self._persist_create(event, rv, event.sender)
        return PDUOutcome(event.event_id, PDUStatus.ACCEPTED, None, stored.stream_ordering)

    # ------------------------------------------------------------------ backfill

    async def backfill(self, room_id: str, limit: int) -> bool:
        """Fetches history older than the oldest timeline event we hold of ``room_id`` (``/backfill``
        from another server in the room) and stores it in the timeline behind what we hold.

        Backfilled events are checked like received PDUs (steps 4-5: their own auth events, then the
        state before them: their prevs' when we hold it, else the origin's ``/state_ids`` at them)
        but move neither the forward extremities nor the current state. Returns whether any event
        was added (False: we hold the room's start, or nobody could give us more).
        """
        async with self.queue.queue(room_id):
            head = await self._state.get_head(room_id)
            if head is None:
                return False
            oldest_ids = await self._events.get_room_event_orderings(
                head.room.room_nid, from_key=(0, 0), to_key=None, backwards=False, limit=1
            )
            oldest = (await self._events.get_events(oldest_ids)).get(oldest_ids[0]) if oldest_ids else None
            if oldest is None:
                return False
            prevs = await self._events.get_events(oldest.event.prev_event_ids)
            gap = [p for p in oldest.event.prev_event_ids if p not in prevs or prevs[p].state_group_after is None]
            if not gap or oldest.event_id in self._backfill_exhausted:
                return False
            for destination in await self._backfill_destinations(head, oldest):
                try:
                    found = await self._fetcher.backfill(destination, room_id, gap, max(1, min(limit, 100)))
                except MatrixError as e:
                    logger.info("backfill from %s failed: %s", destination, e.errcode, extra={"room_id": room_id})
                    continue
                if await self._store_backfilled(destination, head, found):
                    return True
                # Nothing new before this event (what lies before it we hold as outliers, or
                # nobody has it): do not ask again on every /messages that reaches it.
                if len(self._backfill_exhausted) >= MAX_BACKFILL_EXHAUSTED:
                    self._backfill_exhausted.clear()
                self._backfill_exhausted.add(oldest.event_id)
                return False
            return False

    async def _backfill_destinations(self, head: RoomHead, oldest: StoredEvent) -> list[str]:
        """Servers to ask: the oldest event's sender's, then those of the room's members (ours excluded)."""
        ours = self._builder.server_name
        names = [_domain(oldest.event.sender)]
        names += sorted(_domain(k[1]) for k in head.state if k[0] == "m.room.member")
        return [n for n in dict.fromkeys(names) if n and n != ours][:5]

    async def _store_backfilled(self, destination: str, head: RoomHead, found: Sequence[Mapping[str, Any]]) -> bool:
        parsed: list[Event] = []
        for pdu in found:
            try:
                event = Event.from_pdu(pdu, head.version)
            except InvalidEventError:
                continue
            if event.room_id == head.room.room_id:
                parsed.append(event)
        added = False
        for event in sorted(parsed, key=lambda e: (e.depth, e.event_id)):
            if await self._events.get_event(event.event_id) is not None:
                continue
            state_before = await self._backfill_state_before(destination, head, event)
            reason = await self._check_own_auth_events(event, head, destination)
            if reason is None and state_before is None:
                reason = "no state known at the event"
            if reason is None and state_before is not None:
                try:
                    check_auth(event, await self._state.get_state_events(state_before), head.version)
                except AuthError as e:
                    reason = e.reason
            if reason is not None:
                await self._store_hidden(head, event, None, {}, rejected_reason=reason)
                continue
            assert state_before is not None
            await self._persister.persist(head.room, event, PersistContext(None, state_before, backfilled=True))
            added = True
        return added

    async def _backfill_state_before(self, destination: str, head: RoomHead, event: Event) -> StateMap | None:
        """The state before a backfilled event: resolved from its prevs when we hold their state,
        else ``destination``'s ``/state_ids`` at it (fetching the state events we lack as outliers)."""
        prevs = await self._events.get_events(event.prev_event_ids)
        groups = [p.state_group_after for p in prevs.values() if p.state_group_after is not None and p.rejected_reason is None]
        if len(groups) == len(set(event.prev_event_ids)) and groups:
            return await self._state_after_prevs(head.version, groups)
        try:
            state_ids, _auth_ids = await self._fetcher.get_state_ids(destination, event.room_id, event.event_id)
        except MatrixError:
            return None
        known = await self._events.get_events(state_ids)
        for event_id in state_ids:
            if event_id in known:
                continue
            pdu = await self._fetcher.get_event(destination, event_id)
            if pdu is None:
                return None
            try:
                fetched = Event.from_pdu(pdu, head.version)
            except InvalidEventError:
                return None
            if fetched.event_id != event_id or fetched.room_id != event.room_id:
                return None
            await self._store_hidden(head, fetched, None, {}, outlier=True)
        loaded = await self._events.get_events(state_ids)
        state: dict[StateKey, str] = {}
        for stored in loaded.values():
            if stored.event.state_key is not None and stored.rejected_reason is None:
                state[(stored.event.type, stored.event.state_key)] = stored.event_id
        return state

    async def get_pdu(self, event_id: str) -> Event | None:
        """A stored event (outliers and rejected ones included), or None."""
        stored = await self._events.get_event(event_id)
        return stored.event if stored is not None else None

    async def get_state_ids_at(self, room_id: str, event_id: str) -> list[str] | None:
        """The state event IDs after ``event_id``, or None when we hold no state for it."""
        stored = await self._events.get_event(event_id)
        if stored is None or stored.event.room_id != room_id or stored.state_group_after is None:
            return None
        return sorted((await self._state_groups.get_state(stored.state_group_after)).values())


    # ------------------------------------------------------------------ joins through other servers

    async def persist_join(
        self, origin: str, room_version: RoomVersion, auth_chain: Sequence[Event], state: Sequence[Event], event: Event
    ) -> PDUOutcome:
        """Persists a room joined through another server (``send_join``'s answer) in the room's turn.

        The caller (the federation adapter) has checked the signatures and hashes of every event and
        the auth of the state against the auth chain. Here: the auth chain and state events we lack
        are stored as outliers in batched transactions (:meth:`EventPersister.persist_outliers`; the
        room row is created with the first of them when the room is new), then the
        join event is authorised against the state and persisted with that state before it; it
        becomes the room's only forward extremity and the room's current state is the state after it.
        Whatever we held of the room before (an out-of-band invite, a stale state after everyone of
        ours had left) is replaced.

        Raises:
            MatrixError: 502 when the state has no create event or does not authorise the join.
        """
        async with self.queue.queue(event.room_id):
            if await self._events.get_event(event.event_id) is not None:
                return PDUOutcome(event.event_id, PDUStatus.DUPLICATE)
            by_key = {(e.type, e.state_key): e for e in state if e.state_key is not None}
            create = by_key.get(("m.room.create", ""))
            if create is None:
                raise MatrixError(502, Codes.UNKNOWN, "The room's state has no create event")
            try:
                check_auth(event, by_key, room_version)
            except AuthError as e:
                raise MatrixError(502, Codes.UNKNOWN, f"The room's state does not allow the join: {e.reason}") from None
            head = await self._state.get_head(event.room_id)
            room, new_room = await self._room_for_remote(head, event, room_version, create.sender)
            known = await self._events.get_events([e.event_id for e in [*auth_chain, *state]])
            outliers = [
                e for e in sorted({e.event_id: e for e in [*auth_chain, *state]}.values(), key=lambda e: e.depth)
                if e.event_id not in known and e.event_id != event.event_id
            ]
            # Batched: a few transactions for the whole answer (one per event took ~2 ms each).
            if outliers:
                await self._persister.persist_outliers(room, outliers, new_room=new_room)
                new_room = None
            state_before = {k: e.event_id for k, e in by_key.items()}
            ctx = PersistContext(
                None, state_before, extra_users=frozenset({event.state_key or event.sender}), new_room=new_room,
                current_state_before=head.state if head is not None else {}, replace_extremities=True,
            )
            persisted = await self._persister.persist(room, event, ctx)
            stored = persisted.stored
            self._state.install_head(
                RoomHead(room, room_version, stored.state_group_after, persisted.state_after, (event.event_id,),
                         stored.depth)
            )
            return PDUOutcome(event.event_id, PDUStatus.ACCEPTED, None, stored.stream_ordering)

    async def _room_for_remote(
        self, head: RoomHead | None, event: Event, room_version: RoomVersion, creator: str | None
    ) -> tuple[RoomRecord, tuple[int, str | None] | None]:
        """The room row of a room known through another server, allocating one when it is new."""
        if head is not None:
            return head.room, None
        room_nid: int = await self._pool.run_txn("allocate_room_nid", self._room_nids.next_id_txn)
        room = RoomRecord(room_nid, event.room_id, room_version.identifier, creator, False, self._now())
        return room, (room_nid, creator)

    async def store_out_of_band_membership(self, event: Event) -> StoredEvent:
        """Stores a membership event of a local user in a room this server is not in.

        An invite received from another server, or the leave or knock event of a remote dance: the
        user's membership (``current_state``) becomes this event, so ``/sync`` shows the room in
        ``invite``, ``leave`` or ``knock`` (with the stripped state the event carries in
        ``unsigned.invite_room_state``/``knock_room_state``), but the room's state is not otherwise
        known. A room we had no row for gets one (creator unknown). Idempotent.
        """
        async with self.queue.queue(event.room_id):
            existing = await self._events.get_event(event.event_id)
            if existing is not None:
                return existing
            head = await self._state.get_head(event.room_id)
            room, new_room = await self._room_for_remote(head, event, event.room_version, None)
            current = dict(head.state) if head is not None else {}
            key = ("m.room.member", event.state_key or event.sender)
            ctx = PersistContext(
                None, {}, extra_users=frozenset({key[1]}), new_room=new_room,
                current_state_before=current, current_state_after={**current, key: event.event_id},
            )
            persisted = await self._persister.persist(room, event, ctx)
            prevs = set(event.prev_event_ids)
            extremities = (*(e for e in (head.extremities if head else ()) if e not in prevs), event.event_id)
            depth = max(head.max_depth if head else 0, persisted.stored.depth)
            rv = head.version if head is not None else event.room_version
            self._state.install_head(RoomHead(room, rv, None, {**current, key: event.event_id}, extremities, depth))
            return persisted.stored

    async def get_stored_event(self, event_id: str) -> StoredEvent | None:
        """A stored event with its metadata (outliers included), or None."""
        return await self._events.get_event(event_id)


async def _maybe_await(value: Any) -> None:
    if hasattr(value, "__await__"):
        await value


def _domain(user_id: str) -> str:
    """The server of a user ID ("" when it does not parse)."""
    try:
        return UserID.parse(user_id, historical=True).domain
    except InvalidIdentifierError:
        return ""
