"""One filter loader for ``GET /sync?filter=`` and the WebSocket ``auth`` frame
(:class:`homeserver.sync.filter_loading.FilterLoader`): the same filters load, and the same bad
values fail with the same error code on both transports (ADR 0008; both databases)."""

from __future__ import annotations

import json
from typing import Any

from homeserver.rest.client.sync_websocket import CLOSE_PROTOCOL_ERROR
from homeserver.sync.filter_loading import MAX_FILTER_BYTES, MAX_FILTER_ID_DIGITS, FilterLoader, is_filter_id
from sc_proto.errors import MatrixError
from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_rooms_core import V3
from tests.homeserver.test_websocket import SessionTestCase

BOB = f"@bob:{TEST_SERVER_NAME}"
LIMIT_ONE: dict[str, Any] = {"room": {"timeline": {"limit": 1}}}

BAD_VALUES: list[tuple[str, int, str]] = [
    ("{not json", 400, "M_NOT_JSON"),
    ("abc", 400, "M_INVALID_PARAM"),
    ("[]", 400, "M_INVALID_PARAM"),
    ("-1", 400, "M_INVALID_PARAM"),
    ("1" * (MAX_FILTER_ID_DIGITS + 1), 400, "M_INVALID_PARAM"),
    ('{"room": 5}', 400, "M_BAD_JSON"),
    ('{"room": {"timeline": {"limit": "ten"}}}', 400, "M_BAD_JSON"),
    ("12345", 404, "M_NOT_FOUND"),
]
"""``(filter value, /sync status, errcode)``: what ``/sync`` answered before the loaders were merged."""


class FilterLoadingTestCase(SessionTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        for text in ("one", "two"):
            self.say(self.room, self.alice, text)

    def upload(self, token: str, user_id: str, body: dict[str, Any]) -> str:
        channel = self.make_request("POST", f"{V3}/user/{user_id}/filter", body, access_token=token)
        self.assertEqual(channel.code, 200, channel.json_body)
        filter_id: str = channel.json_body["filter_id"]
        return filter_id

    def ws_error(self, raw: Any) -> tuple[int | None, str | None]:
        """Opens a session with ``filter`` = ``raw``; returns its close code and error frame errcode."""
        session, sink = self.open()
        self.frame(session, {"type": "auth", "access_token": self.bob, "filter": raw})
        errors = sink.of_type("error")
        return (sink.closed[0] if sink.closed else None), (errors[0]["errcode"] if errors else None)

    def timeline_length(self, body: dict[str, Any]) -> int:
        return len(body["rooms"]["join"][self.room]["timeline"]["events"])


class BothTransportsTests(FilterLoadingTestCase):
    def test_inline_and_stored_filters_load_on_both(self) -> None:
        """An inline string, an inline object (WebSocket) and an uploaded ID all apply the filter."""
        filter_id = self.upload(self.bob, BOB, LIMIT_ONE)
        for raw in (json.dumps(LIMIT_ONE), filter_id):
            self.assertEqual(self.timeline_length(self.sync(self.bob, filter=raw)), 1, raw)
        for raw in (json.dumps(LIMIT_ONE), LIMIT_ONE, filter_id):
            _session, sink = self.open(self.bob, flt=raw)
            (frame,) = sink.of_type("sync")
            self.assertEqual(self.timeline_length(frame["body"]), 1, raw)
        self.assertGreater(self.timeline_length(self.sync(self.bob)), 1)

    def test_bad_values_fail_alike(self) -> None:
        """Each bad value gets /sync's status and errcode, and the same errcode (close 4400) on the WebSocket."""
        for raw, status, errcode in BAD_VALUES:
            channel = self.sync_channel(self.bob, filter=raw)
            self.assertEqual((channel.code, channel.json_body.get("errcode")), (status, errcode), raw)
            self.assertEqual(self.ws_error(raw), (CLOSE_PROTOCOL_ERROR, errcode), raw)

    def test_another_users_filter_is_unknown(self) -> None:
        """A filter ID belongs to its uploader: for anyone else it is 404 M_NOT_FOUND on both transports."""
        filter_id = self.upload(self.alice, f"@alice:{TEST_SERVER_NAME}", LIMIT_ONE)
        channel = self.sync_channel(self.bob, filter=filter_id)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))
        self.assertEqual(self.ws_error(filter_id), (CLOSE_PROTOCOL_ERROR, "M_NOT_FOUND"))

    def test_websocket_only_values(self) -> None:
        """A frame may carry the object itself; other JSON types are 400 M_INVALID_PARAM."""
        self.assertEqual(self.ws_error({"room": 5}), (CLOSE_PROTOCOL_ERROR, "M_BAD_JSON"))
        self.assertEqual(self.ws_error(["x"]), (CLOSE_PROTOCOL_ERROR, "M_INVALID_PARAM"))


class LoaderTests(FilterLoadingTestCase):
    def load(self, raw: object, user_id: str = BOB) -> Any:
        return self.get_success(FilterLoader(self.hs.stores.filters).load(user_id, raw))

    def load_error(self, raw: object) -> tuple[int, str]:
        failure = self.get_failure(FilterLoader(self.hs.stores.filters).load(BOB, raw), MatrixError)
        return failure.value.http_status, failure.value.errcode.value

    def test_default_filter(self) -> None:
        """None and "" are the default filter with an empty sharing key."""
        for raw in (None, ""):
            flt, key = self.load(raw)
            self.assertEqual(key, "")
            self.assertEqual(flt.timeline_limit, self.load("{}")[0].timeline_limit)

    def test_sharing_key_is_canonical(self) -> None:
        """Equal inline filters share a key whatever their spelling; an uploaded filter's key is its ID."""
        spelled = ['{"room":{"timeline":{"limit":1}}}', '{ "room" : { "timeline" : { "limit" : 1 } } }', LIMIT_ONE]
        self.assertEqual(len({self.load(raw)[1] for raw in spelled}), 1)
        filter_id = self.upload(self.bob, BOB, LIMIT_ONE)
        self.assertEqual(self.load(filter_id)[1], filter_id)

    def test_too_large(self) -> None:
        """An inline filter over the size limit is 413 M_TOO_LARGE, as a string or as an object."""
        big = {"room": {"rooms": ["!" + "x" * MAX_FILTER_BYTES]}}
        self.assertEqual(self.load_error(json.dumps(big)), (413, "M_TOO_LARGE"))
        self.assertEqual(self.load_error(big), (413, "M_TOO_LARGE"))

    def test_filter_ids(self) -> None:
        """Filter IDs are 1 to 15 ASCII digits."""
        self.assertTrue(is_filter_id("0"))
        self.assertTrue(is_filter_id("9" * MAX_FILTER_ID_DIGITS))
        for value in ("", "9" * (MAX_FILTER_ID_DIGITS + 1), "١٢", "1a", " 1"):
            self.assertFalse(is_filter_id(value), value)
