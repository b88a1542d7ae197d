"""Read receipts and read markers (spec client-server-api, "Receipts", "Read and unread markers").

Theory of operation:

* **Checks first, writes after.** A receipt is accepted only from a joined member, for an event that
  exists in the room (404 otherwise) and that the user may see (403). A ``thread_id`` must be a
  non-empty string, ``main`` or an event ID, never given for ``m.fully_read``, and must match the
  event's thread (found by :class:`ThreadResolver`), else 400 ``M_INVALID_PARAM``. ``/read_markers``
  checks every marker of the request before writing any.
* **Forward only.** ``m.read``/``m.read.private`` receipts move only to events later in the room
  (the store decides, atomically); an earlier event is accepted (200) and changes nothing. The
  ``m.fully_read`` marker is room account data (the spec keeps it there) and also only moves forward.
* **Announcing.** A receipt that moved has a position in the ``receipts`` stream. After commit the
  notifier is told, once every lower position has finished (positions may commit out of order on
  PostgreSQL): an ``m.read`` receipt wakes the room, an ``m.read.private`` receipt only its owner,
  who is the only user it is ever sent to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.ephemeral.access import RoomHeads, require_joined
from homeserver.identity import is_event_id
from homeserver.storage.stores.account_data import AccountDataStore
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.receipts import READ, READ_PRIVATE, ReceiptStore
from homeserver.streams.writer import StreamWriter
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

FULLY_READ = "m.fully_read"
RECEIPT_TYPES = frozenset({READ, READ_PRIVATE, FULLY_READ})
"""Receipt types accepted by ``/receipt`` (``m.fully_read`` is a read marker, not a receipt)."""
MAIN_THREAD = "main"
THREAD_REL = "m.thread"
MAX_THREAD_HOPS = 3
"""Relations followed to find an event's thread (the spec recommends at most 3 hops)."""
STREAM = "receipts"


def _bad(message: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, message)


def check_receipt_type(receipt_type: str) -> None:
    """Raises 400 ``M_INVALID_PARAM`` for a receipt type this server does not know."""
    if receipt_type not in RECEIPT_TYPES:
        raise _bad(f"Receipt type must be one of {', '.join(sorted(RECEIPT_TYPES))}")


def check_event_id(event_id: object, what: str = "event ID") -> str:
    """Raises 400 ``M_INVALID_PARAM`` unless ``event_id`` is an event ID (:func:`homeserver.identity.is_event_id`)."""
    if not is_event_id(event_id):
        raise _bad(f"Invalid {what}")
    assert isinstance(event_id, str)
    return event_id


def check_thread_id(receipt_type: str, thread_id: object) -> str | None:
    """Validates a receipt's ``thread_id`` (None: unthreaded).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when it is not a non-empty string, is neither ``main``
            nor an event ID, or is given for ``m.fully_read``.
    """
    if thread_id is None:
        return None
    if not isinstance(thread_id, str) or not thread_id:
        raise _bad("thread_id field must be a non-empty string")
    if receipt_type == FULLY_READ:
        raise _bad("thread_id is not allowed for m.fully_read")
    if thread_id != MAIN_THREAD:
        check_event_id(thread_id, "thread_id")
    return thread_id


def relation_of(stored: StoredEvent) -> tuple[str | None, str | None]:
    """``(rel_type, parent event ID)`` of an event's ``m.relates_to`` (a rich reply counts as a relation
    to the replied-to event); ``(None, None)`` for none or a redacted event."""
    if stored.redacted_by is not None:
        return None, None
    relates = stored.event.content.get("m.relates_to")
    if not isinstance(relates, Mapping):
        return None, None
    rel_type = relates.get("rel_type")
    parent = relates.get("event_id")
    if isinstance(rel_type, str) and isinstance(parent, str):
        return rel_type, parent
    reply = relates.get("m.in_reply_to")
    if isinstance(reply, Mapping) and isinstance(reply.get("event_id"), str):
        return None, str(reply["event_id"])
    return None, None


class ThreadResolver:
    """Finds the thread of events (spec "Threaded read receipts": follow relations at most 3 hops).

    Args:
        events: the event store (parents are loaded in one batch per hop).
    """

    def __init__(self, events: EventStore) -> None:
        self._events = events

    async def get_threads(self, events: Iterable[StoredEvent]) -> dict[str, str]:
        """Event ID -> ``main`` or the thread root's event ID."""
        threads: dict[str, str] = {}
        frontier: dict[str, str] = {}  # event -> the ancestor to inspect next
        for stored in events:
            rel_type, parent = relation_of(stored)
            if rel_type == THREAD_REL and parent is not None:
                threads[stored.event_id] = parent
            elif parent is not None:
                frontier[stored.event_id] = parent
            else:
                threads[stored.event_id] = MAIN_THREAD
        for _ in range(MAX_THREAD_HOPS):
            if not frontier:
                break
            parents = await self._events.get_events(set(frontier.values()))
            following: dict[str, str] = {}
            for event_id, parent_id in frontier.items():
                parent_event = parents.get(parent_id)
                rel_type, grandparent = relation_of(parent_event) if parent_event is not None else (None, None)
                if rel_type == THREAD_REL and grandparent is not None:
                    threads[event_id] = grandparent
                elif grandparent is not None:
                    following[event_id] = grandparent
                else:
                    threads[event_id] = MAIN_THREAD
            frontier = following
        for event_id in frontier:
            threads[event_id] = MAIN_THREAD
        return threads


class EventVisibility(Protocol):
    """History visibility (``HistoryVisibilityFilter`` implements it)."""

    async def is_event_visible(self, user_id: str, stored: StoredEvent) -> bool:
        """Whether ``user_id`` may see the event."""
        ...


@dataclass(frozen=True)
class _Checked:
    receipt_type: str
    stored: StoredEvent
    thread_id: str | None


class ReceiptService:
    """Accepts receipts and read markers.

    Args:
        store: the receipt store.
        events: the event store.
        heads: room heads (membership checks).
        visibility: history visibility.
        account_data: where ``m.fully_read`` lives.
        stream: the ``receipts`` stream writer (the store's; wake-ups are held until caught up).
        threads: finds events' threads.
        time_msec: the clock (receipt ``ts``).
    """

    def __init__(
        self,
        store: ReceiptStore,
        events: EventStore,
        heads: RoomHeads,
        visibility: EventVisibility,
        account_data: AccountDataStore,
        stream: StreamWriter,
        threads: ThreadResolver,
        time_msec: Callable[[], int],
    ) -> None:
        self._store = store
        self._events = events
        self._heads = heads
        self._visibility = visibility
        self._account_data = account_data
        self._stream = stream
        self._threads = threads
        self._now = time_msec

    async def set_receipt(
        self, user_id: str, room_id: str, receipt_type: str, event_id: str, thread_id: object = None
    ) -> None:
        """``POST /rooms/{roomId}/receipt/{receiptType}/{eventId}``.

        Raises:
            MatrixError: 400 (type, IDs, thread), 403 (not joined, event not visible), 404 (no such
                event in the room).
        """
        check_receipt_type(receipt_type)
        check_event_id(event_id)
        thread = check_thread_id(receipt_type, thread_id)
        await require_joined(self._heads, room_id, user_id)
        checked = await self._check(user_id, room_id, receipt_type, event_id, thread)
        await self._apply(user_id, room_id, checked)

    async def set_read_markers(self, user_id: str, room_id: str, markers: Mapping[str, object]) -> None:
        """``POST /rooms/{roomId}/read_markers``: ``m.fully_read``, ``m.read``, ``m.read.private``.

        Every marker given is checked before any is written.

        Raises:
            MatrixError: as :meth:`set_receipt`.
        """
        wanted = [(t, markers[t]) for t in (FULLY_READ, READ, READ_PRIVATE) if markers.get(t) is not None]
        for receipt_type, event_id in wanted:
            check_event_id(event_id, f"{receipt_type} event ID")
        await require_joined(self._heads, room_id, user_id)
        checked = [await self._check(user_id, room_id, t, str(e), None) for t, e in wanted]
        for item in checked:
            await self._apply(user_id, room_id, item)

    async def _check(
        self, user_id: str, room_id: str, receipt_type: str, event_id: str, thread_id: str | None
    ) -> _Checked:
        stored = await self._events.get_event(event_id)
        if stored is None or stored.event.room_id != room_id or stored.outlier or stored.rejected_reason is not None:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found in this room")
        if not await self._visibility.is_event_visible(user_id, stored):
            raise MatrixError(403, Codes.FORBIDDEN, "You cannot see this event")
        if thread_id is not None:
            thread = (await self._threads.get_threads([stored]))[event_id]
            root_itself = thread_id != MAIN_THREAD and event_id == thread_id
            if thread != thread_id and not root_itself:
                raise _bad("The event is not in the thread given by thread_id")
        return _Checked(receipt_type, stored, thread_id)

    async def _apply(self, user_id: str, room_id: str, checked: _Checked) -> None:
        stored = checked.stored
        if checked.receipt_type == FULLY_READ:
            await self._set_fully_read(user_id, room_id, stored)
            return
        # A rolled-back attempt releases wake-ups held behind its id (the writer re-checks them).
        stream_id = await self._store.upsert_receipt(
            room_id, checked.receipt_type, user_id, checked.thread_id, stored.event_id,
            stored.stream_ordering, self._now(),
        )
        if stream_id is None:
            return  # an event before the current receipt: accepted, the receipt stays where it is
        if checked.receipt_type == READ_PRIVATE:
            self._stream.announce(stream_id, users=(user_id,))
        else:
            self._stream.announce(stream_id, rooms=(room_id,))

    async def _set_fully_read(self, user_id: str, room_id: str, stored: StoredEvent) -> None:
        current = await self._account_data.get_account_data(user_id, room_id, FULLY_READ)
        current_id = current.get("event_id") if current is not None else None
        if isinstance(current_id, str):
            previous = await self._events.get_event(current_id)
            if previous is not None and previous.stream_ordering >= stored.stream_ordering:
                return
        await self._account_data.set_account_data(user_id, room_id, FULLY_READ, {"event_id": stored.event_id})


def receipt_content(receipts: Sequence[Any]) -> dict[str, Any]:
    """Builds an ``m.receipt`` content from :class:`~homeserver.storage.stores.receipts.Receipt` rows
    (later rows win for the same user, type and thread)."""
    content: dict[str, Any] = {}
    for r in receipts:
        entry: dict[str, Any] = {"ts": r.ts}
        if r.thread_id is not None:
            entry["thread_id"] = r.thread_id
        content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = entry
    return content
