"""``/sync`` long polling on the fake clock: wake-ups, timeouts, isolation, shared computations and
client disconnects (both databases)."""

from __future__ import annotations

from typing import Any

from homeserver.streams.tokens import StreamToken
from homeserver.sync.sources.registry import SyncContext, SyncResult
from tests.homeserver.test_rooms_core import V3
from tests.homeserver.test_sync import SyncTestCase


class LongPollTests(SyncTestCase):
    def start_poll(self, token: str, since: str, timeout: int = 10_000, **params: Any) -> Any:
        channel = self.sync_channel(token, since=since, timeout=timeout, await_result=False, **params)
        self.pump(0.1)
        self.assertFalse(channel.is_finished(), channel.result if channel.is_finished() else None)
        return channel

    def test_wakes_on_new_message(self) -> None:
        """A waiting sync returns as soon as a message arrives, well within its timeout."""
        room_id = self.create_room()
        since = self.sync(self.alice)["next_batch"]
        channel = self.start_poll(self.alice, since)
        self.pump(2)
        self.assertFalse(channel.is_finished())
        event_id = self.say(room_id, self.alice, "wake up")
        self.pump(0.1)
        self.assertTrue(channel.is_finished())
        events = channel.json_body["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertEqual([e["event_id"] for e in events], [event_id])
        self.assertEqual(self.hs.rooms.notifier.waiter_count(), 0)

    def test_returns_empty_after_timeout(self) -> None:
        """With nothing new, the sync answers after its timeout with an empty response and a token."""
        self.create_room()
        since = self.sync(self.alice)["next_batch"]
        channel = self.start_poll(self.alice, since, timeout=5000)
        self.pump(4.5)
        self.assertFalse(channel.is_finished())
        self.pump(0.6)
        self.assertTrue(channel.is_finished())
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.json_body["rooms"]["join"], {})
        self.assertEqual(channel.json_body["next_batch"], since)
        self.assertEqual(self.hs.rooms.notifier.waiter_count(), 0)

    def test_timeout_zero_answers_at_once(self) -> None:
        self.create_room()
        since = self.sync(self.alice)["next_batch"]
        channel = self.sync_channel(self.alice, since=since, timeout=0, await_result=False)
        self.pump(0)
        self.assertTrue(channel.is_finished())

    def test_timeout_is_capped(self) -> None:
        """A huge timeout is clamped to five minutes."""
        # set_presence=offline: alice's own presence changes (idle after a minute) would wake the poll.
        since = self.sync(self.alice, set_presence="offline")["next_batch"]
        channel = self.start_poll(self.alice, since, timeout=10**12, set_presence="offline")
        self.pump(299)
        self.assertFalse(channel.is_finished())
        self.pump(2)
        self.assertTrue(channel.is_finished())

    def test_other_users_room_never_wakes_or_leaks(self) -> None:
        """Activity in a room carol is not in neither wakes her sync nor appears in it."""
        room_id = self.create_room()
        since = self.sync(self.carol)["next_batch"]
        channel = self.start_poll(self.carol, since, timeout=5000)
        self.say(room_id, self.alice, "private")
        self.pump(1)
        self.assertFalse(channel.is_finished())
        self.pump(5)
        self.assertTrue(channel.is_finished())
        self.assertNotIn(room_id, channel.text_body)
        self.assertEqual(channel.json_body["rooms"]["join"], {})

    def test_filtered_out_event_keeps_waiting(self) -> None:
        """A wake-up that brings nothing the filter lets through waits again for the rest of the timeout."""
        room_id = self.create_room()
        flt = {"room": {"timeline": {"types": ["m.room.topic"]}}}
        since = self.sync(self.alice, filter=flt)["next_batch"]
        channel = self.start_poll(self.alice, since, timeout=5000, filter=flt)
        self.say(room_id, self.alice, "not a topic")
        self.pump(1)
        self.assertFalse(channel.is_finished())
        self.state(room_id, self.alice, "m.room.topic", {"topic": "t"})
        self.pump(0.1)
        self.assertTrue(channel.is_finished())
        events = channel.json_body["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertEqual([e["type"] for e in events], ["m.room.topic"])

    def test_invite_wakes_invitee(self) -> None:
        """An invite wakes the invitee, who is in no shared room yet."""
        room_id = self.create_room()
        since = self.sync(self.bob)["next_batch"]
        channel = self.start_poll(self.bob, since)
        self.post(room_id, "invite", self.alice, {"user_id": "@bob:test:8448"})
        self.pump(0.1)
        self.assertTrue(channel.is_finished())
        self.assertIn(room_id, channel.json_body["rooms"]["invite"])

    def test_account_data_wakes(self) -> None:
        """An account data write wakes the user's sync and is in it."""
        since = self.sync(self.alice)["next_batch"]
        channel = self.start_poll(self.alice, since)
        put = self.make_request("PUT", f"{V3}/user/@alice:test:8448/account_data/m.x", {"v": 1}, access_token=self.alice)
        self.assertEqual(put.code, 200)
        self.pump(0.1)
        self.assertTrue(channel.is_finished())
        self.assertEqual(channel.json_body["account_data"]["events"], [{"type": "m.x", "content": {"v": 1}}])

    def test_identical_syncs_share_one_computation(self) -> None:
        """Concurrent identical syncs run the engine once and get the same response."""
        room_id = self.create_room()
        since = self.sync(self.alice)["next_batch"]
        engine = self.hs.sync.engine
        before = engine.computations
        first = self.start_poll(self.alice, since)
        second = self.start_poll(self.alice, since)
        self.assertEqual(engine.computations, before + 1)
        self.assertEqual(self.hs.rooms.notifier.waiter_count(), 1)
        self.say(room_id, self.alice, "both")
        self.pump(0.1)
        self.assertEqual(first.json_body, second.json_body)
        self.assertEqual(engine.computations, before + 1)
        # Once finished, nothing is cached: the same request computes again.
        self.sync(self.alice, since=since)
        self.assertEqual(engine.computations, before + 2)

    def test_different_filters_do_not_share(self) -> None:
        since = self.sync(self.alice)["next_batch"]
        engine = self.hs.sync.engine
        before = engine.computations
        self.start_poll(self.alice, since)
        self.start_poll(self.alice, since, filter={"room": {"timeline": {"limit": 1}}})
        self.assertEqual(engine.computations, before + 2)

    def test_disconnect_cancels_wait(self) -> None:
        """A client that goes away stops its long poll: the notifier waiter is removed at once."""
        since = self.sync(self.alice)["next_batch"]
        channel = self.start_poll(self.alice, since)
        self.assertEqual(self.hs.rooms.notifier.waiter_count(), 1)
        channel.disconnect()
        self.pump(0.1)
        self.assertEqual(self.hs.rooms.notifier.waiter_count(), 0)
        self.assertEqual(self.hs.sync.engine._in_flight, {})

    def test_one_of_two_sharers_disconnecting_keeps_the_other(self) -> None:
        """When one of two identical syncs disconnects, the other still gets its answer."""
        room_id = self.create_room()
        since = self.sync(self.alice)["next_batch"]
        gone = self.start_poll(self.alice, since)
        stays = self.start_poll(self.alice, since)
        gone.disconnect()
        self.pump(0.1)
        self.assertEqual(self.hs.rooms.notifier.waiter_count(), 1)
        event_id = self.say(room_id, self.alice, "still here")
        self.pump(0.1)
        self.assertTrue(stays.is_finished())
        events = stays.json_body["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertEqual([e["event_id"] for e in events], [event_id])


class _CounterSource:
    """A test extension source: a counter stream whose changes go to a namespaced top-level key."""

    name = "zz"

    def __init__(self) -> None:
        self.position = 0
        self.on_fill: Any = None

    async def current_position(self) -> int:
        return self.position

    async def fill_initial(self, ctx: SyncContext, result: SyncResult, to_position: int) -> None:
        result.extensions["org.example.counter"] = {"value": to_position}

    async def fill_incremental(self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int) -> None:
        if self.on_fill is not None:
            hook, self.on_fill = self.on_fill, None
            await hook()
        if to_position > from_position:
            result.extensions["org.example.counter"] = {"value": to_position}


class PluggableSourceTests(SyncTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.counter = _CounterSource()
        self.hs.sync.registry.register(self.counter)

    def test_extension_source_in_token_and_response(self) -> None:
        """A registered source gets its own token position and fills its section; the engine is unchanged."""
        self.counter.position = 3
        body = self.sync(self.alice)
        self.assertEqual(body["org.example.counter"], {"value": 3})
        self.assertEqual(StreamToken.decode(body["next_batch"], StreamToken()).get("zz"), 3)
        channel = self.sync_channel(self.alice, since=body["next_batch"], timeout=5000, await_result=False)
        self.pump(1)
        self.assertFalse(channel.is_finished())
        self.counter.position = 4
        self.hs.rooms.notifier.on_new("counter", 4, users=["@alice:test:8448"])
        self.pump(0.1)
        self.assertEqual(channel.json_body["org.example.counter"], {"value": 4})

    def test_event_landing_while_computing_is_not_slept_through(self) -> None:
        """A commit that lands after the room source ran but before the waiter exists is still seen."""
        room_id = self.create_room()
        since = self.sync(self.alice)["next_batch"]
        sent: list[str] = []

        async def concurrent_send() -> None:
            stored = await self.hs.rooms.creator.send(room_id, "@alice:test:8448", "m.room.message", {"body": "race"})
            sent.append(stored.event_id)

        self.counter.on_fill = concurrent_send
        channel = self.sync_channel(self.alice, since=since, timeout=30_000, await_result=False)
        self.pump(0.1)
        self.assertTrue(channel.is_finished())
        events = channel.json_body["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertEqual([e["event_id"] for e in events], sent)
