"""Event creation: build, sign, authorise and persist local events, one room at a time.

Theory of operation: every local event goes through :meth:`EventCreator.send` (or
:meth:`EventCreator.create_room` for a room's first event). Inside the room's turn of the input queue
(:class:`~homeserver.util.linearizer.Linearizer`) it reads the room's head from memory — current state,
forward extremities, depth — picks the auth events the spec's selection algorithm names, builds and
signs the PDU with ``sc_proto``, checks it against the authorization rules, and hands it to the
persister. Nothing touches the database for an auth check: the head is cached per room and replaced
after each persist (PERFORMANCE.md, "reading what you just wrote").

A rejected event (403) and an oversized one (413) are never stored. A client transaction ID is checked
inside the room's turn, so a retried request that races the original still yields one event.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.events.persister import EventPersister, PersistContext, PersistedEvent, TxnKey
from homeserver.storage.ids import IdAllocator
from homeserver.storage.pool import DatabasePool
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.rooms import RoomRecord, RoomStore
from homeserver.storage.stores.state_groups import StateGroupStore, StateMap
from homeserver.util.linearizer import Linearizer
from sc_proto.auth.power_levels import get_named_level, get_user_power_level
from sc_proto.auth.rules import auth_types_for_event, check_auth
from sc_proto.crypto.keys import SigningKey, get_key_id
from sc_proto.errors import AuthError, Codes, MatrixError
from sc_proto.events.builder import build_event, finalise_event
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import RoomVersion, get_room_version

logger = logging.getLogger(__name__)

MAX_PREV_EVENTS = 10


@dataclass(frozen=True)
class RoomHead:
    """What the write path needs to know about a room right now."""

    room: RoomRecord
    version: RoomVersion
    state_group: int | None
    state: StateMap
    extremities: tuple[str, ...]
    max_depth: int


class EventCreator:
    """Creates and persists local events.

    Args:
        server_name: our server name (the event origin and signer).
        signing_key: our signing key.
        pool: the database pool (room-head loading).
        events: the event store.
        rooms: the room store.
        state_groups: the state-group store.
        persister: writes events.
        room_nids: allocator of room ids.
        time_msec: the clock.
    """

    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        pool: DatabasePool,
        events: EventStore,
        rooms: RoomStore,
        state_groups: StateGroupStore,
        persister: EventPersister,
        room_nids: IdAllocator,
        time_msec: Callable[[], int],
        head_cache_size: int = 10_000,
    ) -> None:
        self.server_name = server_name
        self._key = signing_key
        self._key_id = get_key_id(signing_key)
        self._pool = pool
        self._events = events
        self._rooms = rooms
        self._state_groups = state_groups
        self._persister = persister
        self._room_nids = room_nids
        self._now = time_msec
        self._heads: OrderedDict[str, RoomHead] = OrderedDict()
        self._head_cache_size = head_cache_size
        self._head_loads: dict[str, list[int]] = {}
        """Per room with head loads in flight: ``[loads in flight, heads advanced since the first]``."""
        self.queue = Linearizer("room_input")
        self._rooms_being_created: set[str] = set()
        self.event_checks: list[Callable[[RoomHead, Event], Awaitable[None]]] = []
        """Checks every locally created event passes, in the room's turn after the auth rules (e.g.
        duplicate annotations); a check raises :class:`MatrixError` to refuse the event."""

    # ------------------------------------------------------------------ room heads

    async def get_head(self, room_id: str) -> RoomHead | None:
        """The room's current head (cached), or None for a room we do not have.

        A load may run outside the room's queue turn (readers call this too) and reads in several
        transactions; if the room's head advanced while it was in flight, the load may mix old and
        new rows, so it is returned to this caller but never cached over the newer head.
        """
        head = self._heads.get(room_id)
        if head is not None:
            self._heads.move_to_end(room_id)
            return head
        loads = self._head_loads.setdefault(room_id, [0, 0])
        loads[0] += 1
        advanced_before = loads[1]
        try:
            head = await self._load_head(room_id)
        finally:
            loads[0] -= 1
            advanced = loads[1] != advanced_before
            if loads[0] == 0:
                del self._head_loads[room_id]
        if head is None:
            return None
        if advanced:
            return self._heads.get(room_id, head)
        self._remember(head)
        return head

    async def _load_head(self, room_id: str) -> RoomHead | None:
        room = await self._rooms.get_room(room_id)
        if room is None:
            return None
        state = await self._rooms.get_current_state_ids(room.room_nid)
        extremities = await self._rooms.get_forward_extremities(room.room_nid)
        stored = await self._events.get_events(extremities)
        depth = max((s.depth for s in stored.values()), default=0)
        groups = {s.state_group_after for s in stored.values()}
        group = groups.pop() if len(groups) == 1 else None
        return RoomHead(room, get_room_version(room.room_version), group, state, tuple(extremities), depth)

    def _remember(self, head: RoomHead) -> None:
        self._heads[head.room.room_id] = head
        self._heads.move_to_end(head.room.room_id)
        while len(self._heads) > self._head_cache_size:
            self._heads.popitem(last=False)

    async def get_state_events(self, state: StateMap, keys: list[StateKey] | None = None) -> dict[StateKey, Event]:
        """Loads the events of ``state`` (all, or only ``keys``) as ``(type, state_key) -> Event``."""
        wanted = {k: state[k] for k in (keys if keys is not None else state) if k in state}
        stored = await self._events.get_events(wanted.values())
        return {k: stored[e].event for k, e in wanted.items() if e in stored}

    # ------------------------------------------------------------------ sending

    async def send(
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
        """Creates, authorises and persists one event in ``room_id``.

        Args:
            check: an extra check run inside the room's turn with the head and the auth state
                (membership rules beyond the auth rules, e.g. a join's restricted-room logic);
                raise to refuse.
            before_persist: awaited with the authorised event inside the room's turn; returns the
                event to persist instead (the same event ID), e.g. an invite countersigned by the
                invitee's server (``RemoteRoomMembership.invite``). Raise to refuse.

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
            head = await self.get_head(room_id)
            if head is None:
                raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
            persisted = await self._build_and_persist(
                head, sender, event_type, content, state_key, txn, redacts, extra_users, check, before_persist
            )
            return persisted.stored

    async def _build_and_persist(
        self,
        head: RoomHead,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None,
        txn: TxnKey | None,
        redacts: str | None,
        extra_users: frozenset[str],
        check: Callable[[RoomHead, dict[StateKey, Event]], Any] | None,
        before_persist: Callable[[Event], Awaitable[Event]] | None = None,
    ) -> PersistedEvent:
        rv = head.version
        fields: dict[str, Any] = {"type": event_type, "sender": sender, "content": dict(content)}
        if state_key is not None:
            fields["state_key"] = state_key
        auth_keys = auth_types_for_event(fields, rv)
        needed = list(dict.fromkeys([*auth_keys, ("m.room.create", ""), ("m.room.power_levels", "")]))
        state_events = await self.get_state_events(head.state, needed)
        auth_ids = [state_events[k].event_id for k in auth_keys if k in state_events]
        if redacts is not None and rv.updated_redaction_rules:
            fields["content"]["redacts"] = redacts
        pdu = build_event(
            room_version=rv,
            room_id=head.room.room_id,
            type=event_type,
            sender=sender,
            content=fields["content"],
            state_key=state_key,
            prev_event_ids=list(head.extremities[-MAX_PREV_EVENTS:]),
            auth_event_ids=auth_ids,
            depth=head.max_depth + 1,
            origin_server_ts=self._now(),
            redacts=redacts,
            origin=self.server_name,
            event_id_localpart=None,
        )
        event = finalise_event(pdu, rv, self.server_name, self._key_id, self._key)
        try:
            check_auth(event, state_events, rv)
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
            head.room,
            event,
            PersistContext(head.state_group, head.state, txn, applies, extra_users),
        )
        self._advance_head(head, persisted)
        return persisted

    def _advance_head(self, head: RoomHead, persisted: PersistedEvent) -> None:
        stored = persisted.stored
        loads = self._head_loads.get(head.room.room_id)
        if loads is not None:
            loads[1] += 1  # loads in flight may have read rows from before this event: do not cache them
        self._remember(
            RoomHead(
                head.room,
                head.version,
                stored.state_group_after,
                persisted.state_after,
                (stored.event_id,),
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

    # ------------------------------------------------------------------ room creation

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
            pdu = build_event(
                room_version=room_version,
                room_id=None if room_version.room_id_from_create_event else legacy_room_id,
                type="m.room.create",
                sender=creator,
                content=content,
                state_key="",
                prev_event_ids=[],
                auth_event_ids=[],
                depth=1,
                origin_server_ts=ts,
                origin=self.server_name,
            )
            event = finalise_event(pdu, room_version, self.server_name, self._key_id, self._key)
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
            room_nid: int = await self._pool.run_txn("allocate_room_nid", self._room_nids.next_id_txn)
            room = RoomRecord(room_nid, event.room_id, room_version.identifier, creator, False, self._now())
            async with self.queue.queue(room.room_id):
                persisted = await self._persister.persist(
                    room, event, PersistContext(None, {}, new_room=(room_nid, creator))
                )
                self._advance_head(RoomHead(room, room_version, None, {}, (), 0), persisted)
        finally:
            self._rooms_being_created.discard(event.room_id)
        return persisted.stored


async def _maybe_await(value: Any) -> None:
    if hasattr(value, "__await__"):
        await value
