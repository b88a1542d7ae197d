"""Relations and threads: send-time checks, ``/relations`` and ``/threads`` reads.

Theory of operation:

* Send-time checks run for every locally created event inside the room's turn of the input queue
  (:attr:`~homeserver.rooms.messages.EventCreator.event_checks`), after the auth rules and before the
  persist transaction that indexes the event. Because one room's events are created one at a time
  and the index commits with the event, two identical reactions racing each other cannot both pass.
  Events from other servers are never refused for these reasons (the spec: clients deduplicate).
* ``/relations`` pages the children of a parent in topological order with the same position tokens as
  ``/messages`` (``t<depth>-<stream>``; ``/messages`` and ``/sync`` tokens are accepted too). Children
  the user may not see are dropped; as in ``/messages`` a few more rounds are read when a page is
  hidden, and ``next_batch`` follows the last child *read*, so nothing is skipped or repeated.
* ``/threads`` pages thread roots by the position of their latest reply, newest first.
* Access: a user who may not read the room at all gets 403; a parent that is unknown, in another room
  or not visible to the user gets 404 (spec ``/relations``).
"""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.relations.model import REL_ANNOTATION, REL_THREAD, parse_relation
from homeserver.rooms.messages import RoomHead
from homeserver.rooms.pagination import RoomReader
from homeserver.rooms.visibility import HistoryVisibilityFilter
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.relations import Key, RelationStore
from homeserver.streams.tokens import RoomPosition
from sc_proto.errors import Codes, MatrixError
from sc_proto.events.model import Event

MAX_ROUNDS = 4
"""Pages read at most per call when history visibility hides children or roots."""


@dataclass(frozen=True)
class RelationsPage:
    """One ``/relations`` page (``next_batch`` None at the end)."""

    chunk: list[StoredEvent]
    next_batch: str | None


@dataclass(frozen=True)
class ThreadsPage:
    """One ``/threads`` page of thread roots (``next_batch`` None at the end)."""

    chunk: list[StoredEvent]
    next_batch: str | None


@dataclass(frozen=True)
class RelationsQuery:
    """The filters and pagination of a ``/relations`` request."""

    rel_type: str | None = None
    event_type: str | None = None
    from_token: str | None = None
    to_token: str | None = None
    backwards: bool = True
    limit: int = 20
    recurse: bool = False


class RelationsService:
    """Checks relations on send and reads relations and threads for clients.

    Args:
        store: the relations store.
        events: the event store.
        visibility: history visibility.
        reader: the room reader (visible single events, pagination tokens).
    """

    def __init__(
        self, store: RelationStore, events: EventStore, visibility: HistoryVisibilityFilter, reader: RoomReader
    ) -> None:
        self._store = store
        self._events = events
        self._visibility = visibility
        self._reader = reader

    # ------------------------------------------------------------------ sending

    async def check_event(self, head: RoomHead, event: Event) -> None:
        """Refuses a local event that breaks a server-side relationship rule.

        Raises:
            MatrixError: 400 ``M_DUPLICATE_ANNOTATION`` for a second identical annotation by the same
                user (unless the first was redacted); 400 ``M_UNKNOWN`` for a thread started from an
                event that itself has a relationship (spec "Validation of m.thread relationships").
        """
        relation = parse_relation(event.content)
        if relation is None:
            return
        if relation.rel_type == REL_ANNOTATION and relation.key is not None:
            if await self._store.has_annotation(relation.parent_id, event.sender, event.type, relation.key):
                raise MatrixError(400, Codes.DUPLICATE_ANNOTATION, "Can't send the same annotation twice")
        elif relation.rel_type == REL_THREAD:
            parent = await self._events.get_event(relation.parent_id)
            if (
                parent is not None
                and parent.event.room_id == head.room.room_id
                and parent.redacted_by is None
                and parse_relation(parent.event.content) is not None
            ):
                raise MatrixError(400, Codes.UNKNOWN, "Cannot start threads from an event with a relation")

    # ------------------------------------------------------------------ /relations

    async def get_relations(self, user_id: str, room_id: str, parent_id: str, query: RelationsQuery) -> RelationsPage:
        """A page of the children of ``parent_id`` that ``user_id`` may see.

        Raises:
            MatrixError: 403 when the user may not read the room, 404 when the parent is unknown or
                invisible, 400 for a malformed token.
        """
        access = await self._visibility.get_room_access(user_id, room_id)
        await self._reader.get_visible_event(user_id, room_id, parent_id)
        room_nid = access.head.room.room_nid
        cursor = await self._key(room_nid, query.from_token)
        to_key = await self._key(room_nid, query.to_token)
        chunk: list[StoredEvent] = []
        more = False
        for _ in range(MAX_ROUNDS):
            want = query.limit - len(chunk)
            rows = await self._store.get_children(
                parent_id, room_nid, rel_type=query.rel_type, event_type=query.event_type, from_key=cursor,
                to_key=to_key, backwards=query.backwards, limit=want + 1, recurse=query.recurse,
            )
            more = len(rows) > want
            rows = rows[:want]
            if rows:
                _, depth, stream = rows[-1]
                cursor = (depth, stream - 1) if query.backwards else (depth, stream)
            chunk.extend(await self._visible(user_id, [r[0] for r in rows]))
            if not more or len(chunk) >= query.limit:
                break
        next_batch = RoomPosition(*cursor).encode() if more and cursor is not None else None
        return RelationsPage(chunk, next_batch)

    async def _key(self, room_nid: int, token: str | None) -> Key | None:
        if not token:
            return None
        position = await self._reader.parse_token(room_nid, token)
        return position.depth, position.stream

    async def _visible(self, user_id: str, event_ids: list[str]) -> list[StoredEvent]:
        loaded = await self._events.get_events(event_ids)
        ordered = [loaded[e] for e in event_ids if e in loaded]
        return await self._visibility.filter_events_for_client(user_id, ordered)

    # ------------------------------------------------------------------ /threads

    async def get_threads(
        self, user_id: str, room_id: str, *, participated: bool, from_token: str | None, limit: int
    ) -> ThreadsPage:
        """A page of thread roots ``user_id`` may see, most recently active first.

        Args:
            participated: only threads the user started or replied to.

        Raises:
            MatrixError: 403 when the user may not read the room, 400 for a malformed token.
        """
        access = await self._visibility.get_room_access(user_id, room_id)
        room_nid = access.head.room.room_nid
        cursor = await self._key(room_nid, from_token)
        chunk: list[StoredEvent] = []
        more = False
        for _ in range(MAX_ROUNDS):
            want = limit - len(chunk)
            rows = await self._store.get_thread_roots(
                room_nid, before=cursor, limit=want + 1, participant=user_id if participated else None
            )
            more = len(rows) > want
            rows = rows[:want]
            if rows:
                _, depth, stream = rows[-1]
                cursor = (depth, stream - 1)
            chunk.extend(await self._visible(user_id, [r[0] for r in rows]))
            if not more or len(chunk) >= limit:
                break
        next_batch = RoomPosition(*cursor).encode() if more and cursor is not None else None
        return ThreadsPage(chunk, next_batch)
