"""Fuzzes the WebSocket sync push endpoint (``/_sc/client/v1/sync/ws``, docs/websocket.md) at the frame level.

A raw RFC 6455 client (sockets, no library checks in the way) sends Hypothesis-drawn frame
sequences: binary frames, text that is not JSON or not UTF-8, JSON of the wrong shape, unknown
frame types, acks out of turn, messages over ``max_frame_size``, fragmented messages (valid and
broken), control frames interleaved or oversized, reserved opcodes and bits, unmasked frames. Each
sequence ends with a valid ``auth`` frame, so every connection must end in one of the documented
ways: ``ready`` (the garbage was ignored, as unknown frame types must be), or a close whose code
the documentation lists, an application close (``4xxx``) preceded by an ``error`` frame with an
``errcode``. Afterwards the server must still be running and serve HTTP and a normal WebSocket
session. Derandomised like the API fuzz (profile ``sc-fuzz``).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.common import ServerProcess, http_json
from tests.integration.conftest import ServerFactory
from tests.integration.fuzzing import FuzzSession
from tests.integration.test_fuzz_api import FUZZ_OVERRIDES, FUZZ_SETTINGS

pytestmark = pytest.mark.integration

WS_PATH = "/_sc/client/v1/sync/ws"
MAX_FRAME = 64 * 1024  # websocket.max_frame_size default
READ_TIMEOUT_S = 10.0
EXAMPLES = int(os.environ.get("SC_FUZZ_WS_EXAMPLES", "60"))
# Close codes docs/websocket.md lists, plus RFC 6455's for broken framing (1002), bad UTF-8 (1007).
DOCUMENTED_CLOSES = frozenset({1000, 1002, 1007, 1009, 4400, 4401, 4403, 4408, 4429})
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass(frozen=True)
class Frame:
    """One raw frame as sent: ``rsv`` is the three reserved bits, ``masked`` must be True for clients."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = True

    def encode(self) -> bytes:
        head = bytes([(0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode])
        length = len(self.payload)
        mask_bit = 0x80 if self.masked else 0
        if length < 126:
            head += bytes([mask_bit | length])
        elif length < 65536:
            head += bytes([mask_bit | 126]) + struct.pack("!H", length)
        else:
            head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
        if not self.masked:
            return head + self.payload
        key = b"\x11\x22\x33\x44"
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(self.payload))


class RawWebSocket:
    """A blocking client: the upgrade, raw frames out, parsed frames in."""

    def __init__(self, server: ServerProcess) -> None:
        port = int(server.base_url.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (f"GET {WS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the upgrade")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n")[0]
        if b" 101 " not in status:
            raise ConnectionError(f"upgrade refused: {status!r}")

    def send(self, *frames: Frame) -> None:
        try:
            self.sock.sendall(b"".join(f.encode() for f in frames))
        except OSError:
            pass  # the server may already have closed on an earlier frame

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def next_frame(self) -> tuple[int, bytes]:
        """The next frame from the server (its opcode and payload); EOFError when the TCP connection ends."""
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        return first & 0x0F, self._read(length)

    def close(self) -> None:
        self.sock.close()


def text(payload: bytes | str, **kw: object) -> Frame:
    return Frame(OP_TEXT, payload.encode() if isinstance(payload, str) else payload, **kw)  # type: ignore[arg-type]


def fragmented(message: bytes, parts: int) -> list[Frame]:
    """``message`` as one text frame followed by continuation frames."""
    size = max(1, len(message) // parts)
    chunks = [message[i : i + size] for i in range(0, len(message), size)] or [b""]
    frames = [Frame(OP_TEXT if i == 0 else OP_CONT, c, fin=False) for i, c in enumerate(chunks)]
    frames[-1] = Frame(frames[-1].opcode, frames[-1].payload, fin=True)
    return frames


def frame_sequences(token: str) -> st.SearchStrategy[list[Frame]]:
    """Lists of 1-3 hostile "steps", each one or a few frames."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=6,
    )
    shapes = st.one_of(
        st.fixed_dictionaries({"type": st.text(max_size=12)}, optional={"x": json_values}),  # unknown types
        st.fixed_dictionaries({"type": st.sampled_from(["auth", "ack"])}, optional={
            "access_token": st.one_of(json_values, st.just(token), st.just("syt_bogus")),
            "since": json_values, "filter": json_values, "next_batch": json_values,
        }),
        json_values,
    )
    step = st.one_of(
        shapes.map(lambda v: [text(json.dumps(v))]),
        st.binary(max_size=64).map(lambda b: [Frame(OP_BINARY, b)]),
        st.text(max_size=40).map(lambda s: [text("{" + s)]),  # not JSON
        st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b'{"type": "\xe2\x82"}']).map(lambda b: [text(b)]),
        st.just([text(b'{"type": "x", "pad": "' + b"p" * (MAX_FRAME + 10) + b'"}')]),  # over the limit
        st.integers(2, 5).map(lambda n: fragmented(b'{"type": "hello", "n": 1}', n)),  # valid fragments
        st.integers(2, 5).map(lambda n: fragmented(b'{"type": "x", "pad": "' + b"q" * MAX_FRAME + b'"}', n)),
        st.just([Frame(OP_CONT, b"orphan")]),  # continuation with nothing to continue
        st.just([Frame(OP_TEXT, b'{"ty', fin=False), Frame(OP_PING, b"hi"), Frame(OP_CONT, b'pe": "x"}')]),
        st.just([Frame(OP_TEXT, b'{"ty', fin=False), Frame(OP_TEXT, b'pe": "x"}')]),  # new message mid-message
        st.just([Frame(OP_PING, b"p" * 126)]),  # control frame too long
        st.just([Frame(OP_PING, b"x", fin=False)]),  # fragmented control frame
        st.sampled_from([3, 7, 0xB, 0xF]).map(lambda op: [Frame(op, b"?")]),  # reserved opcodes
        st.integers(1, 7).map(lambda rsv: [Frame(OP_TEXT, b'{"type": "x"}', rsv=rsv)]),  # reserved bits
        st.just([Frame(OP_TEXT, b'{"type": "x"}', masked=False)]),  # clients must mask
        st.sampled_from([b"", b"\x03", b"\x03\xe8bye", b"\x00\x00", b"\x0f\xa0\xff"]).map(lambda p: [Frame(OP_CLOSE, p)]),
    )
    return st.lists(step, min_size=1, max_size=3).map(lambda steps: [f for s in steps for f in s])


def outcome(ws: RawWebSocket) -> tuple[str, int | None, list[dict[str, object]]]:
    """Reads until ``ready`` or a close; returns ("ready"|"closed"|"eof", close code, text frames seen)."""
    seen: list[dict[str, object]] = []
    while True:
        try:
            opcode, payload = ws.next_frame()
        except (EOFError, ConnectionResetError):
            return "eof", None, seen
        if opcode == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            return "closed", code, seen
        if opcode == OP_TEXT:
            frame = json.loads(payload)
            seen.append(frame)
            if frame.get("type") == "ready":
                return "ready", None, seen


def judge(kind: str, code: int | None, seen: list[dict[str, object]], we_closed: bool) -> str | None:
    """Why this ending breaks the documented behaviour, or None.

    After a close frame of ours (perhaps a malformed one) the server may simply drop the TCP
    connection: RFC 6455 lets an endpoint that has "failed the connection" go without a close frame.
    """
    if kind == "ready":
        return None
    if kind == "eof":
        return None if we_closed else "the TCP connection ended without a close frame"
    if code not in DOCUMENTED_CLOSES:
        return f"undocumented close code {code}"
    if code is not None and code >= 4000:
        errors = [f for f in seen if f.get("type") == "error"]
        if not errors or not isinstance(errors[-1].get("errcode"), str):
            return f"close {code} without an error frame carrying an errcode"
    return None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ws_server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> ServerProcess:
    return server_factory(db=request.param, overrides=FUZZ_OVERRIDES)


def test_frames(ws_server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    """Hostile frame sequences end in ``ready`` or a documented close; the server stays up and serves."""
    session = FuzzSession(ws_server.base_url)
    auth = text(json.dumps({"type": "auth", "access_token": session.token}))
    failures: list[str] = []
    endings: dict[str, int] = {}

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
    @given(frame_sequences(session.token))
    def one(frames: list[Frame]) -> None:
        ws = RawWebSocket(ws_server)
        try:
            ws.send(*frames, auth)
            kind, code, seen = outcome(ws)
            if kind == "ready":
                ws.send(Frame(OP_CLOSE, struct.pack("!H", 1000)))
                outcome(ws)  # the server's close (or EOF): the connection slot is released
        except TimeoutError:
            kind, code, seen = "timeout", None, []
        finally:
            ws.close()
        label = kind if code is None else f"{kind} {code}"
        endings[label] = endings.get(label, 0) + 1
        problem = "no answer within the read timeout" if kind == "timeout" else judge(kind, code, seen, any(f.opcode == OP_CLOSE for f in frames))
        if problem:
            sent = [(f.opcode, f.fin, f.rsv, f.masked, f.payload[:40]) for f in frames]
            failures.append(f"{problem}: sent {sent!r}, saw {seen!r}"[:600])

    one()
    with capsys.disabled():
        print(f"\nws-fuzz: {sum(endings.values())} connections; endings {dict(sorted(endings.items()))}")
    assert ws_server.process is not None and ws_server.process.poll() is None, "the server died"
    assert http_json("GET", ws_server.base_url + "/_matrix/client/versions")[0] == 200
    assert session.still_valid()
    ws = RawWebSocket(ws_server)  # and a normal session still works: ready, then the initial sync
    try:
        ws.send(auth)
        kind, _, _ = outcome(ws)
        assert kind == "ready"
        opcode, payload = ws.next_frame()
        assert opcode == OP_TEXT and json.loads(payload)["type"] == "sync"
    finally:
        ws.close()
    assert not failures, "\n".join(failures[:20]) + f"\n({len(failures)} failures)"
