"""The sender's pure parts (backoff, sharding, transactions) and its store on both engines."""

from __future__ import annotations

from collections import Counter

import pytest

from federation.sender.backoff import BackoffPolicy, RetryState
from federation.sender.service import destination_shard
from federation.sender.store import SenderStore
from federation.sender.transactions import QueuedEdu, QueuedPdu, Transaction, TransactionIds, pdu_errors
from tests.storage.harness import TestDatabase, get_success


class BackoffTests:
    def test_grows_exponentially_to_the_cap(self) -> None:
        """Without jitter the wait doubles from the initial value and stops at the cap."""
        policy = BackoffPolicy(initial_ms=1000, multiplier=2.0, max_ms=10_000, jitter=0.0)
        state = RetryState()
        seen = []
        for now in range(7):
            state = state.after_failure(now, policy)
            seen.append(state.retry_interval_ms)
        assert seen == [1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]
        assert state.ready_at() == 6 + 10_000

    @pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999])
    def test_jitter_stays_within_bounds(self, draw: float) -> None:
        """Each wait is within +/- jitter of its base, and the cap bounds it."""
        policy = BackoffPolicy(initial_ms=1000, multiplier=2.0, max_ms=8000, jitter=0.2)
        interval = 0
        for _ in range(10):
            interval = policy.next_interval(interval, lambda: draw)
            assert 1 <= interval <= 8000 * 1.2
        assert interval >= 8000 * 0.8

    def test_fresh_state_is_not_backing_off(self) -> None:
        """No failure: ready now."""
        assert not RetryState().backing_off
        assert RetryState().ready_at() == 0


class ShardTests:
    def test_stable_and_in_range(self) -> None:
        """A destination always maps to the same shard in [0, n); one shard maps everything to 0."""
        names = [f"s{i}.example:8448" for i in range(400)]
        for n in (1, 2, 3, 8):
            shards = [destination_shard(d, n) for d in names]
            assert shards == [destination_shard(d, n) for d in names]
            assert all(0 <= s < n for s in shards)
        counts = Counter(destination_shard(d, 4) for d in names)
        assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 50


class TransactionTests:
    def test_limits(self) -> None:
        """More than 50 PDUs or 100 EDUs is a programming error."""
        pdu = QueuedPdu(1, "!r:x", "$e", {})
        edu = QueuedEdu("m.typing", {})
        Transaction("t", "d", [pdu] * 50, [edu] * 100)
        with pytest.raises(ValueError):
            Transaction("t", "d", [pdu] * 51)
        with pytest.raises(ValueError):
            Transaction("t", "d", edus=[edu] * 101)

    def test_body_and_path(self) -> None:
        """The body carries origin, timestamp, PDUs and (only when present) EDUs; the id is percent-encoded."""
        txn = Transaction("a/b c", "d", [QueuedPdu(7, "!r:x", "$e", {"type": "m.room.message"})])
        assert txn.path == "/_matrix/federation/v1/send/a%2Fb%20c"
        assert txn.body("us", 5) == {"origin": "us", "origin_server_ts": 5, "pdus": [{"type": "m.room.message"}]}
        assert txn.max_stream_ordering == 7
        with_edu = Transaction("t", "d", edus=[QueuedEdu("m.typing", {"a": 1}, outbox_id=3), QueuedEdu("m.receipt", {})])
        assert with_edu.body("us", 5)["edus"][0] == {"edu_type": "m.typing", "content": {"a": 1}}
        assert with_edu.outbox_ids == [3]
        assert with_edu.max_stream_ordering is None

    def test_ids_unique_across_restarts(self) -> None:
        """Ids of one process never repeat, nor those of a later start."""
        first, later = TransactionIds(1000), TransactionIds(2000)
        ids = [first.next() for _ in range(100)] + [later.next() for _ in range(100)]
        assert len(set(ids)) == 200

    def test_pdu_errors_tolerates_garbage(self) -> None:
        """Errors are read from a well-formed answer; anything malformed yields nothing."""
        assert pdu_errors({"pdus": {"$a": {"error": "no"}, "$b": {}, "$c": "x"}}) == {"$a": "no"}
        assert pdu_errors({"pdus": {"$a": {"error": 5}}}) == {"$a": "(non-string error)"}
        assert pdu_errors({"pdus": {"$a": {"error": "x" * 1000}}})["$a"] == "x" * 200
        for garbage in ({}, {"pdus": []}, {"pdus": "x"}, {"pdus": None}):
            assert pdu_errors(garbage) == {}


class SenderStoreTests:
    def test_fanout_position_and_catchup_rows(self, prepared_database: TestDatabase) -> None:
        """Fan-out keeps the newest event per destination and room; the position never moves back."""
        store = SenderStore(prepared_database.make_pool())
        assert get_success(store.get_position(0)) is None
        get_success(store.record_fanout(0, 10, [("a.example", "!r1:x", 5), ("a.example", "!r2:x", 7), ("b.example", "!r1:x", 5)]))
        get_success(store.record_fanout(0, 12, [("a.example", "!r1:x", 11)]))
        get_success(store.record_fanout(0, 9, [("a.example", "!r1:x", 3)]))  # stale: ignored
        assert get_success(store.get_position(0)) == 12
        assert get_success(store.get_catchup_rooms("a.example", 0, 50)) == [(7, "!r2:x"), (11, "!r1:x")]
        assert get_success(store.get_catchup_rooms("a.example", 7, 50)) == [(11, "!r1:x")]
        assert get_success(store.get_catchup_rooms("a.example", 0, 1)) == [(7, "!r2:x")]
        assert get_success(store.get_destinations_with_work()) == ["a.example", "b.example"]
        get_success(store.mark_delivered("a.example", 11, [], reset_retry=False))
        get_success(store.mark_delivered("a.example", 4, [], reset_retry=False))  # never backwards
        assert get_success(store.get_destination("a.example")).last_successful == 11
        assert get_success(store.get_destinations_with_work()) == ["b.example"]

    def test_edu_outbox_and_retry(self, prepared_database: TestDatabase) -> None:
        """EDUs come back oldest first per destination and go once delivered; backoff round-trips."""
        store = SenderStore(prepared_database.make_pool())
        get_success(store.add_edus([("a.example", "m.direct_to_device", {"n": i}) for i in range(5)], 1))
        get_success(store.add_edus([("b.example", "m.device_list_update", {"n": "b"})], 1))
        edus = get_success(store.get_edus("a.example", 3))
        assert [e.content["n"] for e in edus] == [0, 1, 2]
        assert len({e.outbox_id for e in edus}) == 3
        get_success(store.mark_delivered("a.example", None, [e.outbox_id for e in edus], reset_retry=False))
        assert [e.content["n"] for e in get_success(store.get_edus("a.example", 10))] == [3, 4]
        assert [e.content for e in get_success(store.get_edus("b.example", 10))] == [{"n": "b"}]
        get_success(store.set_retry("c.example", RetryState(100, 5000)))
        assert get_success(store.get_destination("c.example")).retry == RetryState(100, 5000)
        get_success(store.mark_delivered("c.example", None, [], reset_retry=True))
        assert get_success(store.get_destination("c.example")).retry == RetryState()
        assert get_success(store.get_destination("unknown.example")).last_successful == 0
        # ids keep increasing after deletions, so order holds
        get_success(store.add_edus([("a.example", "m.direct_to_device", {"n": 5})], 2))
        assert [e.content["n"] for e in get_success(store.get_edus("a.example", 10))] == [3, 4, 5]
