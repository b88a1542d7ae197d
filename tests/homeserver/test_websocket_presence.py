"""A WebSocket push session counts as syncing for presence exactly like a long-polling ``/sync``: the
user is online while connected and goes offline the usual timeout after the connection ends
(ADR 0008; fake clock, both databases)."""

from __future__ import annotations

from homeserver.rest.client.sync_websocket import PushSession
from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_presence import PresenceTestCase
from tests.homeserver.test_websocket import FakeSink, SessionTestCase
from tests.unittest import override_config

CAROL = f"@carol:{TEST_SERVER_NAME}"


class WebSocketPresenceTests(SessionTestCase, PresenceTestCase):
    """Carol shares a room with Bob (who reads her presence) and has gone offline since joining it."""

    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.join(self.room, self.carol)
        self.advance(40)
        self.assertEqual(self.presence(), "offline")

    def advance_acking(self, session: PushSession, sink: FakeSink, seconds: float) -> None:
        """Advances the clock in sweep-sized steps, acknowledging every frame like a live client."""
        for _ in range(int(seconds)):
            self.advance(1)
            frames = sink.of_type("sync")
            if frames and session.last_acked != frames[-1]["next_batch"]:
                self.ack(session, sink)

    def presence(self) -> str:
        state: str = self.presence_of(CAROL, self.bob)["presence"]
        return state

    def test_connected_client_stays_online(self) -> None:
        """A WebSocket-only client is online on connecting and stays online well past 30 s."""
        session, sink = self.open(self.carol)
        self.assertEqual(session.state, "streaming")
        self.assertEqual(self.presence(), "online")
        self.advance_acking(session, sink, 150)
        self.assertEqual(session.state, "streaming")
        self.assertEqual(self.presence(), "online")

    def test_offline_after_disconnect_and_timeout(self) -> None:
        """After the connection closes, the user goes offline once the offline timeout (30 s) passed."""
        session, sink = self.open(self.carol)
        self.advance_acking(session, sink, 45)
        session.closed()
        self.advance(25)
        self.assertEqual(self.presence(), "online")
        self.advance(10)
        self.assertEqual(self.presence(), "offline")

    def test_error_close_ends_the_sync(self) -> None:
        """A session closed by a protocol error stops counting at once (no lingering open sync)."""
        session, _sink = self.open(self.carol)
        self.frame(session, {"type": "auth", "access_token": self.carol})  # a second auth: 4400
        self.assertEqual(session.state, "closing")
        self.advance(35)
        self.assertEqual(self.presence(), "offline")

    def test_refused_session_does_not_mark_online(self) -> None:
        """A connection that never authenticates does not make anyone online."""
        session, sink = self.open()
        self.frame(session, {"type": "auth", "access_token": "nope"})
        self.assertIsNotNone(sink.closed)
        self.assertEqual(self.presence(), "offline")

    @override_config({"presence": {"enabled": False}})
    def test_presence_disabled(self) -> None:
        """With presence disabled a session still streams and nothing is tracked."""
        session, _sink = self.open(self.carol)
        self.assertEqual(session.state, "streaming")
        self.assertEqual(self.presence(), "offline")
