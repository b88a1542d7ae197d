"""Unread notification counts for ``/sync`` (spec client-server-api, "Receiving notifications").

Theory of operation:

* **What counts (push rules).** With a push rule evaluator (:mod:`homeserver.push`, wired by the
  composition root), each candidate event sent by someone else is evaluated against the user's push
  rules (joined member count, the user's display name and the power levels of the room now): it is
  a notification when the matching rule's actions include ``notify``, and a *highlight* when they
  set the ``highlight`` tweak. Candidates are :data:`NOTIFIABLE_TYPES` events, not rejected, not
  redacted (NOTSPEC: a user rule matching other event types does not count, to keep one indexed
  query per room).
* **What counts (fallback without push rules).** ``m.room.message`` and ``m.room.encrypted`` events
  sent by others, not edits (``m.replace``) and not ``m.notice`` messages. A *highlight* is a message
  whose ``m.mentions.user_ids`` names the user or, for messages without ``m.mentions``, whose
  ``body`` contains the user's ID or their display name in the room as a whole word
  (case-insensitive). Encrypted messages count but never highlight.
* **Read up to.** An event in thread ``T`` (``main`` or a thread root, found by
  :class:`~homeserver.ephemeral.receipts.ThreadResolver`) is read when it is at or before the latest of
  the user's unthreaded receipts and their receipts for ``T``, over ``m.read`` and
  ``m.read.private`` alike (the spec: the one further ahead wins), or before the user's own latest
  message in ``T`` (sending marks what came before as read). Events before the user's latest join
  never count.
* **Bounded and batched.** Per room, one indexed query (all rooms in one read transaction) returns
  the newest ``max_counted`` candidate events after ``max(latest join, unthreaded receipt)``; they
  are loaded in one batch (mostly from the event cache). Counts therefore saturate at
  ``max_counted`` (NOTSPEC: bounded work per sync; clients show "99+" long before).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from homeserver.ephemeral.access import MEMBER, RoomHeads
from homeserver.ephemeral.receipts import MAIN_THREAD, ThreadResolver, relation_of
from homeserver.push.evaluator import PushRuleEvaluator, RoomPowerLevels
from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.receipts import ReceiptStore
from homeserver.storage.stores.rooms import RoomStore

MESSAGE_TYPES = ("m.room.message", "m.room.encrypted")
NOTIFIABLE_TYPES = (*MESSAGE_TYPES, "m.sticker", "m.call.invite", "m.room.tombstone")
"""Candidate event types when push rules decide (the default rules notify for these)."""
POWER_LEVELS = ("m.room.power_levels", "")
CREATE = ("m.room.create", "")
MAX_UNREAD_COUNTED = 200
"""Candidate events examined per room; counts saturate here."""
MIN_DISPLAY_NAME_CHARS = 2
"""Display names shorter than this never highlight (a one-letter name would match everywhere)."""


@dataclass
class UnreadCounts:
    """``notification_count`` and ``highlight_count`` of one room or thread."""

    notification_count: int = 0
    highlight_count: int = 0

    def to_json(self) -> dict[str, int]:
        return {"notification_count": self.notification_count, "highlight_count": self.highlight_count}


Classifier = Callable[[StoredEvent], tuple[bool, bool]]
"""``stored event -> (notifies, highlights)`` for one room."""


@dataclass(frozen=True)
class _RoomState:
    """What evaluating push rules needs about a room besides the event."""

    display_name: str | None
    power_levels: RoomPowerLevels


@dataclass
class RoomUnread:
    """A room's counts: ``room`` (every thread, or only ``main`` when threaded) and per thread root."""

    room: UnreadCounts = field(default_factory=UnreadCounts)
    threads: dict[str, UnreadCounts] = field(default_factory=dict)


def mentions_user(content: Mapping[str, Any], user_id: str, display_name: str | None) -> bool:
    """Whether a message highlights the user (see the module docstring)."""
    mentions = content.get("m.mentions")
    if isinstance(mentions, Mapping):
        ids = mentions.get("user_ids")
        return isinstance(ids, list) and user_id in ids
    body = content.get("body")
    if not isinstance(body, str):
        return False
    needles = [user_id]
    if display_name is not None and len(display_name.strip()) >= MIN_DISPLAY_NAME_CHARS:
        needles.append(display_name.strip())
    for needle in needles:
        if re.search(rf"(?<![\w@]){re.escape(needle)}(?![\w])", body, re.IGNORECASE):
            return True
    return False


def _counts(stored: StoredEvent) -> bool:
    """Whether a candidate event can notify at all (edits and notices never do)."""
    content = stored.event.content
    rel_type, _ = relation_of(stored)
    if rel_type == "m.replace":
        return False
    return not (stored.event.type == "m.room.message" and content.get("msgtype") == "m.notice")


def _fallback_classifier(user_id: str, display_name: str | None) -> Classifier:
    """The approximation used without push rules (see the module docstring)."""

    def classify(stored: StoredEvent) -> tuple[bool, bool]:
        if not _counts(stored):
            return False, False
        event = stored.event
        return True, event.type == "m.room.message" and mentions_user(event.content, user_id, display_name)

    return classify


class UnreadCounter:
    """Computes unread counts for a user's rooms.

    Args:
        pool: the database pool.
        events: the event store.
        rooms: the room store (room ids, latest joins).
        receipts: the receipt store.
        heads: room heads (display names).
        threads: finds events' threads.
        max_counted: candidate events examined per room.
        push_rules: decides what notifies and highlights; None uses the fallback described in the
            module docstring.
    """

    def __init__(
        self,
        pool: DatabasePool,
        events: EventStore,
        rooms: RoomStore,
        receipts: ReceiptStore,
        heads: RoomHeads,
        threads: ThreadResolver,
        max_counted: int = MAX_UNREAD_COUNTED,
        push_rules: PushRuleEvaluator | None = None,
    ) -> None:
        self._pool = pool
        self._events = events
        self._rooms = rooms
        self._receipts = receipts
        self._heads = heads
        self._threads = threads
        self._max = max_counted
        self._push_rules = push_rules

    async def get_unread_counts(self, user_id: str, room_ids: Iterable[str], *, threaded: bool) -> dict[str, RoomUnread]:
        """Room ID -> counts, for the joined rooms among ``room_ids``.

        Args:
            user_id: whose counts.
            room_ids: the rooms.
            threaded: split per thread (the filter's ``unread_thread_notifications``): the room counts
                then cover only the main timeline.
        """
        nids: dict[str, int] = {}
        for room_id in sorted(set(room_ids)):
            record = await self._rooms.get_room(room_id)
            if record is not None:
                nids[room_id] = record.room_nid
        if not nids:
            return {}
        joins = await self._rooms.get_latest_join_streams(user_id, sorted(nids.values()))
        read_up_to: dict[str, dict[str | None, int]] = {}
        for receipt in await self._receipts.get_user_receipts(user_id, nids):
            per_thread = read_up_to.setdefault(receipt.room_id, {})
            per_thread[receipt.thread_id] = max(per_thread.get(receipt.thread_id, 0), receipt.event_stream)
        lower = {
            room_id: max(joins.get(nid, 0), read_up_to.get(room_id, {}).get(None, 0)) for room_id, nid in nids.items()
        }
        types = MESSAGE_TYPES if self._push_rules is None else NOTIFIABLE_TYPES
        candidates = await self._pool.run_read("get_unread_candidates", self._candidates_txn, nids, lower, types)
        loaded = await self._events.get_events(e for ids in candidates.values() for e in ids)
        threads = await self._threads.get_threads(loaded.values())
        classifiers = await self._classifiers(user_id, [r for r, ids in candidates.items() if ids], nids)
        result: dict[str, RoomUnread] = {}
        for room_id in nids:
            events = [loaded[e] for e in candidates.get(room_id, []) if e in loaded]
            result[room_id] = self._count_room(
                user_id, events, threads, read_up_to.get(room_id, {}), classifiers.get(room_id), threaded
            )
        return result

    def _candidates_txn(
        self, txn: Txn, nids: Mapping[str, int], lower: Mapping[str, int], types: Sequence[str]
    ) -> dict[str, list[str]]:
        """Per room, the newest candidate event IDs after its lower bound, newest first."""
        return {
            room_id: EventStore.recent_event_ids_of_types_txn(txn, nid, lower[room_id], types, self._max)
            for room_id, nid in nids.items()
        }

    async def _classifiers(self, user_id: str, room_ids: Sequence[str], nids: Mapping[str, int]) -> dict[str, Classifier]:
        """Per room with candidates, how to tell whether an event notifies and highlights."""
        if not room_ids:
            return {}
        states = await self._room_states(user_id, room_ids)
        evaluator = self._push_rules
        if evaluator is None:
            return {
                room_id: _fallback_classifier(user_id, states[room_id].display_name if room_id in states else None)
                for room_id in room_ids
            }
        ruleset = await evaluator.get_ruleset(user_id)
        joined_counts = await self._pool.run_read(
            "get_unread_joined_counts", self._joined_counts_txn, [nids[r] for r in room_ids]
        )
        classifiers: dict[str, Classifier] = {}
        for room_id in room_ids:
            state = states.get(room_id, _RoomState(None, RoomPowerLevels(None, None)))
            joined = joined_counts.get(nids[room_id], 0)

            def classify(stored: StoredEvent, joined: int = joined, state: _RoomState = state) -> tuple[bool, bool]:
                actions = ruleset.evaluate(stored.event, joined, state.display_name, state.power_levels)
                return actions.notify, actions.highlight

            classifiers[room_id] = classify
        return classifiers

    def _joined_counts_txn(self, txn: Txn, room_nids: Sequence[int]) -> dict[int, int]:
        """Room nid -> joined member count now (``room_member_count`` of the push rules)."""
        return RoomStore.joined_counts_txn(txn, self._pool.engine, room_nids)

    async def _room_states(self, user_id: str, room_ids: Sequence[str]) -> dict[str, _RoomState]:
        """The user's display name (from their current member event) and the power levels, per room."""
        wanted: dict[str, dict[tuple[str, str], str]] = {}
        for room_id in room_ids:
            head = await self._heads.get_head(room_id)
            if head is not None:
                keys = ((MEMBER, user_id), POWER_LEVELS, CREATE)
                wanted[room_id] = {k: head.state[k] for k in keys if k in head.state}
        loaded = await self._events.get_events(e for ids in wanted.values() for e in ids.values())
        states: dict[str, _RoomState] = {}
        for room_id, ids in wanted.items():
            events = {k: loaded[e].event for k, e in ids.items() if e in loaded}
            member = events.get((MEMBER, user_id))
            name = member.content.get("displayname") if member is not None else None
            power = RoomPowerLevels(events.get(POWER_LEVELS), events.get(CREATE))
            states[room_id] = _RoomState(name if isinstance(name, str) else None, power)
        return states

    @staticmethod
    def _count_room(
        user_id: str,
        newest_first: Sequence[StoredEvent],
        threads: Mapping[str, str],
        read_up_to: Mapping[str | None, int],
        classify: Classifier | None,
        threaded: bool,
    ) -> RoomUnread:
        unread = RoomUnread()
        own_seen: set[str] = set()  # threads where the user's own later message marks the rest read
        unthreaded = read_up_to.get(None, 0)
        for stored in newest_first:
            thread = threads.get(stored.event_id, MAIN_THREAD)
            if stored.event.sender == user_id:
                own_seen.add(thread)
                continue
            if thread in own_seen or stored.stream_ordering <= max(unthreaded, read_up_to.get(thread, 0)):
                continue
            notifies, highlights = classify(stored) if classify is not None else (False, False)
            if not notifies:
                continue
            target = unread.room
            if threaded and thread != MAIN_THREAD:
                target = unread.threads.setdefault(thread, UnreadCounts())
            target.notification_count += 1
            if highlights:
                target.highlight_count += 1
        return unread
