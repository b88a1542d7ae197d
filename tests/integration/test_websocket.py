"""WebSocket sync push against a real server process, with a real autobahn (Twisted) client.

The client runs on the global reactor driven by pytest-twisted; HTTP calls (register, send) go
through ``bench.common.http_json`` in a thread so the reactor keeps reading frames meanwhile.
Covers: a message sent by another user is pushed; after a dropped TCP connection the client
resumes from its last acknowledged token and gets every message sent meanwhile exactly once; a bad
token is refused with close code 4401; the per-user and per-IP connection limits.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, threads

from bench.common import ServerProcess, http_json, register_user
from tests.integration.conftest import ServerFactory

pytestmark = pytest.mark.integration

WS_PATH = "/_sc/client/v1/sync/ws"
FRAME_TIMEOUT_S = 15.0
PASSWORD = "correct-horse-battery"


def _reactor() -> Any:
    from twisted.internet import reactor  # the global reactor pytest-twisted runs

    return reactor


class SyncClient(WebSocketClientProtocol):
    """Collects frames in a queue; ``closed`` fires with the close code."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: defer.DeferredQueue[dict[str, Any]] = defer.DeferredQueue()
        self.closed: defer.Deferred[int | None] = defer.Deferred()

    def onOpen(self) -> None:
        opened = self.factory.opened
        if not opened.called:
            opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        opened = self.factory.opened
        if not opened.called:
            opened.errback(ConnectionError(f"upgrade refused: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback(code)

    def send_json(self, frame: Any) -> None:
        self.sendMessage(json.dumps(frame).encode(), isBinary=False)

    async def next_frame(self, timeout: float = FRAME_TIMEOUT_S) -> dict[str, Any]:
        got = self.frames.get()
        got.addTimeout(timeout, _reactor())
        return await got

    async def next_sync(self) -> dict[str, Any]:
        """The next ``sync`` frame, acknowledged."""
        while True:
            frame = await self.next_frame()
            if frame["type"] == "sync":
                self.send_json({"type": "ack", "next_batch": frame["next_batch"]})
                return frame


async def connect(server: ServerProcess) -> SyncClient:
    url = server.base_url.replace("http://", "ws://") + WS_PATH
    factory = WebSocketClientFactory(url)
    factory.protocol = SyncClient
    factory.opened = defer.Deferred()
    connectWS(factory)
    factory.opened.addTimeout(FRAME_TIMEOUT_S, _reactor())
    client: SyncClient = await factory.opened
    return client


async def start(server: ServerProcess, token: str, since: str | None = None) -> SyncClient:
    """Connects, authenticates and waits for ``ready``."""
    client = await connect(server)
    frame: dict[str, Any] = {"type": "auth", "access_token": token}
    if since is not None:
        frame["since"] = since
    client.send_json(frame)
    ready = await client.next_frame()
    assert ready["type"] == "ready", ready
    return client


async def call(method: str, server: ServerProcess, path: str, body: Any = None, token: str | None = None) -> Any:
    status, answer = await threads.deferToThread(http_json, method, server.base_url + path, body, token=token)
    assert status == 200, (path, status, answer)
    return answer


async def users_in_room(server: ServerProcess) -> tuple[str, str, str]:
    """alice creates a public room, bob joins; returns (alice token, bob token, room id)."""
    suffix = uuid.uuid4().hex[:8]
    alice = await threads.deferToThread(register_user, server.base_url, f"alice{suffix}", PASSWORD)
    bob = await threads.deferToThread(register_user, server.base_url, f"bob{suffix}", PASSWORD)
    room = await call("POST", server, "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, alice["access_token"])
    await call("POST", server, f"/_matrix/client/v3/join/{room['room_id']}", {}, bob["access_token"])
    return alice["access_token"], bob["access_token"], room["room_id"]


async def say(server: ServerProcess, token: str, room_id: str, text: str) -> None:
    path = f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}"
    await call("PUT", server, path, {"msgtype": "m.text", "body": text}, token)


def texts(frame: dict[str, Any], room_id: str) -> list[str]:
    room = frame["body"]["rooms"]["join"].get(room_id, {})
    return [e["content"]["body"] for e in room.get("timeline", {}).get("events", []) if e["type"] == "m.room.message"]


async def collect(client: SyncClient, room_id: str, count: int) -> tuple[list[str], str]:
    """Acknowledges frames until ``count`` messages arrived; returns them and the last token."""
    got: list[str] = []
    token = ""
    while len(got) < count:
        frame = await client.next_sync()
        got.extend(texts(frame, room_id))
        token = frame["next_batch"]
    return got, token


class PushTests:
    @pytest_twisted.ensureDeferred
    async def test_push_drop_and_resume(self, homeserver_any_db: ServerProcess) -> None:
        """Messages are pushed; after a dropped connection, resuming from the acked token loses and
        duplicates nothing (a frame received but not acked is sent again)."""
        server = homeserver_any_db
        alice, bob, room = await users_in_room(server)
        client = await start(server, bob)
        initial = await client.next_sync()
        assert room in initial["body"]["rooms"]["join"]
        await say(server, alice, room, "m1")
        got, acked = await collect(client, room, 1)
        assert got == ["m1"]
        # Drop the TCP connection without a closing handshake, then keep talking.
        client.transport.abortConnection()
        await client.closed
        for text in ("m2", "m3", "m4"):
            await say(server, alice, room, text)
        client = await start(server, bob, since=acked)
        got, acked = await collect(client, room, 3)
        assert got == ["m2", "m3", "m4"]
        # A frame that arrives but is never acknowledged comes again after a reconnect.
        await say(server, alice, room, "m5")
        frame = await client.next_frame()
        while frame["type"] != "sync":
            frame = await client.next_frame()
        assert texts(frame, room) == ["m5"]
        client.transport.abortConnection()
        await client.closed
        client = await start(server, bob, since=acked)
        got, _ = await collect(client, room, 1)
        assert got == ["m5"]
        client.sendClose(1000)
        assert await client.closed == 1000

    @pytest_twisted.ensureDeferred
    async def test_bad_token_closes_4401(self, homeserver: ServerProcess) -> None:
        """An unknown access token gets an error frame (M_UNKNOWN_TOKEN) and close code 4401."""
        client = await connect(homeserver)
        client.send_json({"type": "auth", "access_token": "syt_not_a_token"})
        frame = await client.next_frame()
        assert (frame["type"], frame["errcode"]) == ("error", "M_UNKNOWN_TOKEN")
        assert await client.closed == 4401

    @pytest_twisted.ensureDeferred
    async def test_connection_limits(self, server_factory: ServerFactory) -> None:
        """Per user: the connection beyond the limit is closed 4429; per IP: the upgrade is refused."""
        server = server_factory(overrides={"websocket": {"max_connections_per_user": 2, "max_connections_per_ip": 3}})
        _alice, bob, _room = await users_in_room(server)
        first = [await start(server, bob), await start(server, bob)]
        third = await connect(server)
        third.send_json({"type": "auth", "access_token": bob})
        frame = await third.next_frame()
        assert frame["errcode"] == "M_LIMIT_EXCEEDED"
        assert await third.closed == 4429
        spare = await connect(server)  # the IP's third slot (the refused one was released)
        with pytest.raises(ConnectionError):
            await connect(server)
        for client in (*first, spare):
            client.sendClose(1000)
            await client.closed
