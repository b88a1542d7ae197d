"""The persist pipeline: one transaction per event writes everything the event changes.

Theory of operation (DESIGN.md 2.4, 2.6): the caller holds the room's turn in the input queue and has
already authorised the event against the state before it. :meth:`EventPersister.persist` then writes, in
ONE transaction: the event row and JSON, its graph edges, the forward-extremity change, the state group
of the state after it (a bounded delta, or a reused identical group), the current-state rows and their
stream of deltas, the client transaction ID and any redaction it applies; the stream ordering is
allocated in the same transaction. Only after the commit are caches updated and listeners woken, so an
accepted event is durable before anyone hears of it.

The current state moves as a diff from ``PersistContext.current_state_before`` to ``current_state_after``
(one delta row per changed key), so a resolved state in a forked room is written whole. Outliers,
rejected and soft-failed events (``PersistContext.hidden``) are stored with their graph edges but never
become forward extremities, never change the current state, run no hooks and wake no client
(docs/adr/0006-room-input.md).

Stream positions can commit out of order on PostgreSQL; listeners are woken only once every lower
position has finished (see :class:`~homeserver.storage.ids.StreamPositionTracker`), so a client never
receives a token that skips an event still being written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.rooms import RoomRecord, RoomStore
from homeserver.storage.stores.state_groups import StateGroupStore, StateMap
from homeserver.streams.writer import StreamWriter
from homeserver.util.linearizer import Linearizer
from sc_proto.events.model import Event

logger = logging.getLogger(__name__)

OUTLIER_BATCH_SIZE = 500
"""Outliers written per transaction by :meth:`EventPersister.persist_outliers`."""


@dataclass(frozen=True)
class TxnKey:
    """Identifies a client transaction (``PUT .../send/{type}/{txnId}``)."""

    user_id: str
    device_id: str
    room_id: str
    txn_id: str


@dataclass(frozen=True)
class PersistContext:
    """What the caller knows about an event it wants persisted.

    Attributes:
        state_group_before: the state group of the state before the event (None for a create event).
        state_before: that state, ``(type, state_key) -> event_id``. For a room's new local event this is
            the room's current state (local rooms are linear: one forward extremity), so the current
            state after the event is ``state_before`` plus the event. Events that merge several
            extremities (federation) will pass the resolved state here.
        txn: the client transaction that produced the event, if any.
        applies_redaction: for an authorised ``m.room.redaction``, the event it redacts.
        extra_users: users to wake besides the room's members (e.g. an invitee).
    """

    state_group_before: int | None
    state_before: StateMap
    txn: TxnKey | None = None
    applies_redaction: str | None = None
    extra_users: frozenset[str] = field(default_factory=frozenset)
    new_room: tuple[int, str | None] | None = None
    """For a create event: ``(room_nid, creator)`` of the room row to insert in the same transaction
    (also the first event we store of a room joined over federation, or an out-of-band invite's room)."""
    replace_extremities: bool = False
    """The event becomes the room's only forward extremity (a join through another server: what we
    held of the room before, e.g. an out-of-band invite, is no longer the head)."""
    outlier: bool = False
    """Store without state: no state group, no forward extremity, no current-state change, hidden."""
    rejected_reason: str | None = None
    """The auth rule that rejected the event: stored, never in current state, timeline or extremities."""
    soft_failed: bool = False
    """Authorised against ``state_before`` but not the current state: stored with its state group but
    outside the timeline (``outlier`` row flag) and not a forward extremity."""
    current_state_before: StateMap | None = None
    """The room's current state before the event; None means ``state_before`` (a linear room)."""
    current_state_after: StateMap | None = None
    """The room's current state after the event; None means the state after the event (its prev events
    covered every forward extremity)."""
    backfilled: bool = False
    """Older history fetched through ``/backfill``: stored in the timeline with its state (so
    ``/messages`` shows it) but it moves neither the forward extremities nor the current state, and
    nobody is woken (it is not news). Its stream ordering is negative, below every other event's
    (taken from the table, not the events stream), so ``/sync``, unread counts and the federation
    sender, which read the stream forwards, never see it; pagination orders by depth first."""

    @property
    def hidden(self) -> bool:
        """Whether the event stays outside the room's timeline (never in /sync, /messages, search)."""
        return self.outlier or self.rejected_reason is not None or self.soft_failed


@dataclass(frozen=True)
class PersistedEvent:
    stored: StoredEvent
    state_after: StateMap


class EventPersister:
    """Writes events and announces them.

    Args:
        pool: the database pool.
        events: the event store (cache updated after commit).
        state_groups: the state-group store.
        stream: the ``events`` stream writer: allocates stream orderings in the transaction and wakes
            listeners once every lower ordering has finished.
        time_msec: the clock.
    """

    def __init__(
        self,
        pool: DatabasePool,
        events: EventStore,
        state_groups: StateGroupStore,
        stream: StreamWriter,
        time_msec: Callable[[], int],
    ) -> None:
        self._pool = pool
        self._events = events
        self._state_groups = state_groups
        self._stream = stream
        self._now = time_msec
        self._backfill_queue = Linearizer("backfill_ordering")
        self.on_persisted: list[Callable[[PersistedEvent], None]] = []
        """Called on the reactor after each commit (caches, notifications). Must not raise."""
        self.in_txn_hooks: list[Callable[[Txn, Event, int, int], None]] = []
        """Called inside the persist transaction as ``hook(txn, event, stream_ordering, room_nid)``, for
        indexes that must commit atomically with the event (relations, search). A hook that raises
        aborts the whole transaction."""

    async def persist(self, room: RoomRecord, event: Event, ctx: PersistContext) -> PersistedEvent:
        """Persists ``event`` in one transaction; returns it with its stream ordering.

        Raises:
            Exception: the transaction failed; nothing was written and nobody was told.
        """
        state_after: dict[tuple[str, str], str] = dict(ctx.state_before)
        if event.state_key is not None and ctx.rejected_reason is None and not ctx.outlier:
            state_after[(event.type, event.state_key)] = event.event_id
        received = self._now()
        if ctx.backfilled:
            async with self._backfill_queue.queue(""):
                stored_backfill: StoredEvent = await self._pool.run_txn(
                    "persist_backfilled_event", self._persist_txn, room, event, ctx, state_after, received
                )
            self._events.cache_event(stored_backfill)
            return PersistedEvent(stored_backfill, MappingProxyType(state_after))
        try:
            stored: StoredEvent = await self._pool.run_txn(
                "persist_event", self._persist_txn, room, event, ctx, state_after, received
            )
        except BaseException:
            # Our position finished (rolled back): events committed above it and held back behind it
            # are now readable, and their waiters must hear of it now, not at the next persist.
            self._stream.flush()
            raise
        persisted = PersistedEvent(stored, MappingProxyType(state_after))
        self._events.cache_event(stored)
        if ctx.hidden:
            # Outliers, rejected and soft-failed events: no client hears of them (no hooks, no
            # wake-up), but held-back positions below ours may now be readable.
            self._stream.flush()
            return persisted
        if ctx.applies_redaction is not None:
            self._events.mark_redacted(ctx.applies_redaction, event.event_id)
        for hook in self.on_persisted:
            try:
                hook(persisted)
            except Exception:
                logger.exception("on_persisted hook failed")
        users = set(ctx.extra_users)
        if event.type == "m.room.member" and event.state_key is not None:
            users.add(event.state_key)
        self._stream.announce(stored.stream_ordering, users, {event.room_id})
        return persisted

    def _persist_txn(
        self, txn: Txn, room: RoomRecord, event: Event, ctx: PersistContext, state_after: StateMap, received: int
    ) -> StoredEvent:
        if ctx.new_room is not None:
            txn.execute(
                "INSERT INTO rooms (room_nid, room_id, room_version, creator, is_public, created_ts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (room.room_nid, room.room_id, room.room_version, ctx.new_room[1], False, received),
            )
        stream = self._backfill_ordering_txn(txn) if ctx.backfilled else self._stream.next_id_txn(txn)
        group_before, group_after = self._state_groups_txn(txn, room, event, ctx, state_after)
        stored = StoredEvent(
            event=event, stream_ordering=stream, room_nid=room.room_nid, outlier=ctx.outlier or ctx.soft_failed,
            rejected_reason=ctx.rejected_reason, state_group_before=group_before, state_group_after=group_after,
            redacted_by=None, txn_id=ctx.txn.txn_id if ctx.txn else None,
            device_id=ctx.txn.device_id if ctx.txn else None, received_ts=received,
        )
        self._events.insert_event_txn(txn, stored, soft_failed=ctx.soft_failed)
        if ctx.hidden:
            return stored
        if ctx.backfilled:
            for hook in self.in_txn_hooks:
                hook(txn, event, stream, room.room_nid)
            return stored
        if ctx.replace_extremities:
            RoomStore.clear_extremities_txn(txn, room.room_nid)
        RoomStore.advance_extremities_txn(txn, self._pool.engine, room.room_nid, event)
        self._update_current_state_txn(txn, room, event, ctx, state_after, stream)
        if ctx.txn is not None:
            t = ctx.txn
            EventStore.insert_txn_id_txn(txn, t.user_id, t.device_id, t.room_id, t.txn_id, event.event_id, received)
        for hook in self.in_txn_hooks:
            hook(txn, event, stream, room.room_nid)
        if ctx.applies_redaction is not None:
            EventStore.apply_redaction_txn(txn, room.room_nid, ctx.applies_redaction, event.event_id)
        return stored

    @staticmethod
    def _backfill_ordering_txn(txn: Txn) -> int:
        """A stream ordering below every stored event's (callers hold ``_backfill_queue``)."""
        return min(EventStore.lowest_stream_ordering_txn(txn), 0) - 1

    def _state_groups_txn(
        self, txn: Txn, room: RoomRecord, event: Event, ctx: PersistContext, state_after: StateMap
    ) -> tuple[int | None, int | None]:
        """The state groups before and after the event, storing the latter when it is new.

        Outliers have none; a rejected event keeps the group before (it changes nothing). A group is
        stored when the event changes state, or when the state before has no group yet (the
        resolution of several extremities).
        """
        if ctx.outlier:
            return None, None
        group_before = ctx.state_group_before
        if group_before is None and ctx.state_before:
            group_before = self._state_groups.store_state_txn(txn, room.room_nid, None, None, ctx.state_before)
        if event.state_key is None or ctx.rejected_reason is not None:
            return group_before, group_before
        prev_state = ctx.state_before if group_before is not None else None
        return group_before, self._state_groups.store_state_txn(txn, room.room_nid, group_before, prev_state, state_after)

    def _update_current_state_txn(
        self, txn: Txn, room: RoomRecord, event: Event, ctx: PersistContext, state_after: StateMap, stream: int
    ) -> None:
        """Moves the room's current state to the state after the event (or ``ctx.current_state_after``)."""
        old = ctx.current_state_before if ctx.current_state_before is not None else ctx.state_before
        new = ctx.current_state_after if ctx.current_state_after is not None else state_after
        added = [e for k, e in new.items() if k[0] == "m.room.member" and old.get(k) != e and e != event.event_id]
        stored = self._events.get_events_txn(txn, added) if added else {}
        memberships = {e: s.event.membership for e, s in stored.items()}
        memberships[event.event_id] = event.membership
        RoomStore.update_current_state_txn(txn, room.room_nid, stream, old, new, memberships)

    async def persist_outliers(
        self,
        room: RoomRecord,
        events: Sequence[Event],
        *,
        new_room: tuple[int, str | None] | None = None,
        rejected: Mapping[str, str] | None = None,
        batch_size: int | None = None,
    ) -> list[StoredEvent]:
        """Persists many outliers (a join's state and auth chain, fetched auth events) in few
        transactions: ``batch_size`` events a transaction instead of one each.

        Each event is written as :meth:`persist` writes an outlier (event row, graph edges, a stream
        ordering; no state group, extremity or current-state change, no hooks, nobody woken).

        Args:
            new_room: ``(room_nid, creator)``: the room row is inserted with the first event (in
                its own :meth:`persist` transaction, the one path that writes room rows).
            batch_size: events per transaction (default :data:`OUTLIER_BATCH_SIZE`).
            rejected: ``event_id -> reason`` for events to store as rejected instead.

        Raises:
            Exception: a transaction failed; the batches before it stay committed (outliers are
                harmless alone, and the caller retries the rest as missing).
        """
        reasons = rejected or {}
        size = max(1, batch_size if batch_size is not None else OUTLIER_BATCH_SIZE)
        out: list[StoredEvent] = []
        if new_room is not None and events:
            # The room row goes in with the first event, through the one path that writes it.
            first, events = events[0], events[1:]
            ctx = PersistContext(None, {}, outlier=True, rejected_reason=reasons.get(first.event_id), new_room=new_room)
            out.append((await self.persist(room, first, ctx)).stored)
        try:
            for start in range(0, len(events), size):
                batch = events[start:start + size]
                stored: list[StoredEvent] = await self._pool.run_txn(
                    "persist_outliers", self._persist_outliers_txn, room, batch, reasons, self._now()
                )
                for s in stored:
                    self._events.cache_event(s)
                out.extend(stored)
        finally:
            # Held-back positions below ours may now be readable (outliers wake nobody themselves).
            self._stream.flush()
        return out

    def _persist_outliers_txn(
        self,
        txn: Txn,
        room: RoomRecord,
        events: Sequence[Event],
        rejected: Mapping[str, str],
        received: int,
    ) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        for event in events:
            stored = StoredEvent(
                event=event, stream_ordering=self._stream.next_id_txn(txn), room_nid=room.room_nid,
                outlier=True, rejected_reason=rejected.get(event.event_id),
                state_group_before=None, state_group_after=None, redacted_by=None, txn_id=None, device_id=None,
                received_ts=received,
            )
            self._events.insert_event_txn(txn, stored)
            out.append(stored)
        return out
