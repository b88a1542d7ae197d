"""A remote join's state and auth chain are persisted as outliers in batched transactions, and the
room A ends up with is the same as with one transaction per event (ADR 0016)."""

from __future__ import annotations

import urllib.parse
from typing import Any
from unittest import mock

from homeserver.events import persister as persister_module
from tests.federation.harness import FederationTestCase

MEMBERS = 23


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class JoinBatchingTests(FederationTestCase):
    def setUp(self) -> None:
        super().setUp()
        _, bob_token = self.user_on(self.b, "bob")
        self.room_id = self.create_room(self.b, bob_token, preset="public_chat")
        self.members = []
        for i in range(MEMBERS):
            user = self.get_success(self.b.hs.create_user(f"m{i}", None))
            self.get_success(self.b.hs.membership.join(user, self.room_id))
            self.members.append(user)
        self.alice, self.alice_token = self.user_on(self.a, "alice")
        self.txns: list[str] = []
        real = self.a.hs.pool.run_txn

        async def counting(desc: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
            self.txns.append(desc)
            return await real(desc, fn, *args, **kwargs)

        self.a.hs.pool.run_txn = counting  # type: ignore[method-assign]

    def _join(self) -> None:
        path = f"/_matrix/client/v3/join/{q(self.room_id)}?via={q(self.b.name)}"
        channel = self.request(self.a, "POST", path, {}, self.alice_token)
        self.assertEqual(channel.code, 200, channel.json_body)

    def _check_room(self) -> None:
        """A's room: every member joined, the join's state group is B's state plus the join, the
        state and auth events are hidden outliers, the join is the only forward extremity."""
        for user in [*self.members, self.alice]:
            self.assertEqual(self.membership_on(self.a, self.room_id, user), "join", user)
        head = self.get_success(self.a.hs.rooms.creator.get_head(self.room_id))
        b_head = self.get_success(self.b.hs.rooms.creator.get_head(self.room_id))
        self.assertEqual(len(head.extremities), 1)
        join_id = head.extremities[0]
        self.assertEqual(dict(head.state), {**dict(b_head.state), ("m.room.member", self.alice): join_id})
        stored_join = self.get_success(self.a.hs.rooms.room_input.get_stored_event(join_id))
        self.assertFalse(stored_join.outlier)
        group_state = self.get_success(self.a.hs.rooms.state_groups.get_state(stored_join.state_group_after))
        self.assertEqual(dict(group_state), dict(head.state))
        orderings = []
        for key, event_id in b_head.state.items():
            if key == ("m.room.member", self.alice):
                continue  # B holds A's join too once it accepted it
            stored = self.get_success(self.a.hs.rooms.room_input.get_stored_event(event_id))
            self.assertIsNotNone(stored, key)
            self.assertTrue(stored.outlier, key)
            self.assertIsNone(stored.state_group_after, key)
            orderings.append(stored.stream_ordering)
        # Each outlier has its own stream ordering, all below the join's, and the stream has caught up.
        self.assertEqual(len(set(orderings)), len(orderings))
        self.assertLess(max(orderings), stored_join.stream_ordering)
        self.assertGreaterEqual(self.a.hs.rooms.stream_tracker.current(), stored_join.stream_ordering)
        sync = self.request(self.a, "GET", "/_matrix/client/v3/sync", None, self.alice_token)
        self.assertIn(self.room_id, sync.json_body["rooms"]["join"])
        summary = sync.json_body["rooms"]["join"][self.room_id].get("summary", {})
        if "m.joined_member_count" in summary:
            self.assertEqual(summary["m.joined_member_count"], MEMBERS + 2)

    def test_one_outlier_transaction_for_the_whole_answer(self) -> None:
        self._join()
        # The first outlier goes in with the new room's row (persist_event), the rest in one batch,
        # then the join (persist_event).
        self.assertEqual(self.txns.count("persist_outliers"), 1, self.txns)
        self.assertEqual(self.txns.count("persist_event"), 2, self.txns)
        self._check_room()

    def test_several_batches(self) -> None:
        """Batches of 7: the room row is inserted once, with the first event; the room is the same."""
        with mock.patch.object(persister_module, "OUTLIER_BATCH_SIZE", 7):
            self._join()
        outliers = self.txns.count("persist_outliers")
        self.assertGreaterEqual(outliers, (MEMBERS + 5) // 7)
        self._check_room()

    def test_a_failed_batch_stores_no_join(self) -> None:
        """A batch that fails: the join is not persisted, the client gets an error, and a retry
        (the outliers already stored are skipped) completes the room."""
        real = self.a.hs.rooms.persister._persist_outliers_txn
        calls = {"n": 0}

        def failing(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("disk full")
            return real(*args, **kwargs)

        with mock.patch.object(persister_module, "OUTLIER_BATCH_SIZE", 7), \
                mock.patch.object(self.a.hs.rooms.persister, "_persist_outliers_txn", failing):
            path = f"/_matrix/client/v3/join/{q(self.room_id)}?via={q(self.b.name)}"
            channel = self.request(self.a, "POST", path, {}, self.alice_token)
        self.assertEqual(channel.code, 500, channel.json_body)
        self.assertNotEqual(self.membership_on(self.a, self.room_id, self.alice), "join")
        self._join()
        self._check_room()
