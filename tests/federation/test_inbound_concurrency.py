"""Concurrency of /send (issue 13, ADR 0014), made deterministic by holding one room's PDUs at a gate:
rooms do not block each other, a room's PDUs keep their order, and a retry of a transaction still
in flight waits for its answer instead of processing it again."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from federation.edus import EDURegistry
from federation.inbound import SEND_PATH, InboundTransactions
from federation.interfaces import FederationRequest
from federation.transaction_store import InboundTransactionStore
from homeserver.api.services import PDUOutcome
from homeserver.identity import LocalServer
from sc_proto.events.model import Event
from tests.federation.test_inbound import InboundTestCase
from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_room_input import REMOTE, RITA


class HeldRoomEvents:
    """A RoomEventsAPI that holds every PDU of ``held_room`` until ``gate`` fires; records the order."""

    def __init__(self, inner: Any, held_room: str) -> None:
        self.inner = inner
        self.held_room = held_room
        self.gate: Deferred[None] = Deferred()
        self.log: list[tuple[str, str]] = []

    async def receive_pdu(self, origin: str, event: Event, *, outlier: bool = False) -> PDUOutcome:
        self.log.append(("start", event.event_id))
        if event.room_id == self.held_room and not self.gate.called:
            await self.gate
        outcome: PDUOutcome = await self.inner.receive_pdu(origin, event, outlier=outlier)
        self.log.append(("done", event.event_id))
        return outcome

    async def get_pdu(self, event_id: str) -> Event | None:
        return await self.inner.get_pdu(event_id)  # type: ignore[no-any-return]

    async def get_state_ids_at(self, room_id: str, event_id: str) -> list[str] | None:
        return await self.inner.get_state_ids_at(room_id, event_id)  # type: ignore[no-any-return]


class ConcurrencyTests(InboundTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.room_a = self.room_id
        self.joined()
        self.room_b = self.create_room(preset="public_chat")
        self.room_id = self.room_b
        self.joined_b = self.remote_event("m.room.member", {"membership": "join"}, state_key=RITA)
        self.send_txn([dict(self.joined_b.pdu)], txn_id="jb")
        self.held = HeldRoomEvents(self.input, self.room_a)
        self.txns = InboundTransactions(
            LocalServer(TEST_SERVER_NAME), self.held, self.hs.rooms.history, self.inbound.checker,
            InboundTransactionStore(self.hs.pool), EDURegistry(), self.hs.clock.time_msec,
        )

    def message_in(self, room_id: str, body: str, **kw: Any) -> Event:
        self.room_id = room_id
        return self.message(body, **kw)

    def start(self, pdus: list[Any], txn_id: str = "c1") -> Deferred[Any]:
        body = {"origin": REMOTE, "origin_server_ts": 1, "pdus": pdus}
        d = ensureDeferred(self.txns.on_send(FederationRequest(REMOTE, "PUT", {"txnId": txn_id}, {}, body)))
        self.pump()
        return d

    def test_rooms_do_not_block_each_other_and_keep_their_order(self) -> None:
        """Room A's first PDU is held: room B's PDU completes meanwhile, and A's second PDU does not
        start before A's first is done."""
        a1 = self.message_in(self.room_a, "a1")
        a2 = self.message_in(self.room_a, "a2", prevs=[a1.event_id])
        b1 = self.message_in(self.room_b, "b1")
        d = self.start([dict(a1.pdu), dict(a2.pdu), dict(b1.pdu)])
        self.assertIn(("done", b1.event_id), self.held.log)
        self.assertNotIn(("start", a2.event_id), self.held.log)
        self.assertFalse(d.called)
        self.held.gate.callback(None)
        self.pump()
        code, body = self.successResultOf(d)
        self.assertEqual(code, 200)
        self.assertEqual(body["pdus"], {a1.event_id: {}, a2.event_id: {}, b1.event_id: {}})
        log = self.held.log
        self.assertLess(log.index(("done", a1.event_id)), log.index(("start", a2.event_id)))

    def test_retry_while_in_flight_waits_for_the_first_answer(self) -> None:
        """The same transaction arriving while the first copy is still processed is not processed
        again: it waits, then gets the stored answer."""
        a1 = self.message_in(self.room_a, "a1")
        first = self.start([dict(a1.pdu)])
        retry = self.start([dict(a1.pdu)])
        self.assertFalse(first.called or retry.called)
        self.held.gate.callback(None)
        self.pump()
        self.assertEqual(self.successResultOf(first), self.successResultOf(retry))
        self.assertEqual(self.held.log.count(("start", a1.event_id)), 1)

    def test_send_path_is_registered(self) -> None:
        """register_inbound put the servlet on the router under the spec's path."""
        self.assertIn(("PUT", SEND_PATH), self.router.routes)
