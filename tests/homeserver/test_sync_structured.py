"""Per-room sync sources learn which rooms were newly joined from the room-events source's structured
facts (``SyncResult.newly_joined_room_ids``), not from the rendered timeline/state JSON, so filters
that hide or reshape member events cannot make typing and receipts of a just-joined room go missing
(ADR 0008; both databases, ``/sync`` and the WebSocket push)."""

from __future__ import annotations

from typing import Any

from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_receipts import receipts_of
from tests.homeserver.test_rooms_core import V3
from tests.homeserver.test_typing import typing_events
from tests.homeserver.test_websocket import SessionTestCase

ALICE = f"@alice:{TEST_SERVER_NAME}"
BOB = f"@bob:{TEST_SERVER_NAME}"

HIDE_MEMBERS: dict[str, Any] = {
    "room": {"timeline": {"not_types": ["m.room.member"]}, "state": {"not_types": ["m.room.member"]}}
}
"""A filter under which the user's own join event appears nowhere in the response."""

ONLY_BODIES: dict[str, Any] = {"event_fields": ["content.body"]}
"""A filter that strips ``type``, ``state_key`` and ``content.membership`` from every event."""


class NewlyJoinedTestCase(SessionTestCase):
    """Alice's public room, where Bob types and has a read receipt; Carol joins it between two syncs."""

    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.message = self.say(self.room, self.alice, "before carol")
        channel = self.make_request(
            "POST", f"{V3}/rooms/{self.room}/receipt/m.read/{self.message}", {}, access_token=self.bob
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        channel = self.make_request(
            "PUT", f"{V3}/rooms/{self.room}/typing/{BOB}", {"typing": True, "timeout": 30_000}, access_token=self.bob
        )
        self.assertEqual(channel.code, 200, channel.json_body)

    def carol_joins(self, flt: dict[str, Any]) -> str:
        """Carol syncs (not yet in the room), then joins it; returns her ``since``."""
        since: str = self.sync(self.carol, filter=flt)["next_batch"]
        self.join(self.room, self.carol)
        return since

    def assert_ephemeral(self, body: dict[str, Any]) -> None:
        self.assertIn(self.room, body["rooms"]["join"])
        self.assertEqual(typing_events(body, self.room), [[BOB]])
        self.assertEqual(receipts_of(body, self.room).get((BOB, "m.read", None)), self.message)


class SyncNewlyJoinedTests(NewlyJoinedTestCase):
    def test_hidden_member_events_keep_typing_and_receipts(self) -> None:
        """A filter hiding m.room.member (timeline and state) still gets the joined room's typing and receipts."""
        since = self.carol_joins(HIDE_MEMBERS)
        body = self.sync(self.carol, since=since, filter=HIDE_MEMBERS)
        self.assertNotIn("m.room.member", str(body["rooms"]["join"][self.room]))
        self.assert_ephemeral(body)

    def test_event_fields_keep_typing_and_receipts(self) -> None:
        """event_fields that strip type and membership do not hide that the room was just joined."""
        since = self.carol_joins(ONLY_BODIES)
        self.assert_ephemeral(self.sync(self.carol, since=since, filter=ONLY_BODIES))

    def test_unfiltered_join_still_works(self) -> None:
        """Without a filter the newly joined room gets its typing and receipts (unchanged behaviour)."""
        self.assert_ephemeral(self.sync(self.carol, since=self.carol_joins({})))

    def test_rejoin_counts_as_newly_joined(self) -> None:
        """Leaving and re-joining within the range counts as newly joined, whatever the filter."""
        self.join(self.room, self.carol)
        since = self.sync(self.carol, filter=HIDE_MEMBERS)["next_batch"]
        self.post(self.room, "leave", self.carol)
        self.join(self.room, self.carol)
        self.assert_ephemeral(self.sync(self.carol, since=since, filter=HIDE_MEMBERS))

    def test_room_already_joined_gets_only_changes(self) -> None:
        """A room joined before ``since`` is not newly joined: unchanged receipts are not re-sent."""
        self.join(self.room, self.carol)
        since = self.sync(self.carol, filter=HIDE_MEMBERS)["next_batch"]
        self.say(self.room, self.alice, "after")
        body = self.sync(self.carol, since=since, filter=HIDE_MEMBERS)
        self.assertEqual(receipts_of(body, self.room), {})


class WebSocketNewlyJoinedTests(NewlyJoinedTestCase):
    def test_pushed_frame_of_join_keeps_typing_and_receipts(self) -> None:
        """The WebSocket frame that carries the join has the room's typing and receipts too."""
        since = self.sync(self.carol, filter=HIDE_MEMBERS)["next_batch"]
        _session, sink = self.open(self.carol, since=since, flt=HIDE_MEMBERS)
        self.assertEqual(sink.of_type("sync"), [])
        self.join(self.room, self.carol)
        frames = sink.of_type("sync")
        self.assertEqual(len(frames), 1)
        self.assert_ephemeral(frames[0]["body"])


class _FactsProbe:
    """A sync source registered last that records the room-events source's structured facts."""

    name = "zprobe"

    def __init__(self) -> None:
        self.seen: list[tuple[set[str], set[str], set[str]]] = []

    async def current_position(self) -> int:
        return 0

    async def fill_initial(self, ctx: Any, result: Any, to_position: int) -> None:
        self.seen.append((set(result.joined_room_ids), set(result.newly_joined_room_ids), set(result.newly_left_room_ids)))

    async def fill_incremental(self, ctx: Any, result: Any, from_position: int, to_position: int) -> None:
        await self.fill_initial(ctx, result, to_position)


class StructuredFactsTests(SessionTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.probe = _FactsProbe()
        self.hs.sync.registry.register(self.probe)

    def facts(self, token: str, **params: Any) -> tuple[set[str], set[str], set[str]]:
        self.sync(token, **params)
        return self.probe.seen[-1]

    def test_initial_sync_has_no_newly_joined_or_left(self) -> None:
        """An initial sync lists the joined rooms; nothing is "newly" joined or left."""
        self.assertEqual(self.facts(self.bob), ({self.room}, set(), set()))

    def test_join_and_leave_in_range(self) -> None:
        """Joining in the range is newly joined; leaving (or being kicked) is newly left, even when the
        filter hides every member event."""
        other = self.create_room(preset="public_chat")
        self.join(other, self.bob)
        since = self.sync(self.bob)["next_batch"]
        third = self.create_room(preset="public_chat")
        self.join(third, self.bob)
        self.post(other, "leave", self.bob)
        joined, newly_joined, newly_left = self.facts(self.bob, since=since, filter=HIDE_MEMBERS)
        self.assertEqual((joined, newly_joined, newly_left), ({self.room, third}, {third}, {other}))

    def test_rejected_invite_is_not_newly_left(self) -> None:
        """Declining an invite in the range leaves nothing: the user was never joined."""
        room = self.create_room()
        self.post(room, "invite", self.alice, {"user_id": f"@carol:{TEST_SERVER_NAME}"})
        since = self.sync(self.carol)["next_batch"]
        self.post(room, "leave", self.carol)
        self.assertEqual(self.facts(self.carol, since=since), (set(), set(), set()))
