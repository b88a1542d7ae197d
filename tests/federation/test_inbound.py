"""Inbound events over federation (issue 13, docs/adr/0014-federation-inbound.md): ``/send``.

A fake remote server ``remote:8448`` (signing key made with sc_proto, published through a fake
keyring) sends transactions through a fake router, exactly as the transport would call the servlet
after checking ``X-Matrix``. The real homeserver core (both database engines) receives the PDUs.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

from federation.inbound import SEND_PATH
from federation.inbound_wiring import InboundFederation, register_inbound
from homeserver.http.ratelimit import RateLimiter, RateLimitRule
from sc_proto.crypto.keys import generate_signing_key, get_key_id, get_verify_key
from sc_proto.crypto.signing import sign_event
from sc_proto.errors import MatrixError
from sc_proto.events.hashes import compute_event_id
from sc_proto.events.model import Event
from tests.federation.inbound_fakes import FakeKeyring, FakeRemote, FakeRouter
from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_room_input import ALICE, REMOTE, RITA, RoomInputTestCase
from tests.homeserver.test_rooms_core import V3

THIRD = "third:8448"


class InboundTestCase(RoomInputTestCase):
    """The core, a public room of alice's, and the inbound federation objects over fakes."""

    ratelimiter: RateLimiter | None = None

    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.third_key = generate_signing_key("t1")
        self.router = FakeRouter()
        self.keyring = FakeKeyring({
            (REMOTE, get_key_id(self.remote_key)): get_verify_key(self.remote_key),
            (THIRD, get_key_id(self.third_key)): get_verify_key(self.third_key),
        })
        self.remote = FakeRemote()
        self.inbound: InboundFederation = register_inbound(
            self.router, server_name=TEST_SERVER_NAME, pool=self.hs.pool, keys=self.keyring, http=self.remote,
            room_events=self.input, history=self.hs.rooms.history, time_msec=self.hs.clock.time_msec,
            ratelimiter=self.ratelimiter,
        )
        self.input.use_fetcher(self.inbound.fetcher)
        self.edus_seen: list[tuple[str, str, Any]] = []

    def txn(self, pdus: list[Any], *, txn_id: str = "t1", origin: str = REMOTE, body_origin: str | None = None,
            edus: list[Any] | None = None) -> Any:
        body: dict[str, Any] = {"origin": body_origin or origin, "origin_server_ts": 1, "pdus": pdus}
        if edus is not None:
            body["edus"] = edus
        return self.router.call("PUT", SEND_PATH, origin, {"txnId": txn_id}, content=body)

    def send_txn(self, pdus: list[Any], **kw: Any) -> dict[str, Any]:
        code, body = self.get_success(self.txn(pdus, **kw))
        self.assertEqual(code, 200)
        return body["pdus"]  # type: ignore[no-any-return]

    def stored(self, event_id: str) -> Any:
        return self.get_success(self.hs.rooms.events.get_event(event_id))

    def message(self, body: str = "hi", **kw: Any) -> Event:
        return self.remote_event("m.room.message", {"msgtype": "m.text", "body": body}, **kw)

    def joined(self) -> str:
        """rita joins through /send; returns the join's event ID."""
        join = self.remote_event("m.room.member", {"membership": "join"}, state_key=RITA)
        self.assertEqual(self.send_txn([dict(join.pdu)]), {join.event_id: {}})
        return join.event_id

    def set_state(self, etype: str, content: dict[str, Any]) -> None:
        channel = self.make_request("PUT", f"{V3}/rooms/{self.room_id}/state/{etype}/", content, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)


class SendAcceptTests(InboundTestCase):
    def test_valid_pdus_are_accepted_and_visible_locally(self) -> None:
        """A join and a message from the remote are accepted ({} each) and alice sees the message."""
        self.joined()
        msg = self.message()
        self.assertEqual(self.send_txn([dict(msg.pdu)], txn_id="t2"), {msg.event_id: {}})
        self.assertIn(msg.event_id, self.message_ids())
        self.assertIn(msg.event_id, self.sync_timeline_ids())
        self.assertTrue(any(k[0] == REMOTE for k in self.keyring.lookups))

    def test_keys_are_looked_up_at_the_event_time(self) -> None:
        """Rooms v5+: the key must be valid at origin_server_ts, so that is the time asked for."""
        self.joined()
        msg = self.message(ts=1_234_567)
        self.keyring.lookups.clear()
        self.send_txn([dict(msg.pdu)], txn_id="t2")
        self.assertEqual(self.keyring.lookups, [(REMOTE, get_key_id(self.remote_key), 1_234_567)])

    def test_room_pdus_are_processed_in_order(self) -> None:
        """Two dependent messages in one transaction are both accepted without fetching anything."""
        self.joined()
        first = self.message("one")
        second = self.message("two", prevs=[first.event_id])
        result = self.send_txn([dict(first.pdu), dict(second.pdu)], txn_id="t2")
        self.assertEqual(result, {first.event_id: {}, second.event_id: {}})
        self.assertEqual(self.remote.calls, [])
        self.assertEqual(self.db_extremities(), {second.event_id})

    def test_missing_prev_events_are_fetched_from_the_origin(self) -> None:
        """A PDU whose prev event we lack: /get_missing_events on the origin (fake remote), checked,
        then both accepted in order."""
        self.joined()
        first = self.message("one")
        second = self.message("two", prevs=[first.event_id])
        path = f"/_matrix/federation/v1/get_missing_events/{quote(self.room_id, safe='')}"
        self.remote.handlers[("POST", path)] = lambda dest, args, content: {"events": [dict(first.pdu)]}
        self.assertEqual(self.send_txn([dict(second.pdu)], txn_id="t2"), {second.event_id: {}})
        (call,) = self.remote.calls
        self.assertEqual((call[0], call[1], call[4]["latest_events"]), ("POST", REMOTE, [second.event_id]))
        self.assertIsNotNone(self.stored(first.event_id))
        self.assertEqual(self.db_extremities(), {second.event_id})
        ids = self.message_ids()
        self.assertLess(ids.index(second.event_id), ids.index(first.event_id))

    def test_forged_missing_events_are_dropped(self) -> None:
        """A fetched prev event with a bad signature is not stored; the PDU becomes an outlier."""
        self.joined()
        first = self.message("one")
        second = self.message("two", prevs=[first.event_id])
        forged = copy.deepcopy(dict(first.pdu))
        forged["signatures"] = {REMOTE: {get_key_id(self.remote_key): "A" * 86}}
        path = f"/_matrix/federation/v1/get_missing_events/{quote(self.room_id, safe='')}"
        self.remote.handlers[("POST", path)] = lambda dest, args, content: {"events": [forged]}
        self.assertEqual(self.send_txn([dict(second.pdu)], txn_id="t2"), {second.event_id: {}})
        self.assertIsNone(self.stored(first.event_id))
        self.assertTrue(self.stored(second.event_id).outlier)
        self.assertNotIn(second.event_id, self.message_ids())

    def test_hash_mismatch_is_stored_redacted(self) -> None:
        """Content changed after signing: the signature holds, the hash does not, so the redacted copy
        is stored (no body reaches clients)."""
        self.joined()
        tampered = copy.deepcopy(dict(self.message("original").pdu))
        tampered["content"]["body"] = "tampered"
        event_id = compute_event_id(tampered, self.head().version)
        self.assertEqual(self.send_txn([tampered], txn_id="t2"), {event_id: {}})
        stored = self.stored(event_id)
        self.assertEqual(dict(stored.event.content), {})

    def test_rejected_pdu_reports_an_error(self) -> None:
        """A message from a remote user who never joined is stored rejected and reported."""
        msg = self.message()
        result = self.send_txn([dict(msg.pdu)])
        self.assertIn("rejected", result[msg.event_id]["error"])
        self.assertIsNotNone(self.stored(msg.event_id).rejected_reason)

    def test_third_server_event_signed_by_it_is_accepted(self) -> None:
        """An event of a user on a third server, relayed by the origin, needs that server's signature."""
        tom = f"@tom:{THIRD}"
        join = self.remote_event("m.room.member", {"membership": "join"}, state_key=tom, sender=tom)
        resigned = sign_event(
            {k: v for k, v in join.pdu.items() if k != "signatures"}, self.head().version, THIRD, self.third_key,
            key_id=get_key_id(self.third_key),
        )
        self.assertIn("not signed by third", self.send_txn([dict(join.pdu)])[join.event_id]["error"])
        self.assertIsNone(self.stored(join.event_id))
        self.assertEqual(self.send_txn([resigned], txn_id="t2"), {join.event_id: {}})
        self.assertIsNotNone(self.stored(join.event_id))


class SendRefusalTests(InboundTestCase):
    def assert_nothing_changed(self, before: set[str]) -> None:
        self.assertEqual(self.db_extremities(), before)

    def test_bad_signature_is_refused(self) -> None:
        """A PDU signed with a key that is not the origin's is refused and not stored."""
        self.joined()
        before = self.db_extremities()
        other = generate_signing_key("r1")  # same key ID, different key
        msg = self.message()
        forged = sign_event({k: v for k, v in msg.pdu.items() if k != "signatures"}, msg.room_version, REMOTE, other,
                            key_id=get_key_id(self.remote_key))
        event_id = compute_event_id(forged, msg.room_version)
        result = self.send_txn([forged], txn_id="t2")
        self.assertIn("error", result[event_id])
        self.assertIsNone(self.stored(event_id))
        self.assert_nothing_changed(before)

    def test_unknown_key_is_refused(self) -> None:
        """A PDU signed by a key the keyring cannot find has no valid signature: refused."""
        self.joined()
        self.keyring.keys.clear()
        msg = self.message()
        self.assertIn("error", self.send_txn([dict(msg.pdu)], txn_id="t2")[msg.event_id])
        self.assertIsNone(self.stored(msg.event_id))

    def test_wrong_body_origin_is_403(self) -> None:
        """The body's origin must be the authenticated server; otherwise 403 and nothing stored."""
        msg = self.message()
        failure = self.get_failure(self.txn([dict(msg.pdu)], body_origin=THIRD), MatrixError)
        self.assertEqual((failure.value.http_status, failure.value.errcode.value), (403, "M_FORBIDDEN"))
        self.assertIsNone(self.stored(msg.event_id))

    def test_unsigned_request_is_401(self) -> None:
        """Without an authenticated origin the servlet refuses (the transport should never allow it)."""
        failure = self.get_failure(self.router.call("PUT", SEND_PATH, None, {"txnId": "t"}, content={}), MatrixError)
        self.assertEqual(failure.value.http_status, 401)

    def test_local_user_as_sender_is_refused(self) -> None:
        """A remote server cannot speak for our users, even with its own valid signature."""
        self.joined()
        before = self.db_extremities()
        msg = self.message(sender=ALICE)
        self.assertIn("receiving server", self.send_txn([dict(msg.pdu)], txn_id="t2")[msg.event_id]["error"])
        self.assertIsNone(self.stored(msg.event_id))
        self.assert_nothing_changed(before)

    def test_oversized_pdu_is_refused(self) -> None:
        """A PDU over 65,536 bytes is refused with an error entry and not stored."""
        self.joined()
        msg = self.message()
        big = dict(msg.pdu)
        big["content"] = {"msgtype": "m.text", "body": "x" * 70_000}
        event_id = compute_event_id(big, msg.room_version)
        self.assertIn("error", self.send_txn([big], txn_id="t2")[event_id])
        self.assertIsNone(self.stored(event_id))

    def test_malformed_pdus(self) -> None:
        """A PDU with wrong field types is an error entry; one without a room_id is dropped; a non-object
        PDU makes the envelope a 400 — never a 500, nothing stored."""
        self.joined()
        before = self.db_extremities()
        msg = self.message()
        bad = dict(msg.pdu, depth="three")
        event_id = compute_event_id(bad, msg.room_version)
        no_room = {k: v for k, v in msg.pdu.items() if k != "room_id"}
        result = self.send_txn([bad, no_room], txn_id="t2")
        self.assertEqual(list(result), [event_id])
        self.assertIn("depth", result[event_id]["error"])
        failure = self.get_failure(self.txn(["not an object"], txn_id="t3"), MatrixError)
        self.assertEqual(failure.value.http_status, 400)
        for body in (None, [], {"origin": REMOTE}, {"origin": REMOTE, "origin_server_ts": 1, "pdus": "x"}):
            call = self.router.call("PUT", SEND_PATH, REMOTE, {"txnId": "t4"}, content=body)  # type: ignore[arg-type]
            self.assertEqual(self.get_failure(call, MatrixError).value.http_status, 400)
        self.assert_nothing_changed(before)

    def test_more_than_50_pdus_is_400(self) -> None:
        """51 PDUs: 400 M_BAD_JSON, none of them processed, and the answer is not stored."""
        self.joined()
        msgs = [dict(self.message(f"m{i}").pdu) for i in range(51)]
        failure = self.get_failure(self.txn(msgs, txn_id="t2"), MatrixError)
        self.assertEqual((failure.value.http_status, failure.value.errcode.value), (400, "M_BAD_JSON"))
        self.assertIsNone(self.stored(compute_event_id(msgs[0], self.head().version)))
        self.assertIsNone(self.get_success(self.inbound.transactions._store.get_response(REMOTE, "t2")))

    def test_acl_denied_origin_is_refused(self) -> None:
        """After alice denies remote's host in m.room.server_acl, its PDUs get an error and are not stored."""
        self.joined()
        self.set_state("m.room.server_acl", {"allow": ["*"], "deny": ["remote"]})
        before = self.db_extremities()
        msg = self.message()
        self.assertIn("server ACL", self.send_txn([dict(msg.pdu)], txn_id="t2")[msg.event_id]["error"])
        self.assertIsNone(self.stored(msg.event_id))
        self.assert_nothing_changed(before)

    def test_unknown_room_pdus_are_dropped(self) -> None:
        """PDUs for a room we do not know have no answer entry and change nothing (never a 500)."""
        msg = self.message()
        other = dict(msg.pdu, room_id=f"!nowhere:{REMOTE}")
        self.assertEqual(self.send_txn([other]), {})


class TransactionDedupTests(InboundTestCase):
    def test_retried_transaction_gets_the_same_answer_without_reprocessing(self) -> None:
        """The same (origin, txn_id) again: the stored answer, and its EDUs are not handled twice."""
        seen: list[Any] = []

        async def on_edu(origin: str, content: Any) -> None:
            seen.append((origin, dict(content)))

        self.inbound.edus.register("org.example.ping", on_edu)
        join = self.remote_event("m.room.member", {"membership": "join"}, state_key=RITA)
        edus = [{"edu_type": "org.example.ping", "content": {"n": 1}}]
        first = self.get_success(self.txn([dict(join.pdu)], edus=edus))
        again = self.get_success(self.txn([dict(join.pdu)], edus=edus))
        self.assertEqual(first, again)
        self.assertEqual(seen, [(REMOTE, {"n": 1})])

    def test_same_txn_id_with_other_content_is_not_processed(self) -> None:
        """A retry is recognised by its key alone: a different body under the same txn ID is ignored."""
        self.joined()  # transaction t1
        msg = self.message()
        self.assertEqual(self.send_txn([dict(msg.pdu)]), {self.db_current_state()[("m.room.member", RITA)]: {}})
        self.assertIsNone(self.stored(msg.event_id))

    def test_other_origin_same_txn_id_is_separate(self) -> None:
        """Transaction IDs are per origin: the third server's t1 is processed on its own."""
        self.joined()
        code, body = self.get_success(self.txn([], origin=THIRD))
        self.assertEqual((code, body), (200, {"pdus": {}}))


class TransactionStoreTests(InboundTestCase):
    def test_prune_forgets_old_answers_only(self) -> None:
        """prune(before) deletes answers recorded before it; later ones stay (both engines)."""
        store = self.inbound.transactions._store
        self.get_success(store.set_response(REMOTE, "old", {"pdus": {}}, 1_000))
        self.get_success(store.set_response(REMOTE, "new", {"pdus": {"$x": {}}}, 5_000))
        self.get_success(store.set_response(REMOTE, "new", {"pdus": {"$y": {}}}, 6_000))  # first answer wins
        self.assertEqual(self.get_success(store.prune(2_000)), 1)
        self.assertIsNone(self.get_success(store.get_response(REMOTE, "old")))
        self.assertEqual(self.get_success(store.get_response(REMOTE, "new")), {"pdus": {"$x": {}}})


class RateLimitTests(InboundTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.ratelimiter = RateLimiter(
            lambda: int(self.reactor.seconds() * 1000), {"federation.inbound_txn": RateLimitRule(1.0, 2)}
        )
        super().prepare(reactor, clock, homeserver)

    def test_origin_sending_too_fast_gets_429(self) -> None:
        """Past the burst, an origin's transactions are 429 M_LIMIT_EXCEEDED until tokens come back;
        other origins are not affected."""
        for n in range(2):
            self.get_success(self.txn([], txn_id=f"a{n}"))
        failure = self.get_failure(self.txn([], txn_id="a2"), MatrixError)
        self.assertEqual((failure.value.http_status, failure.value.errcode.value), (429, "M_LIMIT_EXCEEDED"))
        self.get_success(self.txn([], txn_id="b0", origin=THIRD))
        self.reactor.advance(1)
        self.get_success(self.txn([], txn_id="a3"))


class EduTests(InboundTestCase):
    def test_edus_dispatched_unknown_ignored_acl_applied(self) -> None:
        """Registered EDU types reach their handler; unknown types are ignored; a typing EDU for a room
        that denies the origin is dropped; a failing handler does not fail the transaction."""
        seen: list[Any] = []

        async def on_typing(origin: str, content: Any) -> None:
            seen.append(dict(content))

        async def on_broken(origin: str, content: Any) -> None:
            raise RuntimeError("boom")

        self.inbound.edus.register("m.typing", on_typing)
        self.inbound.edus.register("org.example.broken", on_broken)
        with self.assertRaises(ValueError):
            self.inbound.edus.register("m.typing", on_typing)
        typing = {"edu_type": "m.typing", "content": {"room_id": self.room_id, "user_id": RITA, "typing": True}}
        edus = [typing, {"edu_type": "org.example.unknown", "content": {}}, {"edu_type": "org.example.broken", "content": {}}]
        code, body = self.get_success(self.txn([], edus=edus))
        self.assertEqual((code, body), (200, {"pdus": {}}))
        self.assertEqual(len(seen), 1)
        self.set_state("m.room.server_acl", {"allow": ["*"], "deny": ["remote"]})
        self.get_success(self.txn([], txn_id="t2", edus=[typing]))
        self.assertEqual(len(seen), 1)
