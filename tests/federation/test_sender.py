"""The federation sender over the real core (issue 13, docs/federation-sending.md).

A room of ``test:8448`` gets members of two other servers (``remote:8448`` through received PDUs,
``other:8448`` likewise); alice's messages must reach both servers through a
:class:`~tests.federation.fakes.FakeFederationHttp`. The database is the test case's (SQLite, or
PostgreSQL with ``SC_TEST_POSTGRES``), so restarts build a new sender over the same tables.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from federation.sender.backoff import BackoffPolicy
from federation.sender.queue import QueueSettings
from federation.sender.service import FederationSenderService, SenderSettings
from homeserver.api.services import OutboundEventsAPI, PDUStatus
from tests.federation.fakes import FakeFederationHttp
from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_room_input import REMOTE, RITA, RoomInputTestCase
from tests.homeserver.test_rooms_core import V3

OTHER = "other:8448"
OLGA = f"@olga:{OTHER}"
POLICY = BackoffPolicy(initial_ms=5_000, multiplier=2.0, max_ms=40_000, jitter=0.2)


def _settings(**queue: Any) -> SenderSettings:
    return SenderSettings(queue=QueueSettings(backoff=POLICY, **queue))


class SenderTestCase(RoomInputTestCase):
    settings = _settings()

    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.http = FakeFederationHttp()
        self.sender = self.start_sender(self.http)
        self.join_rita()
        olga = self.remote_event("m.room.member", {"membership": "join"}, state_key=OLGA, sender=OLGA)
        self.assertEqual(self.receive(olga).status, PDUStatus.ACCEPTED)

    def start_sender(self, http: FakeFederationHttp, settings: SenderSettings | None = None) -> FederationSenderService:
        """A sender over the homeserver's database, wired as the core's port (as after a restart)."""
        sender = FederationSenderService(TEST_SERVER_NAME, self.clock, http, settings or self.settings, rand=lambda: 0.5)
        self.hs.ports = dataclasses.replace(self.hs.ports, sender=sender)
        events = self.hs.api.outbound_events
        assert events is not None
        self.get_success(sender.start(self.hs.pool, events))
        return sender

    def say(self, n: int, room_id: str | None = None, prefix: str = "m") -> list[str]:
        """Alice sends ``n`` messages; their event IDs in order."""
        ids = []
        for i in range(n):
            channel = self.send(room_id or self.room_id, {"msgtype": "m.text", "body": f"{prefix}{i}"}, self.alice, txn=f"{prefix}{i}")
            self.assertEqual(channel.code, 200, channel.json_body)
            ids.append(channel.json_body["event_id"])
        return ids

    def second_room(self) -> str:
        """Another room of alice's where rita is joined too."""
        room_id = self.room_id
        self.room_id = self.create_room(preset="public_chat")
        self.join_rita()
        second, self.room_id = self.room_id, room_id
        return second


class FanOutTests(SenderTestCase):
    def test_events_reach_each_joined_server_once_in_order(self) -> None:
        """Every message reaches remote:8448 and other:8448 exactly once, in order; never ourselves."""
        ids = self.say(5)
        self.assertEqual(self.http.pdus_to(REMOTE), ids)
        self.assertEqual(self.http.pdus_to(OTHER), ids)
        self.assertNotIn(TEST_SERVER_NAME, {t.destination for t in self.http.sent})
        for txn in self.http.sent:
            self.assertEqual(txn.body["origin"], TEST_SERVER_NAME)
            self.assertIsInstance(txn.body["origin_server_ts"], int)

    def test_remote_events_are_not_sent(self) -> None:
        """A PDU another server sent us is never forwarded (each server sends its own)."""
        msg = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "from rita"})
        self.assertEqual(self.receive(msg).status, PDUStatus.ACCEPTED)
        self.assertNotIn(msg.event_id, self.http.pdus_to(OTHER) + self.http.pdus_to(REMOTE))

    def test_backlog_is_batched_at_most_50(self) -> None:
        """120 messages queued behind a busy transaction leave in transactions of at most 50 PDUs."""
        self.http.behaviour[REMOTE] = "hang"
        first = self.say(1, prefix="first")
        ids = self.say(120)
        self.assertEqual(self.http.hanging(REMOTE), 1)
        self.http.release(REMOTE)
        sizes = [len(t.body["pdus"]) for t in self.http.sent_to(REMOTE)]
        self.assertEqual(sizes, [1, 50, 50, 20])
        self.assertEqual(self.http.pdus_to(REMOTE), first + ids)

    def test_transaction_ids_are_unique_per_destination(self) -> None:
        """No transaction id repeats for a destination, across a restart too."""
        self.say(3)
        self.reactor.advance(1)
        self.sender.stop()
        self.start_sender(self.http)
        self.say(3, prefix="after")
        ids = [t.txn_id for t in self.http.sent_to(REMOTE)]
        self.assertEqual(len(ids), 6)
        self.assertEqual(len(set(ids)), 6)

    def test_kicked_users_server_gets_the_kick(self) -> None:
        """A kick reaches the kicked user's server although no member of it is joined afterwards."""
        channel = self.make_request(
            "POST", f"{V3}/rooms/{self.room_id}/kick", {"user_id": RITA}, access_token=self.alice
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        kick_id = self.http.pdus_to(REMOTE)[-1]
        stored = self.get_success(self.hs.rooms.events.get_event(kick_id))
        assert stored is not None
        self.assertEqual((stored.event.type, stored.event.state_key), ("m.room.member", RITA))
        ids = self.say(1)
        self.assertNotIn(ids[0], self.http.pdus_to(REMOTE))
        self.assertIn(ids[0], self.http.pdus_to(OTHER))

    def test_per_pdu_errors_are_not_retried(self) -> None:
        """A PDU the receiver refuses in its answer is logged and not sent again."""
        self.http.responses[REMOTE] = {"pdus": {"$x": {"error": "bad"}}}
        ids = self.say(1)
        self.say(1, prefix="next")
        self.assertEqual(self.http.pdus_to(REMOTE).count(ids[0]), 1)

    def test_refused_transaction_is_dropped_not_retried(self) -> None:
        """A 400 for the whole transaction is not retried (it would fail again), nor backed off."""
        self.http.behaviour[REMOTE] = "status"
        self.http.status[REMOTE] = 400
        self.say(1)
        self.assertEqual(len(self.http.attempts), 2)  # one per destination
        self.reactor.advance(3600)
        self.assertEqual(len(self.http.attempts), 2)
        queue = self.sender.queue_for(REMOTE)
        assert queue is not None
        self.assertFalse(queue.retry.backing_off)


class EduTests(SenderTestCase):
    def test_edus_batched_at_most_100(self) -> None:
        """250 typing EDUs queued behind a busy transaction leave at most 100 per transaction, all of them."""
        self.http.behaviour[REMOTE] = "hang"
        self.get_success(self.sender.send_edu([REMOTE], "m.typing", {"n": -1}))
        for i in range(250):
            self.get_success(self.sender.send_edu([REMOTE], "m.typing", {"n": i}))
        self.http.release(REMOTE)
        sent = self.http.sent_to(REMOTE)
        self.assertTrue(all(len(t.edus) <= 100 for t in sent))
        self.assertEqual([e["content"]["n"] for e in self.http.edus_to(REMOTE)], list(range(-1, 250)))
        self.assertTrue(all(e["edu_type"] == "m.typing" for e in self.http.edus_to(REMOTE)))

    def test_persistent_and_ephemeral_share_transactions(self) -> None:
        """150 to-device EDUs and 150 typing EDUs all arrive, at most 100 EDUs per transaction."""
        self.http.behaviour[REMOTE] = "hang"
        self.get_success(self.sender.send_edu([REMOTE], "m.typing", {"first": True}))
        for i in range(150):
            self.get_success(self.sender.send_edu([REMOTE], "m.direct_to_device", {"message_id": f"d{i}"}))
            self.get_success(self.sender.send_edu([REMOTE], "m.typing", {"n": i}))
        self.http.release(REMOTE)
        edus = self.http.edus_to(REMOTE)
        self.assertTrue(all(len(t.edus) <= 100 for t in self.http.sent_to(REMOTE)))
        to_device = [e["content"]["message_id"] for e in edus if e["edu_type"] == "m.direct_to_device"]
        self.assertEqual(to_device, [f"d{i}" for i in range(150)])
        self.assertEqual(len([e for e in edus if e["edu_type"] == "m.typing"]), 151)

    def test_own_server_and_bad_names_are_never_targeted(self) -> None:
        """An EDU for ourselves or for a malformed server name is dropped."""
        self.get_success(self.sender.send_edu([TEST_SERVER_NAME, "bad name!", ""], "m.direct_to_device", {"a": 1}))
        self.get_success(self.sender.send_edu([TEST_SERVER_NAME], "m.typing", {"a": 1}))
        self.assertEqual(self.http.attempts, [])


class RestartTests(SenderTestCase):
    def test_restart_loses_nothing(self) -> None:
        """Queued PDUs and to-device EDUs of a sender that stops survive into a new sender over the same database."""
        self.http.behaviour[REMOTE] = "fail"
        second = self.second_room()
        ids = self.say(3)
        ids2 = self.say(2, room_id=second, prefix="b")
        for i in range(3):
            self.get_success(self.sender.send_edu([REMOTE], "m.direct_to_device", {"message_id": f"d{i}"}))
        self.get_success(self.sender.send_edu([REMOTE], "m.typing", {"lost": "ok"}))
        self.assertEqual(self.http.pdus_to(REMOTE), [])
        self.sender.stop()

        http = FakeFederationHttp()
        self.start_sender(http)
        self.assertEqual(http.sent_to(REMOTE), [])  # the persisted backoff still holds
        self.reactor.advance(POLICY.initial_ms / 1000 * 1.01)
        # Catch-up: the newest event of each room (the remote fetches the rest via prev_events).
        self.assertEqual(sorted(http.pdus_to(REMOTE)), sorted([ids[-1], ids2[-1]]))
        to_device = [e["content"]["message_id"] for e in http.edus_to(REMOTE) if e["edu_type"] == "m.direct_to_device"]
        self.assertEqual(to_device, ["d0", "d1", "d2"])
        # Nothing is sent twice to the healthy server, and new events flow normally.
        self.assertEqual(http.pdus_to(OTHER), [])
        more = self.say(1, prefix="new")
        self.assertEqual(http.pdus_to(REMOTE)[-1], more[0])
        self.assertEqual(http.pdus_to(OTHER), more)

    def test_restart_after_delivery_sends_nothing_again(self) -> None:
        """A sender restarted after everything was acknowledged resends nothing."""
        self.say(2)
        self.get_success(self.sender.send_edu([REMOTE], "m.direct_to_device", {"message_id": "x"}))
        self.sender.stop()
        http = FakeFederationHttp()
        self.start_sender(http)
        self.assertEqual(http.sent, [])

    def test_position_resumes_after_downtime(self) -> None:
        """Events persisted while no sender ran are fanned out by the next one."""
        self.sender.stop()
        self.hs.ports = dataclasses.replace(self.hs.ports, sender=_Silent())
        ids = self.say(2)
        http = FakeFederationHttp()
        self.start_sender(http)
        self.assertEqual(http.pdus_to(OTHER), ids)


async def _async(value: Any) -> Any:
    return value


class _Silent:
    """A sender that hears nothing (the process was down)."""

    def notify_new_events(self, position: int) -> None:
        pass

    async def send_edu(self, destinations: Any, edu_type: str, content: Any) -> None:
        pass


class BackoffTests(SenderTestCase):
    settings = _settings(max_pending_pdus=10)

    def intervals(self, destination: str) -> int:
        queue = self.sender.queue_for(destination)
        assert queue is not None
        return queue.retry.retry_interval_ms

    def test_backoff_grows_to_the_cap_and_is_persisted(self) -> None:
        """Each failed retry doubles the wait up to the cap; the row in the database follows."""
        self.http.behaviour[REMOTE] = "fail"
        self.say(1)
        seen = [self.intervals(REMOTE)]
        for _ in range(5):
            attempts = len(self.http.attempts)
            self.reactor.advance(seen[-1] / 1000.0 - 0.01)
            self.assertEqual(len(self.http.attempts), attempts)  # not before the wait is over
            self.reactor.advance(0.02)
            self.assertEqual(len(self.http.attempts), attempts + 1)
            seen.append(self.intervals(REMOTE))
        self.assertEqual(seen, [5_000, 10_000, 20_000, 40_000, 40_000, 40_000])
        store_row = self.get_success(self.sender_store().get_destination(REMOTE))
        self.assertEqual(store_row.retry.retry_interval_ms, 40_000)

    def sender_store(self) -> Any:
        from federation.sender.store import SenderStore

        return SenderStore(self.hs.pool)

    def test_restart_keeps_waiting(self) -> None:
        """A new sender does not retry a failing destination before its persisted wait ends."""
        self.http.behaviour[REMOTE] = "fail"
        self.say(1)
        self.sender.stop()
        http = FakeFederationHttp()
        self.start_sender(http)
        self.assertEqual(http.sent_to(REMOTE), [])
        self.reactor.advance(5.1)
        self.assertEqual(len(http.sent_to(REMOTE)), 1)

    def test_down_then_back_catches_up_with_latest_events_only(self) -> None:
        """A destination down while 30 messages pass in two rooms gets the newest of each room, not the backlog."""
        self.http.behaviour[REMOTE] = "fail"
        second = self.second_room()
        ids = self.say(20)
        ids2 = self.say(10, room_id=second, prefix="b")
        queue = self.sender.queue_for(REMOTE)
        assert queue is not None
        self.assertTrue(queue.catching_up)
        self.assertEqual(queue.pending_pdus(), 0)
        self.http.behaviour[REMOTE] = "ok"
        self.reactor.advance(60)
        self.assertEqual(sorted(self.http.pdus_to(REMOTE)), sorted([ids[-1], ids2[-1]]))
        self.assertFalse(queue.catching_up)
        self.assertFalse(queue.retry.backing_off)
        # Live again: the next message goes out by itself.
        more = self.say(1, prefix="c")
        self.assertEqual(self.http.pdus_to(REMOTE)[-1], more[0])
        # The healthy server got everything, in order.
        self.assertEqual([e for e in self.http.pdus_to(OTHER) if e in ids], ids)

    def test_purged_catchup_events_do_not_block_the_queue(self) -> None:
        """Catch-up rows whose events are gone are skipped, and the queue goes live again."""
        self.http.behaviour[REMOTE] = "fail"
        self.say(12)
        events: Any = self.hs.api.outbound_events
        real = events.get_pdus
        events.get_pdus = lambda orderings: _async([])
        self.http.behaviour[REMOTE] = "ok"
        self.reactor.advance(60)
        queue = self.sender.queue_for(REMOTE)
        assert queue is not None
        self.assertFalse(queue.catching_up)
        events.get_pdus = real
        more = self.say(1, prefix="after")
        self.assertEqual(self.http.pdus_to(REMOTE), more)

    def test_short_outage_resends_the_queue(self) -> None:
        """Below the queue bound, a destination that comes back gets every missed event in order."""
        self.http.behaviour[REMOTE] = "fail"
        ids = self.say(4)
        self.http.behaviour[REMOTE] = "ok"
        self.reactor.advance(6)
        self.assertEqual(self.http.pdus_to(REMOTE), ids)

    def test_hanging_destination_does_not_delay_another(self) -> None:
        """While remote:8448 never answers, other:8448 gets every message at once."""
        self.http.behaviour[REMOTE] = "hang"
        ids = self.say(3)
        self.assertEqual(self.http.pdus_to(OTHER), ids)
        self.assertEqual(self.http.hanging(REMOTE), 1)
        self.http.release(REMOTE, "fail")
        self.assertTrue(self.intervals(REMOTE) > 0)
        self.assertEqual(self.intervals(OTHER), 0)


class ReaderTests(SenderTestCase):
    def test_reader_stops_at_the_stream_position(self) -> None:
        """The core's reader never returns rows past the events stream's safe position."""
        events: OutboundEventsAPI | None = self.hs.api.outbound_events
        assert events is not None
        ids = self.say(2)
        current = events.current_position()
        page = self.get_success(events.get_outbound_events(current - 2, 100))
        self.assertEqual(page.upto, current)
        self.assertEqual([e.event_id for e in page.events], ids)
        self.assertEqual(page.events[0].destinations, frozenset({TEST_SERVER_NAME, REMOTE, OTHER}))
        self.assertNotIn("unsigned", page.events[0].pdu.get("unsigned", {}) or {})
        paged = self.get_success(events.get_outbound_events(current - 2, 1))
        self.assertEqual((paged.upto, [e.event_id for e in paged.events]), (current - 1, ids[:1]))
        empty = self.get_success(events.get_outbound_events(current, 100))
        self.assertEqual((empty.upto, empty.events), (current, []))
