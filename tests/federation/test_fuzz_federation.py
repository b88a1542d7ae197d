"""Fuzz of every federation route (issue 12, "the same for federation endpoints once they exist").

Server A runs the production federation wiring (tests/federation/harness.py); B is a real second
server joined to A's room, so requests from origin B pass the membership checks and reach deep into
the handlers. Hypothesis picks a registered route, fills its path parameters with valid values (the
room, its events, users of both servers, server names) or hostile ones (NUL, overlong, unicode,
wrong sigils), adds random query parameters and a JSON body (valid-looking, random or wrong type),
and sends it as B, as a stranger server, or unauthenticated. Whatever the input: no 5xx, a JSON object
answer, and an ``errcode`` on every error. The transport's own ``X-Matrix`` parsing is fuzzed in
test_transport_server.py; here requests arrive already authenticated, as the transport hands them on.
"""

from __future__ import annotations

import re
import urllib.parse

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.federation.harness import FederationTestCase

HOSTILE = st.sampled_from([
    "", "\x00", "a\x00b", "x" * 300, "$" + "e" * 300, "!room", "@", "%", "é😀", "..", "/", "$abc:evil.test",
    "!nowhere:evil.test", "@mallory:evil.test", "evil.test:99999", "[::1]:8448", "-1", "1e9999",
])  # fmt: skip
QUERY_KEYS = ("limit", "v", "event_id", "ver", "room_alias", "user_id", "field", "minimum_valid_until_ts",
              "ts", "dir", "since", "include_all_networks", "omit_members")  # fmt: skip
JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=40)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
SHAPED_KEYS = ("pdus", "edus", "origin", "origin_server_ts", "event", "room_version", "invite_room_state",
               "earliest_events", "latest_events", "limit", "server_keys", "filter", "content", "type",
               "sender", "room_id", "state_key", "auth_events", "prev_events", "depth", "signatures")  # fmt: skip
BODIES = (
    st.none()
    | JSON_VALUES
    | st.dictionaries(st.sampled_from(SHAPED_KEYS), JSON_VALUES, max_size=6)
)


class FederationEndpointFuzzTests(FederationTestCase):
    """No federation route answers 5xx or a malformed error, whatever a remote server sends."""

    def setUp(self) -> None:
        super().setUp()
        _alice, alice_token = self.user_on(self.a, "alice")
        bob, bob_token = self.user_on(self.b, "bob")
        self.room_id = self.create_room(self.a, alice_token, preset="public_chat", room_alias_name="fuzz")
        joined = self.request(
            self.b, "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(self.room_id, safe='')}"
            f"?server_name={urllib.parse.quote(self.a.name, safe='')}", {}, bob_token,
        )
        assert joined.code == 200, joined.json_body
        sent = self.request(
            self.a, "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(self.room_id, safe='')}/send/m.room.message/t1",
            {"msgtype": "m.text", "body": "hello"}, alice_token,
        )
        assert sent.code == 200, sent.json_body
        self.event_id = sent.json_body["event_id"]
        self.valid = [self.room_id, self.event_id, bob, f"@alice:{self.a.name}", self.a.name, self.b.name,
                      f"#fuzz:{self.a.name}", "txn1", "ed25519:a", "12", "m.room.message"]
        self.templates = sorted(set(self.network.routers[self.a.name].templates))
        self.seen: set[tuple[str, str]] = set()
        self.statuses: dict[int, int] = {}

    def _path(self, template: str, data: st.DataObject) -> str:
        def fill(_match: re.Match[str]) -> str:
            value = data.draw(st.sampled_from(self.valid) | HOSTILE | st.text(max_size=20))
            return urllib.parse.quote(value, safe="")

        return re.sub(r"\{[^}]+\}", fill, template)

    @settings(max_examples=400, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(data=st.data())
    def test_no_route_fails_on_hostile_input(self, data: st.DataObject) -> None:
        """Every route, every origin kind, random parameters and bodies: a 2xx/4xx JSON object answer."""
        method, template = data.draw(st.sampled_from(self.templates))
        path = self._path(template, data)
        query = data.draw(st.dictionaries(
            st.sampled_from(QUERY_KEYS),
            st.lists(st.sampled_from(self.valid) | HOSTILE | st.text(max_size=10), min_size=1, max_size=2),
            max_size=3,
        ))
        content = data.draw(BODIES) if method in ("PUT", "POST") else None
        origin = data.draw(st.sampled_from([self.b.name, self.b.name, "stranger.test:8448", None]))
        status, body = self.federation(origin, self.a, method, path, content, query)  # type: ignore[arg-type]  # None: unauthenticated
        self.seen.add((method, template))
        self.statuses[status] = self.statuses.get(status, 0) + 1
        assert status < 500, (method, path, query, content, origin, status, body)
        assert isinstance(body, dict), (method, path, body)
        if status >= 400:
            assert isinstance(body.get("errcode"), str), (method, path, status, body)

    def tearDown(self) -> None:
        if self.seen:
            print(f"federation fuzz: {len(self.seen)}/{len(self.templates)} routes, statuses {dict(sorted(self.statuses.items()))}")
        super().tearDown()
