"""Fetching missing events from other servers (issue 13, ADR 0014): ``RemoteEventFetching``
implements the core's ``RemoteEventFetcher`` port over a fake ``FederationHttp``; every returned PDU
is checked (format, signatures, hash) and every answer bounded."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

from federation.interfaces import RemoteHttpError
from sc_proto.crypto.keys import get_key_id
from sc_proto.crypto.signing import sign_event
from sc_proto.errors import MatrixError
from sc_proto.events.hashes import compute_event_id
from sc_proto.events.model import Event
from tests.federation.test_inbound import InboundTestCase
from tests.homeserver.test_room_input import REMOTE

P = "/_matrix/federation/v1"


class FetchingTestCase(InboundTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.joined()
        self.fetcher = self.inbound.fetcher
        self.room_path = quote(self.room_id, safe="")

    def forged(self, pdu: Any) -> dict[str, Any]:
        bad = copy.deepcopy(dict(pdu))
        bad["signatures"] = {REMOTE: {get_key_id(self.remote_key): "A" * 86}}
        return bad


class GetEventTests(FetchingTestCase):
    def test_checked_event_is_returned(self) -> None:
        """A valid PDU comes back; the request went to the right path on the destination."""
        msg = self.message()
        path = f"{P}/event/{quote(msg.event_id, safe='')}"
        self.remote.handlers[("GET", path)] = lambda d, a, c: {"origin": REMOTE, "origin_server_ts": 1, "pdus": [dict(msg.pdu)]}
        self.assertEqual(self.get_success(self.fetcher.get_event(REMOTE, msg.event_id)), dict(msg.pdu))

    def test_forged_wrong_or_missing_event_is_none(self) -> None:
        """A bad signature, another event than asked, or a 404 all give None."""
        msg, other = self.message("a"), self.message("b")
        path = f"{P}/event/{quote(msg.event_id, safe='')}"
        for pdus in ([self.forged(msg.pdu)], [dict(other.pdu)]):
            self.remote.handlers[("GET", path)] = lambda d, a, c, pdus=pdus: {"pdus": pdus}
            self.assertIsNone(self.get_success(self.fetcher.get_event(REMOTE, msg.event_id)))
        del self.remote.handlers[("GET", path)]
        self.assertIsNone(self.get_success(self.fetcher.get_event(REMOTE, msg.event_id)))

    def test_tampered_event_comes_back_redacted(self) -> None:
        """A content hash mismatch: the redacted copy is returned (same event ID)."""
        msg = self.message("orig")
        tampered = copy.deepcopy(dict(msg.pdu))
        tampered["content"]["body"] = "changed"
        path = f"{P}/event/{quote(msg.event_id, safe='')}"
        self.remote.handlers[("GET", path)] = lambda d, a, c: {"pdus": [tampered]}
        got = self.get_success(self.fetcher.get_event(REMOTE, msg.event_id))
        self.assertEqual(got["content"], {})
        self.assertEqual(compute_event_id(got, msg.room_version), msg.event_id)

    def test_unreachable_and_garbage_are_502(self) -> None:
        """An unreachable server or a malformed answer is 502 M_UNKNOWN (the port's error)."""
        msg = self.message()
        self.remote.unreachable.add(REMOTE)
        failure = self.get_failure(self.fetcher.get_event(REMOTE, msg.event_id), MatrixError)
        self.assertEqual(failure.value.http_status, 502)
        self.remote.unreachable.clear()
        path = f"{P}/event/{quote(msg.event_id, safe='')}"
        self.remote.handlers[("GET", path)] = lambda d, a, c: {"pdus": "nope"}
        self.assertEqual(self.get_failure(self.fetcher.get_event(REMOTE, msg.event_id), MatrixError).value.http_status, 502)

        def boom(d: str, a: Any, c: Any) -> Any:
            raise RemoteHttpError(d, 500, {})

        self.remote.handlers[("GET", path)] = boom
        self.assertEqual(self.get_failure(self.fetcher.get_event(REMOTE, msg.event_id), MatrixError).value.http_status, 502)


class WalkTests(FetchingTestCase):
    def test_get_missing_events_checks_and_bounds(self) -> None:
        """Forged PDUs and PDUs of another room are dropped; at most limit come back; limit is capped."""
        good, bad = self.message("good"), self.message("bad")
        elsewhere = dict(self.message("x").pdu, room_id="!other:remote:8448")
        path = f"{P}/get_missing_events/{self.room_path}"
        self.remote.handlers[("POST", path)] = lambda d, a, c: {"events": [dict(good.pdu), self.forged(bad.pdu), elsewhere] * 3}
        got = self.get_success(self.fetcher.get_missing_events(REMOTE, self.room_id, ["$e"], ["$l"], 3))
        self.assertEqual(got, [dict(good.pdu)])
        self.get_success(self.fetcher.get_missing_events(REMOTE, self.room_id, [], ["$l"], 10_000))
        self.assertEqual(self.remote.calls[-1][4]["limit"], 100)
        self.remote.handlers[("POST", path)] = lambda d, a, c: {"events": {}}
        failure = self.get_failure(self.fetcher.get_missing_events(REMOTE, self.room_id, [], ["$l"], 5), MatrixError)
        self.assertEqual(failure.value.http_status, 502)

    def test_backfill_accepts_many_prev_events(self) -> None:
        """Backfilled PDUs are not held to the 20 prev_events limit (spec); the limit query is sent."""
        base = dict(self.message("old").pdu)
        base.pop("signatures")
        base["prev_events"] = ["$" + chr(65 + i) * 43 for i in range(21)]
        rv = self.head().version
        pdu = sign_event(base, rv, REMOTE, self.remote_key, key_id=get_key_id(self.remote_key))
        many = Event(pdu, rv, compute_event_id(pdu, rv))
        path = f"{P}/backfill/{self.room_path}"
        self.remote.handlers[("GET", path)] = lambda d, a, c: {"origin": REMOTE, "origin_server_ts": 1, "pdus": [dict(many.pdu)]}
        got = self.get_success(self.fetcher.backfill(REMOTE, self.room_id, ["$from"], 5))
        self.assertEqual([compute_event_id(p, many.room_version) for p in got], [many.event_id])
        self.assertEqual(self.remote.calls[-1][3], {"v": ["$from"], "limit": ["5"]})

    def test_state_ids(self) -> None:
        """/state_ids lists come back as they are; non-ID entries make the answer a 502."""
        path = f"{P}/state_ids/{self.room_path}"
        self.remote.handlers[("GET", path)] = lambda d, a, c: {"pdu_ids": ["$a"], "auth_chain_ids": ["$b"]}
        self.assertEqual(self.get_success(self.fetcher.get_state_ids(REMOTE, self.room_id, "$e")), (["$a"], ["$b"]))
        self.assertEqual(self.remote.calls[-1][3], {"event_id": ["$e"]})
        self.remote.handlers[("GET", path)] = lambda d, a, c: {"pdu_ids": [5], "auth_chain_ids": []}
        self.assertEqual(self.get_failure(self.fetcher.get_state_ids(REMOTE, self.room_id, "$e"), MatrixError).value.http_status, 502)
