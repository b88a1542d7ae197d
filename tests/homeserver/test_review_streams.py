"""Review: event stream positions and wake-ups under out-of-order commits (both databases).

* An event committed while a lower stream position is still in flight is announced only once that
  position finishes. When the lower one *rolls back*, its waiters must still be woken: the failed
  persist must flush the wake-ups it was holding back, or a long-polling ``/sync`` sleeps through a
  committed event until its timeout.
* A stream id must be marked in flight before any higher id can be allocated and finished; otherwise
  the tracker reports a position past an id that is still being written (PostgreSQL, several
  writers), and a sync token skips that event for ever.
"""

from __future__ import annotations

import threading
from typing import Any

from homeserver.storage.ids import IdAllocator, StreamPositionTracker
from tests.homeserver.test_sync import SyncTestCase


class LostWakeupTests(SyncTestCase):
    def test_rollback_of_a_lower_position_releases_held_wakeups(self) -> None:
        """A committed event held back behind a lower in-flight position wakes syncs when that one fails."""
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        since = self.sync(self.bob, set_presence="offline")["next_batch"]
        channel = self.sync_channel(self.bob, since=since, timeout=30_000, set_presence="offline", await_result=False)
        self.pump(0.1)
        self.assertFalse(channel.is_finished())

        persister = self.hs.rooms.persister
        tracker = self.hs.rooms.stream_tracker
        allocator = persister._stream._allocator
        # Another persist (e.g. in another room) has allocated a position and is still writing.
        held = self.get_success(self.hs.pool.run_txn("reserve", allocator.next_id_txn))
        tracker.started(held)
        event_id = self.say(room_id, self.alice, "hello")
        self.pump(0.1)
        self.assertFalse(channel.is_finished())  # correct: the token may not pass the held position yet

        # That persist now fails and rolls back.
        def reuse_held(txn: Any) -> int:
            return held

        def fail(txn: Any, event: Any, stream: int, room_nid: int) -> None:
            raise RuntimeError("simulated failure")

        allocator.next_id_txn = reuse_held  # type: ignore[method-assign]
        persister.in_txn_hooks.append(fail)
        try:
            failed = self.send(room_id, {"msgtype": "m.text", "body": "doomed"}, self.alice, txn="doomed")
        finally:
            persister.in_txn_hooks.remove(fail)
            del allocator.next_id_txn
        self.assertEqual(failed.code, 500)
        self.assertEqual(tracker.current(), held + 1)
        self.pump(0.1)
        self.assertTrue(channel.is_finished())
        events = channel.json_body["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertEqual([e["event_id"] for e in events], [event_id])


class _FakeEngine:
    name = "postgres"


class _FakeSequenceTxn:
    """Answers ``SELECT nextval`` from a shared counter; optionally pauses after drawing a value."""

    def __init__(self, counter: list[int], lock: threading.Lock, pause: threading.Event | None = None,
                 drawn: threading.Event | None = None) -> None:
        self._counter, self._lock, self._pause, self._drawn = counter, lock, pause, drawn
        self._row: tuple[int] | None = None

    def execute(self, sql: str, args: Any = ()) -> None:
        with self._lock:
            self._counter[0] += 1
            self._row = (self._counter[0],)
        if self._drawn is not None:
            self._drawn.set()
        if self._pause is not None:
            assert self._pause.wait(5)

    def fetchone(self) -> tuple[int] | None:
        return self._row


class AllocationOrderTests(SyncTestCase):
    def test_higher_id_cannot_finish_before_a_lower_one_is_tracked(self) -> None:
        """RACE: with the id drawn but not yet marked in flight, a higher id must not move the position past it."""
        allocator = IdAllocator(_FakeEngine(), "events", "stream_ordering", "events_stream_seq")  # type: ignore[arg-type]
        tracker = StreamPositionTracker(4)
        counter, lock = [4], threading.Lock()
        pause, drawn = threading.Event(), threading.Event()
        ids: dict[str, int] = {}

        def first() -> None:
            ids["first"] = allocator.next_tracked_id_txn(_FakeSequenceTxn(counter, lock, pause, drawn), tracker)  # type: ignore[arg-type]

        def second() -> None:
            ids["second"] = allocator.next_tracked_id_txn(_FakeSequenceTxn(counter, lock), tracker)  # type: ignore[arg-type]
            tracker.finished(ids["second"])

        t1 = threading.Thread(target=first)
        t1.start()
        self.assertTrue(drawn.wait(5))
        t2 = threading.Thread(target=second)
        t2.start()
        t2.join(0.2)
        self.assertLessEqual(tracker.current(), 4)  # id 5 is drawn: nothing past 4 may be reported
        pause.set()
        t1.join(5)
        t2.join(5)
        self.assertEqual((ids["first"], ids["second"]), (5, 6))
        self.assertEqual(tracker.current(), 4)  # 6 finished, 5 still in flight
        tracker.finished(5)
        self.assertEqual(tracker.current(), 6)

    def test_persist_draws_its_position_through_the_tracked_allocation(self) -> None:
        """The persister uses the locked draw-and-mark path, and its position is in flight during the write."""
        room_id = self.create_room()
        tracker = self.hs.rooms.stream_tracker
        persister = self.hs.rooms.persister
        allocator = persister._stream._allocator
        drawn: list[int] = []
        original = allocator.next_tracked_id_txn

        def spy_draw(txn: Any, tr: StreamPositionTracker) -> int:
            stream = original(txn, tr)
            drawn.append(stream)
            return stream

        def spy_hook(txn: Any, event: Any, stream: int, room_nid: int) -> None:
            self.assertIn(stream, tracker._in_flight)

        allocator.next_tracked_id_txn = spy_draw  # type: ignore[method-assign]
        persister.in_txn_hooks.append(spy_hook)
        try:
            self.say(room_id, self.alice, "x")
        finally:
            persister.in_txn_hooks.remove(spy_hook)
            del allocator.next_tracked_id_txn
        self.assertEqual(len(drawn), 1)
        self.assertNotIn(drawn[0], tracker._in_flight)
