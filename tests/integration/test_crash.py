"""Crash safety on a real process (issue 12): ``kill -9`` under concurrent senders loses no acknowledged event.

Twenty senders each send numbered messages with their own transaction IDs into one room while the
server is killed with SIGKILL mid-stream. After a restart on the same database every message that was
answered 200 is in the room exactly once (by event ID and by body), and retrying every transaction ID —
answered or not — yields exactly one event per transaction (the idempotency record is durable with the
event). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bench.common import ServerProcess, http_json, register_user
from tests.integration.conftest import ServerFactory

pytestmark = pytest.mark.integration

V3 = "/_matrix/client/v3"
PASSWORD = "correct-horse-battery"
SENDERS = 20
PER_SENDER = 40


def _send(server: ServerProcess, token: str, room_id: str, sender: int, n: int) -> tuple[int, str | None]:
    path = f"{V3}/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/s{sender}-{n}"
    try:
        status, body = http_json(
            "PUT", server.base_url + path, {"msgtype": "m.text", "body": f"s{sender}-{n}"}, token=token, timeout=10
        )
    except OSError:
        return 0, None  # the server died under us: not acknowledged
    return status, body.get("event_id") if status == 200 and isinstance(body, dict) else None


def _all_bodies(server: ServerProcess, token: str, room_id: str) -> list[tuple[str, str]]:
    """Every (event_id, body) of m.room.message events, paginating backwards from the end."""
    found: list[tuple[str, str]] = []
    token_from: str | None = None
    for _ in range(500):
        query = {"dir": "b", "limit": "100"}
        if token_from is not None:
            query["from"] = token_from
        url = f"{server.base_url}{V3}/rooms/{urllib.parse.quote(room_id)}/messages?{urllib.parse.urlencode(query)}"
        status, body = http_json("GET", url, token=token)
        assert status == 200, body
        for event in body["chunk"]:
            if event["type"] == "m.room.message":
                found.append((event["event_id"], event["content"]["body"]))
        if "end" not in body:
            return found
        token_from = body["end"]
    raise AssertionError("pagination did not end")


class CrashRecoveryTests:
    @pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
    def test_kill_9_loses_no_acknowledged_event(self, server_factory: ServerFactory, db: str) -> None:
        """SIGKILL during 20 concurrent senders: every 200 survives exactly once; retries are idempotent."""
        server = server_factory(db=db)
        token = register_user(server.base_url, "alice", PASSWORD)["access_token"]
        status, created = http_json("POST", server.base_url + f"{V3}/createRoom", {}, token=token)
        assert status == 200, created
        room_id = created["room_id"]

        acked: dict[str, str] = {}  # txn -> event id
        lock = threading.Lock()
        stop = threading.Event()

        def sender(index: int) -> None:
            for n in range(PER_SENDER):
                if stop.is_set():
                    return
                code, event_id = _send(server, token, room_id, index, n)
                if code == 200 and event_id is not None:
                    with lock:
                        acked[f"s{index}-{n}"] = event_id
                elif code == 0:
                    return

        with ThreadPoolExecutor(SENDERS) as pool:
            futures = [pool.submit(sender, i) for i in range(SENDERS)]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with lock:
                    if len(acked) >= SENDERS * PER_SENDER // 3:
                        break
                time.sleep(0.01)
            server.kill()  # SIGKILL mid-stream
            stop.set()
            for future in futures:
                future.result()
        assert acked, "no message was acknowledged before the kill"
        assert len(acked) < SENDERS * PER_SENDER, "the kill came too late to test anything"

        server.exit_code = None
        server._terminated = False
        server.start()
        stored = _all_bodies(server, token, room_id)
        ids = Counter(event_id for event_id, _ in stored)
        bodies = Counter(body for _, body in stored)
        assert all(count == 1 for count in ids.values())
        assert all(count == 1 for count in bodies.values()), [b for b, c in bodies.items() if c > 1]
        by_body = {body: event_id for event_id, body in stored}
        for txn, event_id in acked.items():
            assert by_body.get(txn) == event_id, f"acknowledged {txn} lost or changed"

        # Retrying every transaction: acknowledged ones answer their original event, others make one event.
        retried: dict[str, Any] = {}
        for index in range(SENDERS):
            for n in range(PER_SENDER):
                code, event_id = _send(server, token, room_id, index, n)
                assert code == 200
                retried[f"s{index}-{n}"] = event_id
        for txn, event_id in acked.items():
            assert retried[txn] == event_id
        after = Counter(body for _, body in _all_bodies(server, token, room_id))
        assert set(after) == {f"s{i}-{n}" for i in range(SENDERS) for n in range(PER_SENDER)}
        assert all(count == 1 for count in after.values())
