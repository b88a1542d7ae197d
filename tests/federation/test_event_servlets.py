"""Serving our rooms' events to other servers (issue 13, ADR 0014): ``/event``, ``/state``,
``/state_ids``, ``/event_auth``, ``/backfill``, ``/get_missing_events``, ``/timestamp_to_event``.

The fake router calls the servlets as the transport would with an authenticated origin; the core is
real (both database engines).
"""

from __future__ import annotations

from typing import Any

from sc_proto.errors import MatrixError
from tests.federation.test_inbound import THIRD, InboundTestCase
from tests.homeserver.test_room_input import REMOTE, RITA

P = "/_matrix/federation/v1"


class ServletTestCase(InboundTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.join_id = self.joined()
        m1 = self.message("one")
        m2 = self.message("two", prevs=[m1.event_id])
        m3 = self.message("three", prevs=[m2.event_id])
        self.send_txn([dict(m1.pdu), dict(m2.pdu), dict(m3.pdu)], txn_id="msgs")
        self.msgs = [m1.event_id, m2.event_id, m3.event_id]

    def call(self, method: str, route: str, origin: str = REMOTE, *, args: dict[str, str] | None = None,
             query: dict[str, list[str]] | None = None, content: Any = None) -> Any:
        path_args = {"roomId": self.room_id, **(args or {})}
        return self.router.call(method, P + route, origin, path_args, query, content)

    def ok(self, *a: Any, **kw: Any) -> dict[str, Any]:
        code, body = self.get_success(self.call(*a, **kw))
        self.assertEqual(code, 200)
        return body  # type: ignore[no-any-return]

    def refused(self, *a: Any, **kw: Any) -> tuple[int, str]:
        failure = self.get_failure(self.call(*a, **kw), MatrixError)
        return failure.value.http_status, failure.value.errcode.value

    def all_routes(self) -> list[tuple[Any, ...]]:
        ev = self.msgs[1]
        return [
            ("GET", "/event/{eventId}", {"eventId": ev}, None, None),
            ("GET", "/state/{roomId}", None, {"event_id": [ev]}, None),
            ("GET", "/state_ids/{roomId}", None, {"event_id": [ev]}, None),
            ("GET", "/event_auth/{roomId}/{eventId}", {"eventId": ev}, None, None),
            ("GET", "/backfill/{roomId}", None, {"v": [ev], "limit": ["5"]}, None),
            ("POST", "/get_missing_events/{roomId}", None, None, {"earliest_events": [], "latest_events": [ev]}),
            ("GET", "/timestamp_to_event/{roomId}", None, {"ts": ["0"], "dir": ["f"]}, None),
        ]


class ServletAccessTests(ServletTestCase):
    def test_origin_not_in_room_is_refused_everywhere(self) -> None:
        """A server with no member in the room gets 403 M_FORBIDDEN from every route."""
        for method, route, args, query, content in self.all_routes():
            self.assertEqual(
                self.refused(method, route, THIRD, args=args, query=query, content=content), (403, "M_FORBIDDEN"),
                route,
            )

    def test_acl_denied_origin_is_refused_everywhere(self) -> None:
        """A joined server that the room's ACL denies gets 403 M_FORBIDDEN from every route."""
        self.set_state("m.room.server_acl", {"allow": ["*"], "deny": ["remote"]})
        for method, route, args, query, content in self.all_routes():
            self.assertEqual(self.refused(method, route, args=args, query=query, content=content), (403, "M_FORBIDDEN"), route)

    def test_joined_origin_is_served_everywhere(self) -> None:
        """The same routes answer 200 for the joined, allowed origin."""
        for method, route, args, query, content in self.all_routes():
            code, _ = self.get_success(self.call(method, route, args=args, query=query, content=content))
            self.assertEqual(code, 200, route)

    def test_history_visibility_joined_hides_earlier_events(self) -> None:
        """With history_visibility joined, an event from before the origin's server joined is 403 on
        /event and comes redacted (no body) from /backfill; later events are served whole."""
        self.set_state("m.room.history_visibility", {"history_visibility": "joined"})
        channel = self.send(self.room_id, {"msgtype": "m.text", "body": "secret"}, self.alice, txn="s1")
        secret = channel.json_body["event_id"]
        self.send_txn([dict(self.remote_event("m.room.member", {"membership": "leave"}, state_key=RITA).pdu)], txn_id="l")
        channel = self.send(self.room_id, {"msgtype": "m.text", "body": "secret2"}, self.alice, txn="s2")
        hidden = channel.json_body["event_id"]
        rejoin = self.remote_event("m.room.member", {"membership": "join"}, state_key=RITA)
        self.send_txn([dict(rejoin.pdu)], txn_id="rj")
        self.assertEqual(self.ok("GET", "/event/{eventId}", args={"eventId": secret})["pdus"][0]["content"]["body"], "secret")
        self.assertEqual(self.refused("GET", "/event/{eventId}", args={"eventId": hidden}), (403, "M_FORBIDDEN"))
        body = self.ok("GET", "/backfill/{roomId}", query={"v": [rejoin.event_id], "limit": ["3"]})
        by_id = {compute_id(p): p for p in body["pdus"]}
        self.assertEqual(by_id[hidden]["content"], {})


def compute_id(pdu: dict[str, Any]) -> str:
    from sc_proto.events.hashes import compute_event_id
    from sc_proto.room_versions import get_room_version

    return compute_event_id(pdu, get_room_version("12"))


class ServletAnswerTests(ServletTestCase):
    def test_get_event(self) -> None:
        """/event answers the PDU in a transaction envelope from us; an unknown event is 404."""
        body = self.ok("GET", "/event/{eventId}", args={"eventId": self.msgs[0]})
        self.assertEqual(body["origin"], "test:8448")
        self.assertEqual(compute_id(body["pdus"][0]), self.msgs[0])
        self.assertNotIn("unsigned", body["pdus"][0])
        self.assertEqual(self.refused("GET", "/event/{eventId}", args={"eventId": "$nope"}), (404, "M_NOT_FOUND"))

    def test_state_ids_and_state(self) -> None:
        """/state_ids is the state before the event with its auth chain; /state the same as PDUs."""
        ids = self.ok("GET", "/state_ids/{roomId}", query={"event_id": [self.msgs[1]]})
        state = self.get_success(self.input.get_state_ids_at(self.room_id, self.msgs[0]))
        self.assertEqual(sorted(ids["pdu_ids"]), sorted(state or []))
        self.assertIn(self.join_id, ids["pdu_ids"])
        # Rooms v12 leave the create event out of auth_events; power levels are in every chain.
        self.assertIn(self.head().state[("m.room.power_levels", "")], ids["auth_chain_ids"])
        full = self.ok("GET", "/state/{roomId}", query={"event_id": [self.msgs[1]]})
        self.assertEqual(sorted(compute_id(p) for p in full["pdus"]), sorted(ids["pdu_ids"]))
        self.assertEqual(sorted(compute_id(p) for p in full["auth_chain"]), sorted(ids["auth_chain_ids"]))

    def test_state_ids_bad_requests(self) -> None:
        """Missing event_id is 400 M_MISSING_PARAM; an event of another room or unknown is 404."""
        self.assertEqual(self.refused("GET", "/state_ids/{roomId}", query={}), (400, "M_MISSING_PARAM"))
        self.assertEqual(self.refused("GET", "/state_ids/{roomId}", query={"event_id": ["$x"]}), (404, "M_NOT_FOUND"))
        self.assertEqual(
            self.refused("GET", "/state_ids/{roomId}", args={"roomId": "!unknown:test:8448"}, query={"event_id": ["$x"]}),
            (404, "M_NOT_FOUND"),
        )

    def test_event_auth(self) -> None:
        """/event_auth is the event's auth chain: the power levels and rita's join among it."""
        body = self.ok("GET", "/event_auth/{roomId}/{eventId}", args={"eventId": self.msgs[0]})
        ids = {compute_id(p) for p in body["auth_chain"]}
        self.assertIn(self.head().state[("m.room.power_levels", "")], ids)
        self.assertIn(self.join_id, ids)
        self.assertNotIn(self.msgs[0], ids)

    def test_backfill(self) -> None:
        """/backfill returns the given event and its ancestors, newest first, up to limit (capped)."""
        body = self.ok("GET", "/backfill/{roomId}", query={"v": [self.msgs[2]], "limit": ["3"]})
        self.assertEqual([compute_id(p) for p in body["pdus"]], [self.msgs[2], self.msgs[1], self.msgs[0]])
        big = self.ok("GET", "/backfill/{roomId}", query={"v": [self.msgs[2]], "limit": ["100000"]})
        self.assertLessEqual(len(big["pdus"]), 100)
        self.assertEqual(self.refused("GET", "/backfill/{roomId}", query={"v": [self.msgs[2]], "limit": ["x"]})[0], 400)
        self.assertEqual(self.refused("GET", "/backfill/{roomId}", query={"limit": ["3"]})[0], 400)

    def test_get_missing_events(self) -> None:
        """Ancestors of latest, not past earliest, oldest first; malformed bodies are 400."""
        content = {"earliest_events": [self.join_id], "latest_events": [self.msgs[2]], "limit": 10}
        body = self.ok("POST", "/get_missing_events/{roomId}", content=content)
        self.assertEqual([compute_id(p) for p in body["events"]], self.msgs[:2])
        body = self.ok("POST", "/get_missing_events/{roomId}", content=dict(content, limit=1))
        self.assertEqual([compute_id(p) for p in body["events"]], [self.msgs[1]])
        for bad in ({}, {"earliest_events": "x", "latest_events": []}, dict(content, limit="3"),
                    {"earliest_events": [], "latest_events": ["$a"] * 101}):
            self.assertEqual(self.refused("POST", "/get_missing_events/{roomId}", content=bad)[0], 400, bad)

    def test_timestamp_to_event(self) -> None:
        """The closest visible event in the given direction; bad dir is 400; nothing found is 404."""
        body = self.ok("GET", "/timestamp_to_event/{roomId}", query={"ts": ["0"], "dir": ["f"]})
        self.assertEqual(body["event_id"], self.head().state[("m.room.create", "")])
        self.assertIsInstance(body["origin_server_ts"], int)
        self.assertEqual(self.refused("GET", "/timestamp_to_event/{roomId}", query={"ts": ["0"], "dir": ["x"]})[0], 400)
        self.assertEqual(self.refused("GET", "/timestamp_to_event/{roomId}", query={"ts": ["0"], "dir": ["b"]})[0], 404)


class ServedFormTests(ServletTestCase):
    def test_rejected_events_are_never_served(self) -> None:
        """A PDU the room input rejected is stored but /event answers 404 and walks skip it."""
        rogue = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "x"}, sender="@nobody:remote:8448")
        self.assertIn("rejected", self.send_txn([dict(rogue.pdu)], txn_id="rogue")[rogue.event_id]["error"])
        self.assertEqual(self.refused("GET", "/event/{eventId}", args={"eventId": rogue.event_id}), (404, "M_NOT_FOUND"))
        body = self.ok("GET", "/backfill/{roomId}", query={"v": [rogue.event_id, self.msgs[2]], "limit": ["10"]})
        self.assertNotIn(rogue.event_id, [compute_id(p) for p in body["pdus"]])

    def test_redacted_events_are_served_redacted(self) -> None:
        """After alice redacts a message, other servers get its redacted form (no body)."""
        channel = self.send(self.room_id, {"msgtype": "m.text", "body": "oops"}, self.alice, txn="r1")
        event_id = channel.json_body["event_id"]
        redact = self.make_request("PUT", f"/_matrix/client/v3/rooms/{self.room_id}/redact/{event_id}/r2", {},
                                   access_token=self.alice)
        self.assertEqual(redact.code, 200, redact.json_body)
        pdu = self.ok("GET", "/event/{eventId}", args={"eventId": event_id})["pdus"][0]
        self.assertEqual(pdu["content"], {})
        self.assertEqual(compute_id(pdu), event_id)
