"""A received PDU whose auth events we lack: they are fetched from the origin (``/event_auth``, else
``/event``), checked (signatures, hashes, auth rules against their own auth events) and stored as
outliers before the PDU's step 4 (issue 13, ADR 0014). Remotes are faked (``FakeRemote``)."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

from federation.fetching import MAX_AUTH_CHAIN
from federation.interfaces import RemoteHttpError
from sc_proto.crypto.keys import get_key_id
from sc_proto.errors import MatrixError
from sc_proto.events.model import Event
from tests.federation.test_inbound import InboundTestCase
from tests.homeserver.test_room_input import REMOTE, RITA

P = "/_matrix/federation/v1"


class MissingAuthEventsTests(InboundTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.room_path = quote(self.room_id, safe="")

    def unseen_join_and_message(self) -> tuple[Event, Event]:
        """rita's join (never sent to us) and her message, whose auth and prev events include it."""
        join = self.remote_event("m.room.member", {"membership": "join"}, state_key=RITA)
        state = {**self.head().state, ("m.room.member", RITA): join.event_id}
        msg = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "hi"}, prevs=[join.event_id], state=state)
        self.assertIn(join.event_id, msg.auth_event_ids)
        return join, msg

    def pdu_of(self, event_id: str) -> dict[str, Any]:
        event = self.get_success(self.input.get_pdu(event_id))
        return dict(event.pdu)

    def event_auth_answers(self, msg: Event, chain: list[Any]) -> None:
        path = f"{P}/event_auth/{self.room_path}/{quote(msg.event_id, safe='')}"
        self.remote.handlers[("GET", path)] = lambda d, a, c: {"auth_chain": chain}

    def paths(self) -> list[str]:
        return [c[2] for c in self.remote.calls]

    def test_missing_auth_event_is_fetched_and_stored_as_outlier(self) -> None:
        """/event_auth gives the chain (with garbage among it, ignored); the join is checked and stored
        as an outlier; the message passes step 4 (an outlier too: its prev event has no state)."""
        join, msg = self.unseen_join_and_message()
        create = self.pdu_of(self.head().state[("m.room.create", "")])
        self.event_auth_answers(msg, ["garbage", 5, {"type": 1}, create, dict(join.pdu)])
        self.assertEqual(self.send_txn([dict(msg.pdu)]), {msg.event_id: {}})
        self.assertIn(f"{P}/event_auth/{self.room_path}/{quote(msg.event_id, safe='')}", self.paths())
        stored_join, stored_msg = self.stored(join.event_id), self.stored(msg.event_id)
        self.assertTrue(stored_join.outlier)
        self.assertIsNone(stored_join.rejected_reason)
        self.assertIsNone(stored_msg.rejected_reason)
        self.assertTrue(stored_msg.outlier)
        self.assertNotIn(msg.event_id, self.message_ids())

    def test_without_an_answer_the_pdu_is_rejected(self) -> None:
        """Nothing to fetch (every request 404): rejected for missing auth events, nothing else stored."""
        join, msg = self.unseen_join_and_message()
        result = self.send_txn([dict(msg.pdu)])
        self.assertIn("missing auth events", result[msg.event_id]["error"])
        self.assertIsNone(self.stored(join.event_id))
        self.assertIn(f"{P}/event/{quote(join.event_id, safe='')}", self.paths())

    def test_falls_back_to_event_by_id(self) -> None:
        """/event_auth fails (500): each missing auth event is asked for alone with /event."""
        join, msg = self.unseen_join_and_message()

        def boom(d: str, a: Any, c: Any) -> Any:
            raise RemoteHttpError(d, 500, {})

        self.remote.handlers[("GET", f"{P}/event_auth/{self.room_path}/{quote(msg.event_id, safe='')}")] = boom
        self.remote.handlers[("GET", f"{P}/event/{quote(join.event_id, safe='')}")] = (
            lambda d, a, c: {"origin": REMOTE, "origin_server_ts": 1, "pdus": [dict(join.pdu)]}
        )
        self.assertEqual(self.send_txn([dict(msg.pdu)]), {msg.event_id: {}})
        self.assertTrue(self.stored(join.event_id).outlier)
        self.assertIsNone(self.stored(msg.event_id).rejected_reason)

    def test_forged_auth_event_is_not_stored(self) -> None:
        """An auth event with a bad signature is dropped by the fetcher: the PDU is rejected."""
        join, msg = self.unseen_join_and_message()
        forged = copy.deepcopy(dict(join.pdu))
        forged["signatures"] = {REMOTE: {get_key_id(self.remote_key): "A" * 86}}
        self.event_auth_answers(msg, [forged])
        self.assertIn("missing auth events", self.send_txn([dict(msg.pdu)])[msg.event_id]["error"])
        self.assertIsNone(self.stored(join.event_id))

    def test_auth_event_refused_by_the_rules_is_not_stored(self) -> None:
        """rita (power 0) changing the power levels fails its own auth events: not stored, and the
        message that names it is rejected."""
        self.joined()
        pl_id = self.head().state[("m.room.power_levels", "")]
        content = dict(self.get_success(self.input.get_pdu(pl_id)).content)
        content["users"] = {**content.get("users", {}), RITA: 100}
        power = self.remote_event("m.room.power_levels", content, state_key="")
        state = {**self.head().state, ("m.room.power_levels", ""): power.event_id}
        msg = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "x"}, prevs=[power.event_id], state=state)
        self.event_auth_answers(msg, [dict(power.pdu)])
        self.assertIn("missing auth events", self.send_txn([dict(msg.pdu)], txn_id="t2")[msg.event_id]["error"])
        self.assertIsNone(self.stored(power.event_id))

    def test_chain_from_another_room_is_ignored(self) -> None:
        """The origin answers with events of another room: dropped, the PDU is rejected."""
        join, msg = self.unseen_join_and_message()
        elsewhere = dict(join.pdu, room_id="!other:remote:8448")
        self.event_auth_answers(msg, [elsewhere])
        self.assertIn("missing auth events", self.send_txn([dict(msg.pdu)])[msg.event_id]["error"])
        self.assertIsNone(self.stored(join.event_id))


class GetEventAuthTests(InboundTestCase):
    """``RemoteEventFetching.get_event_auth``: checked PDUs of the room, a bounded answer."""

    def test_checks_and_bounds(self) -> None:
        fetcher = self.inbound.fetcher
        self.joined()
        good = self.message("good")
        forged = copy.deepcopy(dict(self.message("bad").pdu))
        forged["signatures"] = {REMOTE: {get_key_id(self.remote_key): "A" * 86}}
        path = f"{P}/event_auth/{quote(self.room_id, safe='')}/{quote('$e', safe='')}"
        self.remote.handlers[("GET", path)] = lambda d, a, c: {"auth_chain": [dict(good.pdu), forged, "x"]}
        self.assertEqual(self.get_success(fetcher.get_event_auth(REMOTE, self.room_id, "$e")), [dict(good.pdu)])
        for body in ({"auth_chain": {}}, {}, {"auth_chain": [{}] * (MAX_AUTH_CHAIN + 1)}):
            self.remote.handlers[("GET", path)] = lambda d, a, c, body=body: body
            failure = self.get_failure(fetcher.get_event_auth(REMOTE, self.room_id, "$e"), MatrixError)
            self.assertEqual(failure.value.http_status, 502, body.keys())
        del self.remote.handlers[("GET", path)]
        failure = self.get_failure(fetcher.get_event_auth(REMOTE, self.room_id, "$e"), MatrixError)
        self.assertEqual(failure.value.http_status, 404)
