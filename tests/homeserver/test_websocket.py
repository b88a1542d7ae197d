"""WebSocket sync push (``/_sc/client/v1/sync/ws``): the session state machine over the real sync
engine, and the autobahn endpoint over an in-memory connection (both databases, fake clock)."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.test import iosim

from homeserver.app.feature_websocket import TOKEN_RECHECK_S, token_authenticator
from homeserver.http.server import JsonResource
from homeserver.rest.client.sync_websocket import (
    CLOSE_AUTH_FAILED,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SHUTDOWN,
    CLOSE_TIMEOUT,
    CLOSE_TOO_MANY,
    WS_PATH,
    ConnectionLimits,
    PushSession,
    PushSettings,
    ReactorTimer,
    SyncPushEndpoint,
    sync_body_is_empty,
)
from homeserver.streams.tokens import StreamToken
from homeserver.sync.filter_loading import FilterLoader
from tests.homeserver.test_sync import SyncTestCase
from tests.unittest import override_config

SETTINGS = PushSettings(auth_timeout_s=10.0, idle_timeout_s=60.0, token_recheck_s=TOKEN_RECHECK_S)


class FakeSink:
    """Collects what a session sends."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def send_frame(self, frame: dict[str, Any]) -> None:
        assert self.closed is None, "frame sent after close"
        self.frames.append(json.loads(json.dumps(frame)))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]


def _bodies(frame: dict[str, Any], room_id: str) -> list[str]:
    events = frame["body"]["rooms"]["join"].get(room_id, {}).get("timeline", {}).get("events", [])
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


class SessionTestCase(SyncTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.limits = ConnectionLimits(per_user=10, per_ip=100)
        self.room = self.create_room(preset="public_chat")
        self.join(self.room, self.bob)

    def open(self, token: str | None = None, *, since: str | None = None, flt: Any = None,
             settings: PushSettings = SETTINGS, limits: ConnectionLimits | None = None) -> tuple[PushSession, FakeSink]:
        sink = FakeSink()
        session = PushSession(
            sink, self.hs.sync.engine, token_authenticator(self.hs.authenticator),
            FilterLoader(self.hs.stores.filters).load, limits or self.limits, self.hs.clock, settings, "10.1.1.1",
        )
        session.opened()
        if token is not None:
            frame: dict[str, Any] = {"type": "auth", "access_token": token}
            if since is not None:
                frame["since"] = since
            if flt is not None:
                frame["filter"] = flt
            self.frame(session, frame)
        self.addCleanup(session.closed)
        return session, sink

    def frame(self, session: PushSession, frame: Any) -> None:
        session.message_received(json.dumps(frame).encode(), False)
        self.pump()

    def ack(self, session: PushSession, sink: FakeSink) -> None:
        self.frame(session, {"type": "ack", "next_batch": sink.of_type("sync")[-1]["next_batch"]})

    def current(self) -> str:
        return self.sync(self.bob)["next_batch"]  # type: ignore[no-any-return]


class StreamingTests(SessionTestCase):
    def test_initial_frame_then_ready(self) -> None:
        """Without ``since`` the first frame is the initial sync (the room is in it) after a ``ready`` frame."""
        session, sink = self.open(self.bob)
        self.assertEqual(sink.frames[0], {"type": "ready", "user_id": "@bob:test:8448", "device_id": session.device_id})
        (frame,) = sink.of_type("sync")
        self.assertIn(self.room, frame["body"]["rooms"]["join"])
        self.assertEqual(frame["next_batch"], frame["body"]["next_batch"])
        StreamToken.decode(frame["next_batch"], StreamToken())

    def test_frame_body_is_exactly_the_incremental_sync_body(self) -> None:
        """A pushed frame's body equals GET /sync?since= with the same token (same engine, same tokens)."""
        since = self.current()
        _session, sink = self.open(self.bob, since=since)
        self.assertEqual(sink.of_type("sync"), [])  # nothing new yet: the session long-polls
        self.say(self.room, self.alice, "one")
        (frame,) = sink.of_type("sync")
        self.assertEqual(_bodies(frame, self.room), ["one"])
        self.assertEqual(frame["body"], self.sync(self.bob, since=since))

    def test_unacknowledged_frame_collapses_later_changes(self) -> None:
        """While a frame is unacked nothing is sent or registered; the ack brings one frame with everything."""
        session, sink = self.open(self.bob, since=self.current())
        self.say(self.room, self.alice, "one")
        self.assertEqual(len(sink.of_type("sync")), 1)
        waiters_before = self.hs.rooms.notifier.waiter_count()
        for text in ("two", "three", "four"):
            self.say(self.room, self.alice, text)
        self.assertEqual(len(sink.of_type("sync")), 1)
        self.assertEqual(self.hs.rooms.notifier.waiter_count(), waiters_before)
        self.ack(session, sink)
        frames = sink.of_type("sync")
        self.assertEqual(len(frames), 2)
        self.assertEqual(_bodies(frames[1], self.room), ["two", "three", "four"])

    def test_backed_up_transport_collapses(self) -> None:
        """While the transport is paused no frame is computed; resuming sends one frame with all changes."""
        session, sink = self.open(self.bob, since=self.current())
        self.say(self.room, self.alice, "one")
        session.pause_writing()
        self.ack(session, sink)
        self.say(self.room, self.alice, "two")
        self.say(self.room, self.alice, "three")
        self.assertEqual(len(sink.of_type("sync")), 1)
        session.resume_writing()
        self.pump()
        self.assertEqual(_bodies(sink.of_type("sync")[-1], self.room), ["two", "three"])

    def test_resume_from_acked_token_loses_and_duplicates_nothing(self) -> None:
        """Reconnecting with the last acked token yields exactly the events sent meanwhile."""
        session, sink = self.open(self.bob, since=self.current())
        self.say(self.room, self.alice, "one")
        self.ack(session, sink)
        acked = sink.of_type("sync")[-1]["next_batch"]
        self.say(self.room, self.alice, "two")  # sent but never acknowledged
        session.closed()
        self.say(self.room, self.alice, "three")
        _again, sink2 = self.open(self.bob, since=acked)
        (frame,) = sink2.of_type("sync")
        self.assertEqual(_bodies(frame, self.room), ["two", "three"])

    def test_filter_applies(self) -> None:
        """An inline filter (object or JSON string) and a stored filter ID shape the frames."""
        flt = {"room": {"timeline": {"not_types": ["m.room.message"]}}}
        channel = self.make_request("POST", "/_matrix/client/v3/user/@bob:test:8448/filter", flt, access_token=self.bob)
        for raw in (flt, json.dumps(flt), channel.json_body["filter_id"]):
            since = self.current()
            session, sink = self.open(self.bob, since=since, flt=raw)
            self.say(self.room, self.alice, "hidden")
            self.state(self.room, self.alice, "m.room.topic", {"topic": "shown"})
            (frame,) = sink.of_type("sync")
            types = [e["type"] for e in frame["body"]["rooms"]["join"][self.room]["timeline"]["events"]]
            self.assertEqual(types, ["m.room.topic"], raw)
            session.closed()

    def test_empty_body_detection(self) -> None:
        """Empty sections are empty; any event, device-list change or extension key is not."""
        empty = {"next_batch": "x", "rooms": {"join": {}, "invite": {}, "leave": {}, "knock": {}},
                 "account_data": {"events": []}, "presence": {"events": []}, "to_device": {"events": []},
                 "device_lists": {"changed": [], "left": []}, "device_one_time_keys_count": {"signed_curve25519": 5}}
        self.assertTrue(sync_body_is_empty(empty))
        for change in ({"presence": {"events": [{}]}}, {"device_lists": {"changed": ["@a:b"], "left": []}},
                       {"rooms": {"join": {"!r": {}}}}, {"io.sc.drive": {"changed": 1}}):
            self.assertFalse(sync_body_is_empty({**empty, **change}), change)


class ProtocolErrorTests(SessionTestCase):
    def assert_closed(self, sink: FakeSink, code: int, errcode: str) -> None:
        self.assertEqual(sink.closed, (code, errcode))
        self.assertEqual(sink.frames[-1]["type"], "error")
        self.assertEqual(sink.frames[-1]["errcode"], errcode)

    def test_bad_frames(self) -> None:
        """Binary, non-JSON, non-object and type-less frames close with 4400."""
        for payload, binary in ((b"{}", True), (b"not json", False), (b"[1]", False), (b'{"type": 1}', False),
                                (b"\xff\xfe", False), (b"[" * 5000, False)):
            session, sink = self.open()
            session.message_received(payload, binary)
            self.assertEqual(sink.closed[0] if sink.closed else None, CLOSE_PROTOCOL_ERROR, payload[:20])

    def test_unknown_frame_type_is_ignored(self) -> None:
        """Frames of unknown types are ignored (forward compatibility)."""
        session, sink = self.open()
        self.frame(session, {"type": "io.example.future"})
        self.assertIsNone(sink.closed)

    def test_auth_failures(self) -> None:
        """No token, a wrong token, a non-string token and an oversized token close with 4401."""
        for frame in ({"type": "auth"}, {"type": "auth", "access_token": "nope"},
                      {"type": "auth", "access_token": 5}, {"type": "auth", "access_token": "x" * 5000}):
            session, sink = self.open()
            self.frame(session, frame)
            self.assertEqual(sink.closed[0] if sink.closed else None, CLOSE_AUTH_FAILED, frame)
            self.assertIn(sink.closed[1] if sink.closed else "", ("M_MISSING_TOKEN", "M_UNKNOWN_TOKEN"))
            self.assertEqual(sink.of_type("sync"), [])

    def test_bad_since_and_filter(self) -> None:
        """A malformed since token, a bad filter or an unknown filter ID close with 4400."""
        for extra in ({"since": "garbage"}, {"since": 5}, {"filter": {"room": 5}}, {"filter": "999"},
                      {"filter": "{not json"}, {"filter": ["x"]}):
            session, sink = self.open()
            self.frame(session, {"type": "auth", "access_token": self.bob, **extra})
            self.assertEqual(sink.closed[0] if sink.closed else None, CLOSE_PROTOCOL_ERROR, extra)

    def test_second_auth_and_stray_acks(self) -> None:
        """A second auth frame, an ack with nothing outstanding and an ack naming another token: 4400."""
        session, sink = self.open(self.bob)
        self.frame(session, {"type": "auth", "access_token": self.bob})
        self.assert_closed(sink, CLOSE_PROTOCOL_ERROR, "M_BAD_JSON")
        session, sink = self.open(self.bob, since=self.current())
        self.frame(session, {"type": "ack", "next_batch": "sc1_e1"})
        self.assert_closed(sink, CLOSE_PROTOCOL_ERROR, "M_BAD_JSON")
        session, sink = self.open(self.bob)
        self.frame(session, {"type": "ack", "next_batch": "sc1_e1"})
        self.assert_closed(sink, CLOSE_PROTOCOL_ERROR, "M_INVALID_PARAM")

    def test_ack_before_auth(self) -> None:
        """An ack before authenticating closes with 4400."""
        session, sink = self.open()
        self.frame(session, {"type": "ack", "next_batch": "sc1_e1"})
        self.assert_closed(sink, CLOSE_PROTOCOL_ERROR, "M_BAD_JSON")


class TimerAndLimitTests(SessionTestCase):
    def test_auth_timeout(self) -> None:
        """No auth frame within auth_timeout_s closes with 4408."""
        _session, sink = self.open()
        self.reactor.advance(9)
        self.assertIsNone(sink.closed)
        self.reactor.advance(2)
        self.assertEqual(sink.closed, (CLOSE_TIMEOUT, "M_UNKNOWN"))

    def test_ack_timeout(self) -> None:
        """A sync frame unacknowledged for idle_timeout_s closes with 4408; acks keep it open."""
        session, sink = self.open(self.bob)
        self.reactor.advance(50)
        self.ack(session, sink)
        self.say(self.room, self.alice)
        self.reactor.advance(50)
        self.assertIsNone(sink.closed)
        self.reactor.advance(11)
        self.assertEqual(sink.closed, (CLOSE_TIMEOUT, "M_UNKNOWN"))

    def test_idle_stream_stays_open_and_rechecks_token(self) -> None:
        """A quiet, acked stream stays open across long-poll rounds; logging out closes it with 4401."""
        session, sink = self.open(self.bob, since=self.current())
        for _ in range(6):
            self.reactor.advance(TOKEN_RECHECK_S / 2)
            if sink.of_type("sync") and sink.of_type("sync")[-1]["next_batch"] != session.last_acked:
                self.ack(session, sink)  # e.g. presence going idle: acked like any frame
        self.assertIsNone(sink.closed)
        self.assertEqual(self.hs.rooms.notifier.waiter_count(), 1)
        channel = self.make_request("POST", "/_matrix/client/v3/logout", {}, access_token=self.bob)
        self.assertEqual(channel.code, 200)
        self.reactor.advance(TOKEN_RECHECK_S + 1)
        self.assertEqual(sink.closed, (CLOSE_AUTH_FAILED, "M_UNKNOWN_TOKEN"))

    def test_per_user_limit_refuses_new(self) -> None:
        """Beyond max_connections_per_user the new connection is closed with 4429; the old ones stay."""
        limits = ConnectionLimits(per_user=2, per_ip=100)
        first = [self.open(self.bob, limits=limits) for _ in range(2)]
        _refused, sink = self.open(self.bob, limits=limits)
        self.assertEqual(sink.closed, (CLOSE_TOO_MANY, "M_LIMIT_EXCEEDED"))
        self.assertTrue(all(s.closed is None for _, s in first))
        _alice_session, alice_sink = self.open(self.alice, limits=limits)
        self.assertIsNone(alice_sink.closed)
        first[0][0].closed()
        _session, sink = self.open(self.bob, limits=limits)
        self.assertIsNone(sink.closed)
        self.assertEqual(limits.user_count("@bob:test:8448"), 2)

    def test_notifier_registrations_never_leak(self) -> None:
        """RACE-1/2: many sessions opening and closing in any order leave at most one waiter each, none after."""
        notifier = self.hs.rooms.notifier
        self.assertEqual(notifier.waiter_count(), 0)
        tokens = [self.login("bob")["access_token"] for _ in range(5)]
        since = self.current()
        sessions = []
        for i in range(40):
            session, sink = self.open(tokens[i % 5], since=since, limits=ConnectionLimits(100, 100))
            sessions.append((session, sink))
            if i % 3 == 0:
                session.closed()  # closed while long-polling
            if i % 7 == 0:
                unauth, _ = self.open()  # never authenticates
                unauth.closed()
        live = [s for s in sessions if s[0].state == "streaming"]
        self.assertLessEqual(notifier.waiter_count(), len(live))
        self.say(self.room, self.alice, "wake")
        self.assertTrue(all(len(sink.of_type("sync")) == 1 for _, sink in live))
        self.assertEqual(notifier.waiter_count(), 0)  # every live session waits for its ack
        for session, sink in live[::2]:
            self.ack(session, sink)
        self.assertLessEqual(notifier.waiter_count(), len(live[::2]))
        for session, _ in sessions:
            session.closed()
        self.assertEqual(notifier.waiter_count(), 0)
        self.assertEqual(self.limits.user_count("@bob:test:8448"), 0)


# --------------------------------------------------------------------------- the autobahn endpoint


class _Client(WebSocketClientProtocol):
    def onConnect(self, response: Any) -> None:
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.append(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code = code

    def send_json(self, frame: Any) -> None:
        self.sendMessage(json.dumps(frame).encode(), isBinary=False)


class EndpointTests(SyncTestCase):
    def connect(self, ip: str = "10.2.2.2") -> tuple[_Client, iosim.IOPump]:
        address = IPv4Address("TCP", ip, 40000)
        server = self.hs.site.buildProtocol(address)
        factory = WebSocketClientFactory(f"ws://test{WS_PATH}", reactor=self.reactor)
        factory._batched_timer = ReactorTimer(self.reactor)
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, serverConnectionDropTimeout=0)
        factory.protocol = _Client
        client = factory.buildProtocol(address)
        pump = iosim.connect(
            server, iosim.FakeTransport(server, True, peerAddress=address),
            client, iosim.FakeTransport(client, False), clock=self.reactor,
        )
        return client, pump

    def test_push_ack_and_close(self) -> None:
        """A real autobahn client authenticates, receives frames, acks, and closing frees everything."""
        room = self.create_room(preset="public_chat")
        before = self.hs.site.open_connections
        client, pump = self.connect()
        # Once upgraded, the HTTP site forgets the connection (its channel and request are freed).
        self.assertEqual(self.hs.site.open_connections, before)
        self.assertEqual(len(self.hs.features.get(SyncPushEndpoint).connections), 1)
        client.send_json({"type": "auth", "access_token": self.alice})
        pump.flush()
        self.assertEqual([f["type"] for f in client.frames], ["ready", "sync"])
        client.send_json({"type": "ack", "next_batch": client.frames[-1]["next_batch"]})
        pump.flush()
        self.say(room, self.alice, "pushed")
        pump.flush()
        self.assertEqual(_bodies(client.frames[-1], room), ["pushed"])
        self.assertEqual(self.hs.features.get(SyncPushEndpoint).limits.ip_count("10.2.2.2"), 1)
        client.sendClose(1000)
        pump.flush()
        self.assertEqual(client.close_code, 1000)
        self.assertEqual(self.hs.rooms.notifier.waiter_count(), 0)
        self.assertEqual(self.hs.features.get(SyncPushEndpoint).limits.ip_count("10.2.2.2"), 0)
        self.assertEqual(self.hs.features.get(SyncPushEndpoint).limits.user_count("@alice:test:8448"), 0)
        self.assertEqual(len(self.hs.features.get(SyncPushEndpoint).connections), 0)

    def test_dropped_tcp_connection_cleans_up(self) -> None:
        """A connection lost without a closing handshake unregisters its waiter and frees its slots."""
        client, pump = self.connect()
        client.send_json({"type": "auth", "access_token": self.alice})
        pump.flush()
        client.send_json({"type": "ack", "next_batch": client.frames[-1]["next_batch"]})
        pump.flush()
        self.assertEqual(self.hs.rooms.notifier.waiter_count(), 1)
        client.transport.loseConnection()
        pump.flush()
        self.assertEqual(self.hs.rooms.notifier.waiter_count(), 0)
        self.assertEqual(self.hs.features.get(SyncPushEndpoint).limits.ip_count("10.2.2.2"), 0)
        self.assertEqual(len(self.hs.features.get(SyncPushEndpoint).connections), 0)

    def test_oversized_client_message_closes_1009(self) -> None:
        """A client message above max_frame_size closes the connection with 1009."""
        client, pump = self.connect()
        client.send_json({"type": "auth", "access_token": "x" * (70 * 1024)})
        pump.flush()
        self.assertEqual(client.close_code, 1009)

    def test_shutdown_closes_connections(self) -> None:
        """close_all (run before the reactor stops) closes every connection with 4503."""
        client, pump = self.connect()
        client.send_json({"type": "auth", "access_token": self.alice})
        pump.flush()
        done = self.hs.features.get(SyncPushEndpoint).close_all()
        pump.flush()
        self.assertEqual(client.close_code, CLOSE_SHUTDOWN)
        self.assertTrue(done.called)

    @override_config({"websocket": {"max_connections_per_ip": 1}})
    def test_per_ip_limit_refuses_upgrade(self) -> None:
        """Beyond max_connections_per_ip the upgrade is answered 429 before any WebSocket starts."""
        self.connect(ip="10.3.3.3")
        channel = self.make_request("GET", WS_PATH, headers=_UPGRADE, client_ip="10.3.3.3")
        self.assertEqual((channel.code, channel.json_body["errcode"]), (429, "M_LIMIT_EXCEEDED"))
        other, pump = self.connect(ip="10.4.4.4")
        other.send_json({"type": "auth", "access_token": self.alice})
        pump.flush()
        self.assertEqual(other.frames[0]["type"], "ready")

    def test_plain_requests_are_refused(self) -> None:
        """No upgrade: 426; POST: 405; an access_token in the URL: 400 (tokens never go in URLs)."""
        channel = self.make_request("GET", WS_PATH)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (426, "M_UNRECOGNIZED"))
        channel = self.make_request("POST", WS_PATH, {})
        self.assertEqual(channel.code, 405)
        channel = self.make_request("GET", WS_PATH + "?access_token=" + self.alice, headers=_UPGRADE)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))

    @override_config({"websocket": {"enabled": False}})
    def test_disabled(self) -> None:
        """With websocket.enabled false the path is an unknown endpoint."""
        channel = self.make_request("GET", WS_PATH, headers=_UPGRADE)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_UNRECOGNIZED"))
        self.assertIsNone(self.hs.features.find(SyncPushEndpoint))


_UPGRADE = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]


class MountTests(SyncTestCase):
    def test_mount_rejects_duplicates_and_bad_paths(self) -> None:
        """JsonResource.mount refuses relative paths, a mounted path and a routed path."""
        resource = JsonResource()
        resource.mount("/x", JsonResource())
        for path in ("/x", "relative"):
            with self.assertRaises(ValueError):
                resource.mount(path, JsonResource())
        resource.register("GET", "/y", self._handler)
        with self.assertRaises(ValueError):
            resource.mount("/y", JsonResource())

    async def _handler(self, request: Any) -> tuple[int, dict[str, Any]]:
        return 200, {}
