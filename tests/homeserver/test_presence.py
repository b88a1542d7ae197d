"""Presence: the state machine, ``/presence`` endpoints, ``/sync`` delivery to room-mates, timeouts on
the test clock, persistence and the ``presence.enabled`` switch (both databases)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from homeserver.presence.memberships import JoinedRoomsCache
from homeserver.presence.service import SWEEP_INTERVAL_S, ChangeLog, PresenceService
from homeserver.presence.state import (
    ACTIVE_WINDOW_MS,
    OFFLINE,
    ONLINE,
    UNAVAILABLE,
    Timeouts,
    UserPresence,
    activity,
    apply_deadlines,
    next_deadline,
    presence_content,
    set_state,
    sync_ended,
    sync_started,
)
from homeserver.storage.stores.presence import PresenceStore
from tests.homeserver.test_rooms_core import V3
from tests.homeserver.test_sync import SyncTestCase
from tests.unittest import override_config

T = Timeouts(idle_ms=300_000, offline_ms=30_000)


def _presence_events(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    events = body["presence"]["events"]
    for e in events:
        assert e["type"] == "m.presence", e
    return {e["sender"]: e["content"] for e in events}


class StateMachineTests(SynchronousTestCase):
    """The pure transitions of :mod:`homeserver.presence.state`."""

    def test_online_sync_brings_offline_user_online(self) -> None:
        """A sync with set_presence=online makes an offline user online and currently active."""
        p = UserPresence("@a:t")
        self.assertTrue(sync_started(p, ONLINE, 1000))
        self.assertEqual((p.state, p.currently_active, p.last_active_ts, p.open_syncs), (ONLINE, True, 1000, 1))

    def test_online_sync_does_not_override_unavailable(self) -> None:
        """Idle (or chosen) unavailable survives syncing; only activity ends it."""
        p = UserPresence("@a:t", state=UNAVAILABLE, last_active_ts=5)
        self.assertFalse(sync_started(p, ONLINE, 1000))
        self.assertEqual((p.state, p.last_active_ts), (UNAVAILABLE, 5))

    def test_unavailable_sync_marks_idle(self) -> None:
        p = UserPresence("@a:t", state=ONLINE, currently_active=True)
        self.assertTrue(sync_started(p, UNAVAILABLE, 1000))
        self.assertEqual((p.state, p.currently_active), (UNAVAILABLE, False))

    def test_offline_sync_is_not_counted(self) -> None:
        """set_presence=offline neither marks online nor keeps the user from going offline."""
        p = UserPresence("@a:t")
        self.assertFalse(sync_started(p, OFFLINE, 1000))
        sync_ended(p, OFFLINE, 2000)
        self.assertEqual((p.state, p.open_syncs, p.last_sync_ts), (OFFLINE, 0, 0))

    def test_idle_and_currently_active_deadlines(self) -> None:
        """currently_active turns false after the active window; unavailable after the idle timeout."""
        p = UserPresence("@a:t")
        sync_started(p, ONLINE, 0)
        self.assertEqual(next_deadline(p, T), ACTIVE_WINDOW_MS)
        self.assertFalse(apply_deadlines(p, T, ACTIVE_WINDOW_MS - 1))
        self.assertTrue(apply_deadlines(p, T, ACTIVE_WINDOW_MS))
        self.assertEqual((p.state, p.currently_active), (ONLINE, False))
        self.assertEqual(next_deadline(p, T), T.idle_ms)
        self.assertTrue(apply_deadlines(p, T, T.idle_ms))
        self.assertEqual(p.state, UNAVAILABLE)
        self.assertIsNone(next_deadline(p, T))  # a sync is open: nothing can change with time alone

    def test_offline_only_when_no_sync_is_open(self) -> None:
        p = UserPresence("@a:t")
        sync_started(p, ONLINE, 0)
        sync_started(p, ONLINE, 0)
        sync_ended(p, ONLINE, 10_000)
        apply_deadlines(p, T, 100_000)  # currently_active lapses, but one sync is still open
        self.assertEqual(p.state, ONLINE)
        sync_ended(p, ONLINE, 110_000)
        self.assertEqual(next_deadline(p, T), 110_000 + T.offline_ms)
        self.assertFalse(apply_deadlines(p, T, 110_000 + T.offline_ms - 1))
        self.assertTrue(apply_deadlines(p, T, 110_000 + T.offline_ms))
        self.assertEqual((p.state, p.currently_active), (OFFLINE, False))
        self.assertIsNone(next_deadline(p, T))

    def test_activity_always_means_online(self) -> None:
        """Audit CHAT-4: sending makes the user online whatever the state, never offline while sending."""
        for state in (OFFLINE, UNAVAILABLE):
            p = UserPresence("@a:t", state=state)
            self.assertTrue(activity(p, 5000))
            self.assertEqual((p.state, p.currently_active, p.last_active_ts), (ONLINE, True, 5000))
        p = UserPresence("@a:t")
        activity(p, 0)
        self.assertFalse(activity(p, 1000))  # already currently active: nothing to broadcast

    def test_set_state_and_content(self) -> None:
        p = UserPresence("@a:t")
        self.assertTrue(set_state(p, UNAVAILABLE, "lunch", 1000))
        self.assertEqual(
            presence_content(p, 4000),
            {"presence": UNAVAILABLE, "currently_active": False, "last_active_ago": 3000, "status_msg": "lunch"},
        )
        self.assertFalse(set_state(p, UNAVAILABLE, "lunch", 2000))
        self.assertTrue(set_state(p, UNAVAILABLE, None, 2000))
        self.assertNotIn("status_msg", presence_content(p, 2000))


class ChangeLogTests(SynchronousTestCase):
    def test_range_and_floor(self) -> None:
        """The log answers ranges while it reaches back; once trimmed past ``from`` it says so."""
        log = ChangeLog(10, max_entries=4)
        for position, user in enumerate(["@a", "@b", "@a", "@c"], start=11):
            log.append(position, user)
        self.assertEqual(log.users_between(10, 14), ["@a", "@b", "@a", "@c"])
        self.assertEqual(log.users_between(12, 13), ["@a"])
        log.append(15, "@d")  # over the bound: the older half goes
        self.assertEqual(log.floor, 12)
        self.assertIsNone(log.users_between(11, 15))
        self.assertEqual(log.users_between(12, 15), ["@a", "@c", "@d"])


class JoinedRoomsCacheTests(SynchronousTestCase):
    def test_updates_and_race(self) -> None:
        """Cached entries follow membership events; a load racing with a change is not cached."""
        from twisted.internet import defer

        pending: list[defer.Deferred[list[str]]] = []

        def load(user_id: str) -> defer.Deferred[list[str]]:
            d: defer.Deferred[list[str]] = defer.Deferred()
            pending.append(d)
            return d

        cache = JoinedRoomsCache(load)
        first = defer.ensureDeferred(cache.get("@a:t"))
        cache.on_membership("@a:t", "!new", "join")  # lands while the load is in flight
        pending.pop().callback(["!old"])
        self.assertEqual(self.successResultOf(first), frozenset({"!old"}))
        self.assertIsNone(cache.cached("@a:t"))
        second = defer.ensureDeferred(cache.get("@a:t"))
        pending.pop().callback(["!old", "!new"])
        self.assertEqual(self.successResultOf(second), frozenset({"!old", "!new"}))
        cache.on_membership("@a:t", "!old", "leave")
        self.assertEqual(cache.cached("@a:t"), frozenset({"!new"}))


class PresenceTestCase(SyncTestCase):
    def status(self, token: str, user_id: str) -> Any:
        return self.make_request("GET", f"{V3}/presence/{user_id}/status", access_token=token)

    def put_status(self, token: str, user_id: str, body: Any) -> Any:
        return self.make_request("PUT", f"{V3}/presence/{user_id}/status", body, access_token=token)

    def presence_of(self, user_id: str, token: str | None = None) -> dict[str, Any]:
        channel = self.status(token or self.alice, user_id)
        self.assertEqual(channel.code, 200, channel.json_body)
        body: dict[str, Any] = channel.json_body
        return body

    def shared_room(self) -> str:
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        return room_id

    def advance(self, seconds: float) -> None:
        """Advances the clock in sweep-sized steps, so the sweep runs as it would."""
        remaining = seconds
        while remaining > 0:
            step = min(SWEEP_INTERVAL_S, remaining)
            self.pump(step)
            remaining -= step


class EndpointTests(PresenceTestCase):
    def test_put_and_get_own_status(self) -> None:
        """PUT sets presence and status message; GET returns them with last_active_ago."""
        channel = self.put_status(self.alice, "@alice:test:8448", {"presence": "unavailable", "status_msg": "In a meeting"})
        self.assertEqual((channel.code, channel.json_body), (200, {}))
        self.pump(2)
        body = self.presence_of("@alice:test:8448")
        self.assertEqual((body["presence"], body["status_msg"]), ("unavailable", "In a meeting"))
        self.assertEqual(body["last_active_ago"], 2000)
        self.put_status(self.alice, "@alice:test:8448", {"presence": "online"})
        body = self.presence_of("@alice:test:8448")
        self.assertEqual((body["presence"], body["currently_active"]), ("online", True))
        self.assertNotIn("status_msg", body)  # an omitted status_msg clears it

    def test_unknown_user_without_presence_is_offline(self) -> None:
        self.assertEqual(self.presence_of("@alice:test:8448"), {"presence": "offline"})

    def test_room_mates_only(self) -> None:
        """Room-mates may read a user's presence; others get 403, unknown and remote users 404."""
        self.shared_room()
        self.put_status(self.alice, "@alice:test:8448", {"presence": "online", "status_msg": "hi"})
        self.assertEqual(self.presence_of("@alice:test:8448", self.bob)["status_msg"], "hi")
        channel = self.status(self.carol, "@alice:test:8448")
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        for user in ("@nobody:test:8448", "@alice:elsewhere.example"):
            channel = self.status(self.alice, user)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"), user)
        channel = self.status(self.alice, "not-a-user")
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))

    def test_bad_puts(self) -> None:
        """Bad values are 400; another user's presence is 403; nothing changes."""
        cases: list[tuple[Any, int, str]] = [
            ({"presence": "busy"}, 400, "M_INVALID_PARAM"),
            ({"presence": 1}, 400, "M_INVALID_PARAM"),
            ({}, 400, "M_MISSING_PARAM"),
            ({"presence": "online", "status_msg": 5}, 400, "M_INVALID_PARAM"),
            ({"presence": "online", "status_msg": "x" * 513}, 400, "M_INVALID_PARAM"),
            ([], 400, "M_NOT_JSON"),
        ]
        for body, code, errcode in cases:
            channel = self.put_status(self.alice, "@alice:test:8448", body)
            self.assertEqual((channel.code, channel.json_body.get("errcode")), (code, errcode), body)
        channel = self.put_status(self.alice, "@bob:test:8448", {"presence": "online"})
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(self.presence_of("@bob:test:8448", self.bob), {"presence": "offline"})
        self.assertEqual(self.presence_of("@alice:test:8448"), {"presence": "offline"})
        ok = self.put_status(self.alice, "@alice:test:8448", {"presence": "online", "status_msg": "x" * 512})
        self.assertEqual(ok.code, 200)

    def test_requires_auth(self) -> None:
        channel = self.make_request("GET", f"{V3}/presence/@alice:test:8448/status")
        self.assertEqual(channel.code, 401)


class TransitionTests(PresenceTestCase):
    def test_sync_marks_online_then_offline_after_timeout(self) -> None:
        """A sync makes the user online; 30 s after it ends (none open) they are offline."""
        self.sync(self.alice)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "online")
        self.advance(25)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "online")
        self.advance(10)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "offline")

    def test_open_long_poll_keeps_user_online(self) -> None:
        """While a long poll is open the offline timer does not run."""
        self.sync(self.alice)
        since = self.sync(self.alice, set_presence="offline")["next_batch"]
        channel = self.sync_channel(self.alice, since=since, timeout=120_000, await_result=False)
        self.advance(55)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "online")
        self.advance(70)  # the poll returned (at most 120 s) with alice's own presence change
        self.assertTrue(channel.is_finished())
        self.advance(40)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "offline")

    def test_idle_while_syncing_becomes_unavailable(self) -> None:
        """Syncing without activity: online, not currently active after a minute, unavailable after
        the idle timeout; sending a message brings the user back online."""
        room_id = self.create_room()
        for _ in range(11):  # a sync every 25 s for 275 s
            self.sync(self.alice)
            self.advance(25)
        body = self.presence_of("@alice:test:8448")
        self.assertEqual((body["presence"], body["currently_active"]), ("online", False))
        self.sync(self.alice)
        self.advance(28)  # idle timeout passed (300 s since createRoom); offline timer (30 s) not yet
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "unavailable")
        self.sync(self.alice)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "unavailable")
        self.say(room_id, self.alice)
        body = self.presence_of("@alice:test:8448")
        self.assertEqual((body["presence"], body["currently_active"], body["last_active_ago"]), ("online", True, 0))

    def test_set_presence_parameter(self) -> None:
        """set_presence=unavailable marks idle; set_presence=offline does not mark online."""
        self.sync(self.bob, set_presence="offline")
        self.assertEqual(self.presence_of("@bob:test:8448", self.bob), {"presence": "offline"})
        self.sync(self.alice, set_presence="unavailable")
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "unavailable")
        channel = self.sync_channel(self.alice, set_presence="away")
        self.assertEqual(channel.code, 400)

    @override_config({"presence": {"idle_timeout_s": 60, "offline_timeout_s": 10}})
    def test_configured_timeouts(self) -> None:
        self.sync(self.alice)
        self.advance(15)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "offline")
        self.put_status(self.alice, "@alice:test:8448", {"presence": "online"})
        self.sync(self.alice, timeout=0)
        for _ in range(7):
            self.sync(self.alice)
            self.advance(9)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "unavailable")

    def test_message_send_keeps_sender_online(self) -> None:
        """Audit CHAT-4: a user who sends is online at once, even with no sync open, and stays online
        for the offline timeout after their last message."""
        room_id = self.create_room()
        self.advance(20)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "online")  # createRoom is activity
        self.advance(15)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "offline")
        self.say(room_id, self.alice)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "online")
        self.advance(20)
        self.say(room_id, self.alice)
        self.advance(20)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "online")
        self.advance(15)
        self.assertEqual(self.presence_of("@alice:test:8448")["presence"], "offline")

    def timers(self) -> int:
        """Pending delayed calls, except the test connections' idle timeouts."""
        return sum(1 for c in self.reactor.getDelayedCalls() if "HTTPChannel" not in repr(c.func))

    def test_one_sweep_timer_for_many_users(self) -> None:
        """Timers are batched: more online users add no delayed calls."""
        tokens = []
        for name in ("u1", "u2", "u3", "u4", "u5"):
            self.register_user(name)
            tokens.append(self.login(name)["access_token"])
        self.sync(self.alice)
        baseline = self.timers()
        for token in tokens:
            self.sync(token)
        self.assertEqual(self.timers(), baseline)
        self.assertEqual(self.hs.features.get(PresenceService).online_count(), 6)


class SyncDeliveryTests(PresenceTestCase):
    def test_initial_sync_has_self_and_room_mates_only(self) -> None:
        self.shared_room()
        self.sync(self.bob)
        self.sync(self.carol)
        events = _presence_events(self.sync(self.alice))
        self.assertEqual(set(events), {"@alice:test:8448", "@bob:test:8448"})
        self.assertEqual(events["@bob:test:8448"]["presence"], "online")
        self.assertIn("last_active_ago", events["@bob:test:8448"])

    def test_incremental_sync_sends_only_changes_to_room_mates(self) -> None:
        self.shared_room()
        bob_since = self.sync(self.bob)["next_batch"]
        carol_since = self.sync(self.carol)["next_batch"]
        bob_body = self.sync(self.bob, since=bob_since)
        self.assertEqual(_presence_events(bob_body), {})
        self.put_status(self.alice, "@alice:test:8448", {"presence": "online", "status_msg": "here"})
        body = self.sync(self.bob, since=bob_body["next_batch"])
        events = _presence_events(body)
        self.assertEqual(list(events), ["@alice:test:8448"])
        self.assertEqual(events["@alice:test:8448"]["status_msg"], "here")
        self.assertEqual(_presence_events(self.sync(self.bob, since=body["next_batch"])), {})
        self.assertNotIn("@alice:test:8448", _presence_events(self.sync(self.carol, since=carol_since)))

    def test_change_wakes_room_mates_long_poll_only(self) -> None:
        self.shared_room()
        bob_since = self.sync(self.bob, set_presence="offline")["next_batch"]
        carol_since = self.sync(self.carol, set_presence="offline")["next_batch"]
        bob_poll = self.sync_channel(self.bob, since=bob_since, timeout=30_000, await_result=False, set_presence="offline")
        carol_poll = self.sync_channel(
            self.carol, since=carol_since, timeout=30_000, await_result=False, set_presence="offline"
        )
        self.pump(1)
        self.assertFalse(bob_poll.is_finished())
        self.put_status(self.alice, "@alice:test:8448", {"presence": "unavailable"})
        self.pump(0.1)
        self.assertTrue(bob_poll.is_finished())
        self.assertEqual(_presence_events(bob_poll.json_body)["@alice:test:8448"]["presence"], "unavailable")
        self.assertFalse(carol_poll.is_finished())
        self.pump(30)
        self.assertEqual(_presence_events(carol_poll.json_body), {})

    def test_join_and_leave_change_the_audience(self) -> None:
        """A newcomer gets the members' presence and the members get theirs; after leaving, no more."""
        room_id = self.create_room(preset="public_chat")
        self.put_status(self.alice, "@alice:test:8448", {"presence": "online", "status_msg": "a"})
        bob_since = self.sync(self.bob)["next_batch"]
        alice_since = self.sync(self.alice)["next_batch"]
        self.join(room_id, self.bob)
        bob_body = self.sync(self.bob, since=bob_since)
        self.assertEqual(_presence_events(bob_body)["@alice:test:8448"]["status_msg"], "a")
        alice_body = self.sync(self.alice, since=alice_since)
        self.assertIn("@bob:test:8448", _presence_events(alice_body))
        self.post(room_id, "leave", self.bob)
        bob_since = self.sync(self.bob)["next_batch"]
        self.put_status(self.alice, "@alice:test:8448", {"presence": "online", "status_msg": "b"})
        self.assertNotIn("@alice:test:8448", _presence_events(self.sync(self.bob, since=bob_since)))
        self.assertEqual(self.status(self.bob, "@alice:test:8448").code, 403)

    def test_presence_filter(self) -> None:
        self.shared_room()
        self.sync(self.bob)
        body = self.sync(self.alice, filter={"presence": {"not_senders": ["@bob:test:8448"]}})
        self.assertEqual(set(_presence_events(body)), {"@alice:test:8448"})
        body = self.sync(self.alice, filter={"presence": {"types": ["m.nothing"]}})
        self.assertEqual(_presence_events(body), {})


class PersistenceTests(PresenceTestCase):
    def test_state_survives_restart_and_positions_continue(self) -> None:
        """Changes are stored by the sweep (not per sync); a new service resumes from them."""
        service: PresenceService = self.hs.features.get(PresenceService)
        self.put_status(self.alice, "@alice:test:8448", {"presence": "unavailable", "status_msg": "away"})
        store = PresenceStore(self.hs.pool)
        self.assertIsNone(self.get_success(store.get_presence("@alice:test:8448")))  # not written per request
        self.advance(SWEEP_INTERVAL_S)
        stored = self.get_success(store.get_presence("@alice:test:8448"))
        assert stored is not None
        self.assertEqual((stored.state, stored.status_msg, stored.stream_id), ("unavailable", "away", service.position))
        stored_position = service.position
        restarted = PresenceService(
            "test:8448", self.hs.clock, store, JoinedRoomsCache(service.memberships.get), self.hs.rooms.notifier,
            Timeouts(300_000, 30_000),
        )
        self.get_success(restarted.start(run_sweeps=False))
        self.assertEqual(restarted.position, service.position)
        self.assertEqual(restarted.get_presence("@alice:test:8448")["status_msg"], "away")
        # A token from before the restart is older than any log: the states are scanned instead.
        events = self.get_success(restarted.get_changes("@alice:test:8448", set(), 0, restarted.position))
        self.assertEqual([e["sender"] for e in events], ["@alice:test:8448"])
        # Back online users go offline after the offline timeout unless they sync again.
        self.pump(31)
        self.get_success(restarted.sweep())
        self.assertEqual(restarted.get_presence("@alice:test:8448")["presence"], "offline")
        self.assertEqual(restarted.position, stored_position + 1)


class DisabledTests(PresenceTestCase):
    @override_config({"presence": {"enabled": False}})
    def test_disabled_tracks_nothing(self) -> None:
        """enabled: false: no presence in sync, GET answers offline, PUT is accepted, checks remain."""
        self.assertIsNone(self.hs.features.find(PresenceService))
        self.shared_room()
        self.assertEqual(self.put_status(self.alice, "@alice:test:8448", {"presence": "online"}).code, 200)
        self.sync(self.bob)
        self.assertEqual(_presence_events(self.sync(self.alice)), {})
        self.assertEqual(self.presence_of("@bob:test:8448"), {"presence": "offline"})
        self.assertEqual(self.status(self.carol, "@alice:test:8448").code, 403)
        self.assertEqual(self.status(self.alice, "@nobody:test:8448").code, 404)
        self.assertEqual(self.put_status(self.alice, "@alice:test:8448", {"presence": "busy"}).code, 400)
        self.assertEqual(self.put_status(self.alice, "@bob:test:8448", {"presence": "online"}).code, 403)
