"""VoIP: the ``calls:`` config, TURN credentials and call signalling events (both databases)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import unittest
from typing import Any

from homeserver.calls.turn import TurnCredentialIssuer, turn_password, turn_username
from homeserver.config.calls import CallsConfig
from homeserver.config.errors import ConfigError
from homeserver.config.loader import parse_config
from tests.homeserver.test_rooms_core import V3, RoomsTestCase
from tests.unittest import override_config

SECRET = "s3cr3t-turn-shared-key"
TURN = {
    "calls": {
        "turn_uris": ["turn:turn.test:3478?transport=udp", "turns:turn.test:5349?transport=tcp"],
        "turn_shared_secret": SECRET,
        "turn_user_lifetime_s": 3600,
    }
}
CALL_TYPES = (
    "m.call.invite", "m.call.candidates", "m.call.answer", "m.call.select_answer",
    "m.call.negotiate", "m.call.hangup", "m.call.reject",
)


def parse(calls: Any) -> CallsConfig:
    return parse_config({"server": {"server_name": "test"}, "calls": calls}, "/tmp").calls


class CallsConfigTests(unittest.TestCase):
    def test_defaults(self) -> None:
        """Without a calls section TURN is off; lifetime 86400 s; guests allowed."""
        config = parse_config({"server": {"server_name": "test"}}, "/tmp").calls
        self.assertEqual(config, CallsConfig())
        self.assertEqual((config.turn_uris, config.turn_shared_secret), ((), None))
        self.assertEqual(config.turn_user_lifetime_s, 86400)
        self.assertTrue(config.turn_allow_guests)
        self.assertFalse(config.turn_enabled)

    def test_option_names(self) -> None:
        config = parse({"turn_uris": ["turn:a.test"], "turn_shared_secret": "x", "turn_user_lifetime_s": 600,
                        "turn_allow_guests": False})
        self.assertEqual(config.turn_uris, ("turn:a.test",))
        self.assertEqual(config.turn_shared_secret, "x")
        self.assertEqual(config.turn_user_lifetime_s, 600)
        self.assertFalse(config.turn_allow_guests)
        self.assertTrue(config.turn_enabled)

    def test_bad_values(self) -> None:
        """Unknown keys, bad URIs, bad lifetimes and non-string secrets name their YAML path."""
        for calls, path in (
            ({"turn_url": ["turn:a"]}, "calls"),
            ({"turn_uris": "turn:a.test"}, "calls.turn_uris"),
            ({"turn_uris": ["http://a.test"]}, "calls.turn_uris[0]"),
            ({"turn_uris": ["turn:"]}, "calls.turn_uris[0]"),
            ({"turn_user_lifetime_s": 0}, "calls.turn_user_lifetime_s"),
            ({"turn_user_lifetime_s": "1h"}, "calls.turn_user_lifetime_s"),
            ({"turn_shared_secret": 5}, "calls.turn_shared_secret"),
            ({"turn_shared_secret": ""}, "calls.turn_shared_secret"),
            ({"turn_allow_guests": "yes"}, "calls.turn_allow_guests"),
        ):
            with self.assertRaises(ConfigError) as ctx:
                parse(calls)
            self.assertIn(path, str(ctx.exception), calls)

    def test_secret_never_shown(self) -> None:
        """The secret is hidden from repr and from error messages."""
        config = parse({"turn_shared_secret": SECRET})
        self.assertNotIn(SECRET, repr(config))
        with self.assertRaises(ConfigError) as ctx:
            parse({"turn_shared_secret": ["not", SECRET]})
        self.assertNotIn(SECRET, str(ctx.exception))


class TurnCredentialTests(unittest.TestCase):
    def test_coturn_scheme(self) -> None:
        """username '<expiry>:<user>', password base64(HMAC-SHA1(secret, username))."""
        username = turn_username("@alice:test:8448", 1_700_000_000_999, 86400)
        self.assertEqual(username, "1700086400:@alice:test:8448")
        expected = base64.b64encode(hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()
        self.assertEqual(turn_password(SECRET, username), expected)
        # A known vector: HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog").
        self.assertEqual(
            base64.b64decode(turn_password("key", "The quick brown fox jumps over the lazy dog")).hex(),
            "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9",
        )

    def test_issuer(self) -> None:
        config = CallsConfig(turn_uris=("turn:a.test",), turn_shared_secret=SECRET, turn_allow_guests=False)
        issuer = TurnCredentialIssuer(config, lambda: 5_000)
        creds = issuer.issue("@a:test:8448", is_guest=False)
        assert creds is not None
        self.assertEqual(creds.to_json()["username"], "86405:@a:test:8448")
        self.assertNotIn(creds.password, repr(creds))
        with self.assertRaises(Exception) as ctx:
            issuer.issue("@g:test:8448", is_guest=True)
        self.assertEqual(getattr(ctx.exception, "http_status", None), 403)
        self.assertIsNone(TurnCredentialIssuer(CallsConfig(turn_uris=("turn:a",)), lambda: 0).issue("@a:test:8448", False))
        self.assertIsNone(TurnCredentialIssuer(CallsConfig(turn_shared_secret="x"), lambda: 0).issue("@a:test:8448", False))


class TurnServerEndpointTests(RoomsTestCase):
    def guest_token(self) -> str:
        self.get_success(self.hs.stores.users.create_user("@guest1:test:8448", None, 0, is_guest=True))
        result = self.get_success(self.hs.sessions.create_session(
            "@guest1:test:8448", device_id=None, display_name=None, want_refresh=False, ip=None, user_agent=None
        ))
        return str(result.access_token)

    def test_not_configured_is_404(self) -> None:
        """Without TURN the answer is 404 M_NOT_FOUND, not a 200 lacking the spec's required fields (issue 12)."""
        channel = self.make_request("GET", f"{V3}/voip/turnServer", access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))
        self.assertIsInstance(channel.json_body["error"], str)

    def test_requires_auth(self) -> None:
        self.assertEqual(self.make_request("GET", f"{V3}/voip/turnServer").code, 401)

    @override_config(TURN)
    def test_credentials(self) -> None:
        """The response has username, password, uris and ttl; the secret is neither returned nor logged."""
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.DEBUG)
        handler.emit = records.append  # type: ignore[method-assign]  # capture everything
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        try:
            channel = self.make_request("GET", f"{V3}/voip/turnServer", access_token=self.alice)
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
        self.assertEqual(channel.code, 200, channel.json_body)
        body = channel.json_body
        self.assertEqual(set(body), {"username", "password", "uris", "ttl"})
        self.assertEqual(body["uris"], TURN["calls"]["turn_uris"])
        self.assertEqual(body["ttl"], 3600)
        expiry, user = body["username"].split(":", 1)
        self.assertEqual(user, "@alice:test:8448")
        self.assertEqual(int(expiry), self.clock.time_msec() // 1000 + 3600)
        self.assertEqual(body["password"], turn_password(SECRET, body["username"]))
        self.assertNotIn(SECRET, channel.text_body)
        for record in records:
            self.assertNotIn(SECRET, record.getMessage())
            self.assertNotIn(body["password"], record.getMessage())

    @override_config(TURN)
    def test_guests_allowed_by_default(self) -> None:
        channel = self.make_request("GET", f"{V3}/voip/turnServer", access_token=self.guest_token())
        self.assertEqual(channel.code, 200)
        self.assertTrue(channel.json_body["username"].endswith(":@guest1:test:8448"))

    @override_config({"calls": {**TURN["calls"], "turn_allow_guests": False}})
    def test_guests_refused_when_disallowed(self) -> None:
        channel = self.make_request("GET", f"{V3}/voip/turnServer", access_token=self.guest_token())
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))


class CallSignallingTests(RoomsTestCase):
    def call_content(self, etype: str) -> dict[str, Any]:
        content: dict[str, Any] = {"call_id": "c1", "party_id": "p1", "version": "1"}
        if etype == "m.call.invite":
            content.update(lifetime=60000, offer={"type": "offer", "sdp": "v=0"})
        elif etype == "m.call.candidates":
            content["candidates"] = [{"candidate": "candidate:1 1 UDP 1 10.0.0.1 1 typ host", "sdpMid": "0"}]
        elif etype in ("m.call.answer", "m.call.negotiate"):
            content.update(answer={"type": "answer", "sdp": "v=0"}, description={"type": "offer", "sdp": "v=0"},
                           lifetime=10000)
        elif etype == "m.call.select_answer":
            content["selected_party_id"] = "p2"
        elif etype == "m.call.hangup":
            content["reason"] = "user_hangup"
        return content

    def test_call_events_are_stored_and_returned_in_order(self) -> None:
        """Every m.call.* event is stored as sent and /messages returns them in sending order."""
        room_id = self.create_room(preset="trusted_private_chat", invite=["@bob:test:8448"])
        self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob)
        sent = []
        for i, etype in enumerate(CALL_TYPES):
            token = self.alice if i % 2 == 0 else self.bob
            channel = self.send(room_id, self.call_content(etype), token, txn=f"call{i}", etype=etype)
            self.assertEqual(channel.code, 200, (etype, channel.json_body))
            sent.append(channel.json_body["event_id"])
        stored = [t for t, _ in self.room_events(room_id) if t.startswith("m.call.")]
        self.assertEqual(stored, list(CALL_TYPES))
        messages = self.make_request("GET", f"{V3}/rooms/{room_id}/messages?dir=f&limit=50", access_token=self.bob)
        self.assertEqual(messages.code, 200, messages.json_body)
        calls = [e for e in messages.json_body["chunk"] if e["type"].startswith("m.call.")]
        self.assertEqual([e["event_id"] for e in calls], sent)
        self.assertEqual([e["type"] for e in calls], list(CALL_TYPES))
        self.assertEqual(calls[0]["content"]["offer"], {"type": "offer", "sdp": "v=0"})

    def test_non_members_cannot_signal(self) -> None:
        """A user outside the room cannot send call events; nothing is stored."""
        room_id = self.create_room()
        before = self.room_events(room_id)
        for i, etype in enumerate(CALL_TYPES):
            channel = self.send(room_id, self.call_content(etype), self.bob, txn=f"x{i}", etype=etype)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"), etype)
        self.assertEqual(self.room_events(room_id), before)

    def test_left_member_cannot_signal(self) -> None:
        room_id = self.create_room(preset="public_chat")
        self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob)
        self.assertEqual(self.send(room_id, self.call_content("m.call.invite"), self.bob, etype="m.call.invite").code, 200)
        self.make_request("POST", f"{V3}/rooms/{room_id}/leave", {}, access_token=self.bob)
        channel = self.send(room_id, self.call_content("m.call.hangup"), self.bob, txn="t2", etype="m.call.hangup")
        self.assertEqual(channel.code, 403)
