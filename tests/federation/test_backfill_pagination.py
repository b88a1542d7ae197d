"""``/messages`` backfills history older than our join from a server in the room (issue 13).

Two real homeserver cores over the in-memory federation transport (tests/federation/harness.py). The
harness's servers ask nobody for events, so the joining server gets a fetcher whose ``backfill`` is
answered by the other server's own ``/backfill`` reader (the code behind
``GET /_matrix/federation/v1/backfill``), with each PDU passed through a JSON round trip.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from typing import Any

from sc_proto.errors import Codes, MatrixError
from tests.federation.harness import FederationTestCase


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class ServedBackfill:
    """The server's real fetcher (the in-memory federation), with ``backfill`` recorded and tamperable."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, list[str], int]] = []
        self.failure: MatrixError | None = None
        self.tamper: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def backfill(self, destination: str, room_id: str, from_event_ids: Sequence[str], limit: int) -> list[Any]:
        self.calls.append((destination, room_id, list(from_event_ids), limit))
        if self.failure is not None:
            raise self.failure
        if self.tamper is None:
            return list(await self.inner.backfill(destination, room_id, from_event_ids, limit))
        # The tampered copy must reach the room input unchecked, as if a peer sent it: serve the
        # source's history directly, altered.
        source = self.source_history
        events = await source.get_backfill(room_id, from_event_ids, limit)
        return [self.tamper(json.loads(json.dumps(dict(e.pdu)))) for e in events]


class BackfillPaginationTests(FederationTestCase):
    HISTORY = 25

    def _room_with_history(self) -> tuple[str, str, str]:
        """Alice on A fills a public room with messages; Bob on B joins afterwards."""
        _alice, alice_token = self.user_on(self.a, "alice")
        _bob, bob_token = self.user_on(self.b, "bob")
        room_id = self.create_room(self.a, alice_token, preset="public_chat")
        for i in range(self.HISTORY):
            sent = self.request(
                self.a, "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/h{i}",
                {"msgtype": "m.text", "body": f"history {i}"}, alice_token,
            )
            self.assertEqual(sent.code, 200, sent.json_body)
        self.fetcher = ServedBackfill(self.b.hs.rooms.room_input._fetcher)
        self.fetcher.source_history = self.a.hs.rooms.history
        self.b.hs.rooms.room_input.use_fetcher(self.fetcher)
        joined = self.request(self.b, "POST", f"/_matrix/client/v3/join/{q(room_id)}?via={q(self.a.name)}", {}, bob_token)
        self.assertEqual(joined.code, 200, joined.json_body)
        return room_id, bob_token, alice_token

    def _page_back(self, room_id: str, token: str, limit: int = 10) -> list[str]:
        bodies: list[str] = []
        start: str | None = None
        for _ in range(20):
            path = f"/_matrix/client/v3/rooms/{q(room_id)}/messages?dir=b&limit={limit}"
            channel = self.request(self.b, "GET", path + (f"&from={q(start)}" if start else ""), None, token)
            self.assertEqual(channel.code, 200, channel.json_body)
            bodies += [e["content"]["body"] for e in channel.json_body["chunk"] if e["type"] == "m.room.message"]
            start = channel.json_body.get("end")
            if not start:
                break
        return list(reversed(bodies))

    def test_history_before_the_join_is_paged_back(self) -> None:
        room_id, bob_token, _ = self._room_with_history()
        self.assertEqual(self._page_back(room_id, bob_token), [f"history {i}" for i in range(self.HISTORY)])
        self.assertTrue(self.fetcher.calls)
        self.assertTrue(all(c[0] == self.a.name and c[1] == room_id for c in self.fetcher.calls))

    def test_backfilled_events_are_older_than_every_stream_position(self) -> None:
        """Negative stream orderings: an incremental /sync after the join shows none of them."""
        room_id, bob_token, _ = self._room_with_history()
        since = self.request(self.b, "GET", "/_matrix/client/v3/sync?timeout=0", None, bob_token).json_body["next_batch"]
        self._page_back(room_id, bob_token)
        later = self.request(self.b, "GET", f"/_matrix/client/v3/sync?timeout=0&since={q(since)}", None, bob_token)
        timeline = later.json_body.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {})
        self.assertEqual(timeline.get("events", []), [])
        head = self.get_success(self.b.hs.rooms.creator.get_head(room_id))
        assert head is not None
        ids = self.get_success(
            self.b.hs.rooms.events.get_room_event_orderings(
                head.room.room_nid, from_key=None, to_key=None, backwards=False, limit=100
            )
        )
        stored = self.get_success(self.b.hs.rooms.events.get_events(ids))
        messages = [s for s in stored.values() if s.event.type == "m.room.message"]
        self.assertEqual(len(messages), self.HISTORY)
        self.assertTrue(all(s.stream_ordering < 0 for s in messages))

    def test_a_failing_server_leaves_local_history(self) -> None:
        room_id, bob_token, _ = self._room_with_history()
        self.fetcher.failure = MatrixError(502, Codes.UNKNOWN, "unreachable")
        self.assertEqual(self._page_back(room_id, bob_token), [])
        self.assertTrue(self.fetcher.calls)

    def test_events_failing_their_auth_events_are_not_inserted(self) -> None:
        """A message whose sender is swapped for a stranger fails step 4 and is dropped (the others stay)."""
        room_id, bob_token, _ = self._room_with_history()

        def forge(pdu: dict[str, Any]) -> dict[str, Any]:
            if pdu["type"] == "m.room.message" and pdu["content"]["body"] == "history 3":
                return {**pdu, "sender": f"@mallory:{self.a.name}"}
            return pdu

        self.fetcher.tamper = forge
        bodies = self._page_back(room_id, bob_token)
        self.assertNotIn("history 3", bodies)
        self.assertIn("history 4", bodies)

    def test_no_remote_server_no_request(self) -> None:
        """A local room reaches its create event: nothing is fetched."""
        _bob, bob_token = self.user_on(self.b, "bob")
        room_id = self.create_room(self.b, bob_token, preset="public_chat")
        fetcher = ServedBackfill(self.b.hs.rooms.room_input._fetcher)
        self.b.hs.rooms.room_input.use_fetcher(fetcher)
        self.request(self.b, "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages?dir=b&limit=50", None, bob_token)
        self.assertEqual(fetcher.calls, [])
