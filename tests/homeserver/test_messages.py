"""Room history reads: /messages, /context, /event, /timestamp_to_event (both databases)."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from homeserver.rooms.pagination import MAX_FILTER_LENGTH, RoomEventFilter, parse_room_event_filter
from homeserver.streams.tokens import StreamToken
from sc_proto.errors import Codes, MatrixError
from tests.homeserver.test_rooms_core import V3, RoomsTestCase
from tests.unittest import FakeChannel

V1 = "/_matrix/client/v1"


def _query(params: dict[str, Any]) -> str:
    encoded = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items() if v is not None}
    return urllib.parse.urlencode(encoded)


class ReadsTestCase(RoomsTestCase):
    """Helpers for reading room history."""

    def messages(self, room_id: str, token: str | None = None, **params: Any) -> FakeChannel:
        params.setdefault("dir", "b")
        return self.make_request(
            "GET", f"{V3}/rooms/{room_id}/messages?{_query(params)}", access_token=token or self.alice
        )

    def ok_messages(self, room_id: str, token: str | None = None, **params: Any) -> dict[str, Any]:
        channel = self.messages(room_id, token, **params)
        self.assertEqual(channel.code, 200, channel.json_body)
        body: dict[str, Any] = channel.json_body
        return body

    def paginate_all(self, room_id: str, direction: str, limit: int, **params: Any) -> list[str]:
        """Follows ``end`` tokens until the server omits it; returns the event IDs in order read."""
        seen: list[str] = []
        token = params.pop("from", None)
        for _ in range(200):
            body = self.ok_messages(room_id, dir=direction, limit=limit, **{"from": token}, **params)
            self.assertLessEqual(len(body["chunk"]), limit)
            seen.extend(e["event_id"] for e in body["chunk"])
            if "end" not in body:
                return seen
            self.assertEqual(body["start"], token or body["start"])
            token = body["end"]
        raise AssertionError("pagination did not terminate")

    def send_texts(self, room_id: str, count: int, token: str | None = None, prefix: str = "m") -> list[str]:
        ids = []
        for i in range(count):
            channel = self.send(room_id, {"msgtype": "m.text", "body": f"{prefix}{i}"}, token or self.alice,
                                txn=f"{prefix}-{i}")
            self.assertEqual(channel.code, 200, channel.json_body)
            ids.append(channel.json_body["event_id"])
        return ids

    def all_event_ids(self, room_id: str) -> list[str]:
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))
        assert head is not None

        def all_txn(txn: Any) -> list[str]:
            txn.execute("SELECT event_id FROM events WHERE room_nid = ? ORDER BY stream_ordering", (head.room.room_nid,))
            return [r[0] for r in txn.fetchall()]

        return self.get_success(self.hs.pool.run_read("all_ids", all_txn))

    def sync_token(self) -> str:
        """A sync-style token at the events stream's current position."""
        return StreamToken({"e": self.hs.rooms.stream_tracker.current()}).encode()


class MessagesPaginationTests(ReadsTestCase):
    def test_round_trip_both_directions(self) -> None:
        """Paging back with small limits returns the whole timeline newest first, once each; paging
        forwards from where that ended returns it oldest first; tokens name the same gap both ways."""
        room_id = self.create_room()
        self.send_texts(room_id, 12)
        timeline = self.all_event_ids(room_id)
        backwards = self.paginate_all(room_id, "b", 5)
        self.assertEqual(backwards, list(reversed(timeline)))
        self.assertEqual(self.paginate_all(room_id, "f", 4), timeline)
        first = self.ok_messages(room_id, dir="b", limit=3)
        self.assertEqual(len(first["chunk"]), 3)
        # Forwards from the end of a backwards page returns exactly the events that page covered.
        again = self.ok_messages(room_id, dir="f", limit=3, **{"from": first["end"]})
        self.assertEqual([e["event_id"] for e in again["chunk"]], list(reversed([e["event_id"] for e in first["chunk"]])))

    def test_default_and_capped_limit(self) -> None:
        """The default page is 10 events; limits above 1000 are accepted and capped; limit 0 is empty."""
        room_id = self.create_room()
        self.send_texts(room_id, 12)
        self.assertEqual(len(self.ok_messages(room_id)["chunk"]), 10)
        self.assertEqual(len(self.ok_messages(room_id, limit=50_000)["chunk"]), len(self.all_event_ids(room_id)))
        empty = self.ok_messages(room_id, limit=0)
        self.assertEqual(empty["chunk"], [])
        self.assertIn("end", empty)

    def test_to_token_bounds_the_page(self) -> None:
        """``to`` stops the page: back from now to a sync token returns just the events after the token."""
        room_id = self.create_room()
        self.send_texts(room_id, 3, prefix="old")
        since = self.sync_token()
        new = self.send_texts(room_id, 4, prefix="new")
        body = self.ok_messages(room_id, dir="b", limit=50, to=since)
        self.assertEqual([e["event_id"] for e in body["chunk"]], list(reversed(new)))
        self.assertNotIn("end", body)

    def test_no_gap_or_duplicate_from_sync_token(self) -> None:
        """Back from a sync token returns exactly the events up to it and forwards exactly the ones
        after it, in both token forms (``sc1_e…`` and ``s<stream>``)."""
        room_id = self.create_room()
        self.send_texts(room_id, 5, prefix="before")
        before = self.all_event_ids(room_id)
        token = self.sync_token()
        live = f"s{self.hs.rooms.stream_tracker.current()}"
        after = self.send_texts(room_id, 6, prefix="after")
        for t in (token, live):
            self.assertEqual(self.paginate_all(room_id, "b", 4, **{"from": t}), list(reversed(before)))
            self.assertEqual(self.paginate_all(room_id, "f", 4, **{"from": t}), after)

    def test_no_gap_from_sync_prev_batch(self) -> None:
        """Back from /sync's ``prev_batch`` returns exactly the events before its timeline."""
        room_id = self.create_room()
        self.send_texts(room_id, 15)
        timeline_filter = json.dumps({"room": {"timeline": {"limit": 4}}})
        channel = self.make_request(
            "GET", f"{V3}/sync?filter={urllib.parse.quote(timeline_filter)}", access_token=self.alice
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        room = channel.json_body["rooms"]["join"][room_id]["timeline"]
        shown = [e["event_id"] for e in room["events"]]
        older = self.paginate_all(room_id, "b", 3, **{"from": room["prev_batch"]})
        self.assertEqual(list(reversed(older)) + shown, self.all_event_ids(room_id))

    def test_filters(self) -> None:
        """types/not_types (with wildcards), senders/not_senders and contains_url narrow the pages;
        paging with a filter still reaches every matching event once."""
        room_id = self.create_room(preset="public_chat")
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob).code, 200)
        alice_msgs = self.send_texts(room_id, 4, prefix="a")
        bob_msgs = self.send_texts(room_id, 3, token=self.bob, prefix="b")
        image = self.send(room_id, {"msgtype": "m.image", "body": "x", "url": "mxc://test:8448/abc"}, self.alice,
                          txn="img").json_body["event_id"]

        def ids(**flt: Any) -> list[str]:
            return self.paginate_all(room_id, "f", 2, filter=flt)

        self.assertEqual(ids(types=["m.room.message"]), [*alice_msgs, *bob_msgs, image])
        self.assertEqual(ids(types=["m.room.mess*"]), [*alice_msgs, *bob_msgs, image])
        self.assertEqual(ids(types=["m.room.message"], senders=["@bob:test:8448"]), bob_msgs)
        self.assertEqual(ids(types=["m.room.message"], not_senders=["@bob:test:8448"]), [*alice_msgs, image])
        self.assertEqual(ids(contains_url=True), [image])
        self.assertNotIn(image, ids(contains_url=False))
        self.assertEqual(ids(not_types=["m.room.*"]), [])
        self.assertEqual(ids(types=[]), [])
        non_messages = ids(not_types=["m.room.message"])
        self.assertTrue(non_messages)
        self.assertFalse(set(non_messages) & {*alice_msgs, *bob_msgs, image})

    def test_lazy_load_members(self) -> None:
        """With lazy_load_members, ``state`` holds the member events of the chunk's senders only."""
        room_id = self.create_room(preset="public_chat")
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob).code, 200)
        self.send_texts(room_id, 3, token=self.bob, prefix="b")
        body = self.ok_messages(room_id, limit=2, filter={"lazy_load_members": True})
        self.assertEqual([(e["type"], e["state_key"]) for e in body["state"]], [("m.room.member", "@bob:test:8448")])
        self.assertNotIn("state", self.ok_messages(room_id, limit=2))


class MessagesBadInputTests(ReadsTestCase):
    def test_bad_parameters(self) -> None:
        """Missing/bad dir, bad limits, malformed tokens and filters are 400."""
        room_id = self.create_room()
        cases: list[tuple[dict[str, Any], str]] = [
            ({"dir": None}, "M_MISSING_PARAM"),
            ({"dir": "x"}, "M_INVALID_PARAM"),
            ({"limit": "-1"}, "M_INVALID_PARAM"),
            ({"limit": "ten"}, "M_INVALID_PARAM"),
            ({"limit": "1.5"}, "M_INVALID_PARAM"),
            ({"from": "garbage"}, "M_INVALID_PARAM"),
            ({"from": "t1-"}, "M_INVALID_PARAM"),
            ({"from": "t99999999999999999999-1"}, "M_INVALID_PARAM"),
            ({"from": "sc1_e1_!"}, "M_INVALID_PARAM"),
            ({"to": "s-5"}, "M_INVALID_PARAM"),
            ({"filter": "{not json"}, "M_NOT_JSON"),
            ({"filter": "[1]"}, "M_INVALID_PARAM"),
            ({"filter": '{"types": "m.room.message"}'}, "M_INVALID_PARAM"),
            ({"filter": '{"lazy_load_members": "yes"}'}, "M_INVALID_PARAM"),
        ]
        for params, errcode in cases:
            query = {"dir": "b", **params}
            channel = self.make_request(
                "GET", f"{V3}/rooms/{room_id}/messages?{_query(query)}", access_token=self.alice
            )
            self.assertEqual((channel.code, channel.json_body.get("errcode")), (400, errcode), params)

    def test_filter_parser_limits(self) -> None:
        """Oversized filters are refused before decoding; null fields count as absent."""
        with self.assertRaises(MatrixError) as raised:
            parse_room_event_filter("{" + " " * (MAX_FILTER_LENGTH + 1) + "}")
        self.assertEqual(raised.exception.errcode, Codes.INVALID_PARAM)
        self.assertEqual(parse_room_event_filter('{"types": null, "x": 1}'), RoomEventFilter())
        self.assertEqual(parse_room_event_filter("  "), RoomEventFilter())

    def test_access(self) -> None:
        """Unknown rooms and rooms the user is not in are 403; a malformed room ID is 400; no token is 401."""
        room_id = self.create_room()
        self.assertEqual(self.messages("!unknown:test:8448").code, 403)
        self.assertEqual(self.messages(room_id, self.bob).json_body["errcode"], "M_FORBIDDEN")
        self.assertEqual(self.messages("not-a-room").code, 400)
        self.assertEqual(self.make_request("GET", f"{V3}/rooms/{room_id}/messages?dir=b").code, 401)

    def test_future_sync_token_is_clamped(self) -> None:
        """A sync token from the future reads from now."""
        room_id = self.create_room()
        self.send_texts(room_id, 2)
        body = self.ok_messages(room_id, limit=50, **{"from": "sc1_e999999999"})
        self.assertEqual(len(body["chunk"]), len(self.all_event_ids(room_id)))


class RedactionReadTests(ReadsTestCase):
    def test_redacted_event_is_redacted_everywhere(self) -> None:
        """After a redaction, /messages, /context and /event all serve the redacted form."""
        room_id = self.create_room()
        target = self.send_texts(room_id, 1, prefix="secret")[0]
        redaction = self.make_request(
            "PUT", f"{V3}/rooms/{room_id}/redact/{target}/r1", {"reason": "oops"}, access_token=self.alice
        )
        self.assertEqual(redaction.code, 200, redaction.json_body)

        def check(event: dict[str, Any]) -> None:
            self.assertEqual(event["event_id"], target)
            self.assertEqual(event["content"], {})
            self.assertEqual(event["unsigned"]["redacted_because"]["event_id"], redaction.json_body["event_id"])

        chunk = self.ok_messages(room_id, limit=5)["chunk"]
        check(next(e for e in chunk if e["event_id"] == target))
        context = self.make_request("GET", f"{V3}/rooms/{room_id}/context/{target}", access_token=self.alice)
        check(context.json_body["event"])
        check(self.make_request("GET", f"{V3}/rooms/{room_id}/event/{target}", access_token=self.alice).json_body)


class ContextTests(ReadsTestCase):
    def test_context_around_event(self) -> None:
        """limit is split before/after; tokens continue pagination without gap or duplicate; state is
        the state at the last event returned."""
        room_id = self.create_room()
        ids = self.send_texts(room_id, 9)
        channel = self.make_request("GET", f"{V3}/rooms/{room_id}/context/{ids[4]}?limit=4", access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        body = channel.json_body
        self.assertEqual(body["event"]["event_id"], ids[4])
        self.assertEqual([e["event_id"] for e in body["events_before"]], [ids[3], ids[2]])
        self.assertEqual([e["event_id"] for e in body["events_after"]], [ids[5], ids[6]])
        self.assertIn(("m.room.member", "@alice:test:8448"), [(e["type"], e.get("state_key")) for e in body["state"]])
        self.assertIn("m.room.create", [e["type"] for e in body["state"]])
        earlier = self.ok_messages(room_id, dir="b", limit=1, **{"from": body["start"]})
        self.assertEqual(earlier["chunk"][0]["event_id"], ids[1])
        later = self.ok_messages(room_id, dir="f", limit=5, **{"from": body["end"]})
        self.assertEqual([e["event_id"] for e in later["chunk"]], [ids[7], ids[8]])

    def test_context_limit_zero_and_filter(self) -> None:
        """limit=0 returns only the event; a filter narrows before/after and lazy-loads state members."""
        room_id = self.create_room(preset="public_chat")
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob).code, 200)
        ids = self.send_texts(room_id, 3)
        zero = self.make_request("GET", f"{V3}/rooms/{room_id}/context/{ids[1]}?limit=0", access_token=self.alice)
        self.assertEqual((zero.json_body["events_before"], zero.json_body["events_after"]), ([], []))
        flt = urllib.parse.quote(json.dumps({"types": ["m.room.message"], "lazy_load_members": True}))
        body = self.make_request(
            "GET", f"{V3}/rooms/{room_id}/context/{ids[1]}?limit=10&filter={flt}", access_token=self.alice
        ).json_body
        self.assertEqual([e["event_id"] for e in body["events_before"]], [ids[0]])
        self.assertEqual([e["event_id"] for e in body["events_after"]], [ids[2]])
        # The types filter applies to state too, so lazy-loaded members only appear without it.
        members = self.make_request(
            "GET", f"{V3}/rooms/{room_id}/context/{ids[1]}?limit=2&filter="
            + urllib.parse.quote(json.dumps({"lazy_load_members": True})), access_token=self.alice,
        ).json_body["state"]
        self.assertNotIn(("m.room.member", "@bob:test:8448"), [(e["type"], e.get("state_key")) for e in members])
        self.assertIn(("m.room.member", "@alice:test:8448"), [(e["type"], e.get("state_key")) for e in members])

    def test_unknown_invisible_or_misplaced_events_are_404(self) -> None:
        """Unknown events, events of another room and events the user may not see are 404; bad limit 400."""
        room_id = self.create_room()
        other = self.create_room()
        event_id = self.send_texts(room_id, 1)[0]
        for rid, eid, token in ((room_id, "$nope", self.alice), (other, event_id, self.alice), (room_id, event_id, self.bob)):
            for kind in ("context", "event"):
                channel = self.make_request("GET", f"{V3}/rooms/{rid}/{kind}/{eid}", access_token=token)
                self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"), (kind, rid, eid))
        bad = self.make_request("GET", f"{V3}/rooms/{room_id}/context/{event_id}?limit=-2", access_token=self.alice)
        self.assertEqual(bad.code, 400)


class EventTests(ReadsTestCase):
    def test_get_event(self) -> None:
        """A member gets the client form of an event (with its transaction ID on the sending device)."""
        room_id = self.create_room()
        event_id = self.send_texts(room_id, 1)[0]
        channel = self.make_request("GET", f"{V3}/rooms/{room_id}/event/{event_id}", access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["content"], {"msgtype": "m.text", "body": "m0"})
        self.assertEqual(channel.json_body["room_id"], room_id)
        self.assertEqual(channel.json_body["unsigned"]["transaction_id"], "m-0")


class TimestampToEventTests(ReadsTestCase):
    def test_both_directions(self) -> None:
        """dir=f finds the first event at or after ts, dir=b the last at or before; none is 404."""
        room_id = self.create_room()
        self.reactor.advance(10)
        first = self.send_texts(room_id, 1, prefix="x")[0]
        self.reactor.advance(10)
        second = self.send_texts(room_id, 1, prefix="y")[0]
        ts_first = self.make_request("GET", f"{V3}/rooms/{room_id}/event/{first}", access_token=self.alice).json_body[
            "origin_server_ts"
        ]

        def lookup(ts: int, direction: str) -> FakeChannel:
            return self.make_request(
                "GET", f"{V1}/rooms/{room_id}/timestamp_to_event?ts={ts}&dir={direction}", access_token=self.alice
            )

        self.assertEqual(lookup(ts_first + 5000, "f").json_body["event_id"], second)
        self.assertEqual(lookup(ts_first + 5000, "b").json_body["event_id"], first)
        exact = lookup(ts_first, "f").json_body
        self.assertEqual(exact, {"event_id": first, "origin_server_ts": ts_first})
        self.assertEqual(lookup(ts_first + 60_000, "f").json_body["errcode"], "M_NOT_FOUND")
        self.assertEqual(lookup(0, "b").code, 404)

    def test_bad_inputs(self) -> None:
        """Missing ts, bad dir, negative ts are 400; a non-member is 403."""
        room_id = self.create_room()
        base = f"{V1}/rooms/{room_id}/timestamp_to_event"
        for query in ("dir=f", "ts=1", "ts=1&dir=x", "ts=-1&dir=f", "ts=abc&dir=f"):
            self.assertEqual(self.make_request("GET", f"{base}?{query}", access_token=self.alice).code, 400, query)
        self.assertEqual(self.make_request("GET", f"{base}?ts=1&dir=f", access_token=self.bob).code, 403)
