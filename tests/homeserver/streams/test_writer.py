"""The one stream writer: ids in the writing transaction, wake-ups held until every lower id finished."""

from __future__ import annotations

import unittest
from collections.abc import Callable
from typing import Any

from homeserver.storage.ids import StreamPositionTracker
from homeserver.streams.writer import StreamWriter
from tests.homeserver.server_case import TEST_SERVER_NAME

ALICE = f"@alice:{TEST_SERVER_NAME}"
BOB = f"@bob:{TEST_SERVER_NAME}"
ROOM = f"!room:{TEST_SERVER_NAME}"


class FakeAllocator:
    """Hands out 1, 2, 3... and marks each in flight, like ``IdAllocator.next_tracked_id_txn``."""

    def __init__(self, last: int) -> None:
        self.last = last

    def next_tracked_id_txn(self, _txn: Any, tracker: StreamPositionTracker) -> int:
        self.last += 1
        tracker.started(self.last)
        return self.last


class FakeTxn:
    """Collects the after-commit and on-exception callbacks so the test decides each outcome."""

    def __init__(self) -> None:
        self.after: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self.on_exception: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def call_after(self, fn: Callable[..., object], *args: Any) -> None:
        self.after.append((fn, args))

    def call_on_exception(self, fn: Callable[..., object], *args: Any) -> None:
        self.on_exception.append((fn, args))

    def commit(self) -> None:
        for fn, args in self.after:
            fn(*args)

    def roll_back(self) -> None:
        for fn, args in self.on_exception:
            fn(*args)


class FakeNotifier:
    def __init__(self) -> None:
        self.positions: dict[str, int] = {}
        self.calls: list[tuple[str, int, frozenset[str], frozenset[str]]] = []

    def on_new(self, stream: str, position: int, users: Any = (), rooms: Any = ()) -> None:
        self.positions[stream] = position
        self.calls.append((stream, position, frozenset(users), frozenset(rooms)))


class StreamWriterTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.notifier = FakeNotifier()
        self.writer = StreamWriter("receipts", FakeAllocator(10), 10, self.notifier)  # type: ignore[arg-type]  # fakes

    def test_start_position_is_published(self) -> None:
        self.assertEqual(self.writer.current(), 10)
        self.assertEqual(self.notifier.positions["receipts"], 10)

    def test_out_of_order_commit_holds_the_wakeup_until_the_lower_id_finishes(self) -> None:
        first, second = FakeTxn(), FakeTxn()
        low = self.writer.next_id_txn(first)
        high = self.writer.next_id_txn(second)
        self.assertEqual((low, high), (11, 12))
        second.commit()
        self.writer.announce(high, users=(BOB,))
        self.assertEqual(self.notifier.calls, [])  # 11 is still in flight: nobody may read 12 yet
        self.assertEqual(self.writer.current(), 10)
        self.assertEqual(self.writer.held_count(), 1)
        first.commit()  # 12 is readable now: Bob is woken at once, at position 12
        self.assertEqual(self.notifier.calls, [("receipts", 12, frozenset({BOB}), frozenset())])
        self.writer.announce(low, rooms=(ROOM,))
        self.assertEqual(self.notifier.calls[1:], [("receipts", 12, frozenset(), frozenset({ROOM}))])
        self.assertEqual(self.writer.held_count(), 0)

    def test_a_rolled_back_lower_id_releases_the_held_wakeups(self) -> None:
        first, second = FakeTxn(), FakeTxn()
        self.writer.next_id_txn(first)
        high = self.writer.next_id_txn(second)
        second.commit()
        self.writer.announce(high, users=(ALICE,))
        self.assertEqual(self.notifier.calls, [])
        first.roll_back()  # no later write is needed to wake Alice
        self.assertEqual(self.notifier.calls, [("receipts", 12, frozenset({ALICE}), frozenset())])
        self.assertEqual(self.writer.current(), 12)

    def test_a_commit_without_an_announcement_releases_the_held_wakeups(self) -> None:
        first, second = FakeTxn(), FakeTxn()
        self.writer.next_id_txn(first)
        high = self.writer.next_id_txn(second)
        second.commit()
        self.writer.announce(high, users=(ALICE,))
        first.commit()  # e.g. a receipt write that moved nothing: it finishes but announces nothing
        self.assertEqual(self.notifier.calls, [("receipts", 12, frozenset({ALICE}), frozenset())])

    def test_in_order_writes_wake_at_once(self) -> None:
        txn = FakeTxn()
        stream_id = self.writer.next_id_txn(txn)
        txn.commit()
        self.writer.announce(stream_id, users=(ALICE,))
        self.assertEqual(self.notifier.calls, [("receipts", 11, frozenset({ALICE}), frozenset())])
