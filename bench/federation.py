"""Inbound federation benchmarks against any homeserver, driven by a signing fake peer (issue 13).

The peer is a minimal remote homeserver named ``127.0.0.1:<port>``: an Ed25519 key made with
``sc_proto``, an HTTPS listener on loopback (self-signed) serving ``/_matrix/key/v2/server`` so the
target can fetch and check its key, and a sink that answers the target's own ``PUT /send``.
It joins rooms on the target with ``make_join``/``send_join``, then pushes PDUs (signed, content
hashed, ``prev_events`` chained per room) in transactions of 50 — the spec's maximum; Synapse rejects
larger ones — one transaction in flight, as the spec requires of a sender.

Scenarios (figures only; nothing is asserted):

* ``one_room``: N message PDUs into one room: events/s accepted over ``/send``.
* ``many_rooms``: the peer joins R rooms (join latency p50/p95) and sends N PDUs round-robin across
  them: events/s.
* ``big_join``: a room gets M members (1 by ``send_join``, M-1 as join PDUs over ``/send``, which is
  also a state-event rate), then K further peer users join by ``make_join``/``send_join``: latency
  p50/max and the ``send_join`` response size (full state, ``omit_members`` not requested).

Each run verifies that the last PDU sent is visible to a local user through the Client-Server API.

Targets: ``--servers synapse`` starts a Synapse (``SC_TEST_SYNAPSE`` or ``.ci/install-synapse``) with
the federation test harness (tests/integration/synapse_harness.py); ``--servers ours`` starts
SecureConnect the same way; ``--url https://127.0.0.1:PORT
--server-name 127.0.0.1:PORT --token TOKEN`` measures a running server of any kind (loopback only),
whose federation must accept unverified certificates and loopback peers.

Run: ``python bench/federation.py [--servers synapse,ours] [--quick] [--scenarios one_room,many_rooms,big_join]
[--events 2000] [--rooms 100] [--members 1000] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port  # after the sys.path insert: needs the repository root
from sc_proto.crypto.keys import encode_verify_key_base64, generate_signing_key, get_key_id, get_verify_key
from sc_proto.crypto.signing import sign_json, sign_request
from sc_proto.events.builder import build_event, finalise_event
from sc_proto.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from tests.integration import synapse_harness as harness

ROOT = Path(__file__).resolve().parent.parent
Batch = list[tuple[str, str, dict[str, Any]]]  # (room ID, event ID, PDU) of one transaction
MAX_PDUS_PER_TXN = 50  # server-server API, "Transactions"
SCENARIOS = ("one_room", "many_rooms", "big_join")
TIME_LIMIT_S = 900.0


# --------------------------------------------------------------------------- the fake peer


@dataclass
class PeerRoom:
    """What the peer knows of one room on the target: enough to build valid PDUs."""

    room_id: str
    version: RoomVersion
    state_ids: dict[tuple[str, str], str]
    last_event: str
    depth: int

    def auth_events(self, sender: str, event_type: str, state_key: str | None) -> list[str]:
        """The auth events of a new event (spec: "Auth events selection")."""
        keys = [("m.room.power_levels", ""), ("m.room.member", sender)]
        if self.version.create_event_in_auth_events:
            keys.append(("m.room.create", ""))
        if event_type == "m.room.member":
            keys.append(("m.room.join_rules", ""))
            if state_key is not None and state_key != sender:
                keys.append(("m.room.member", state_key))
        return sorted({self.state_ids[k] for k in keys if k in self.state_ids})


class _PeerHandler(BaseHTTPRequestHandler):
    """Serves the peer's key and swallows whatever the target sends it."""

    server: _PeerHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 64 * 1024 * 1024))

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/_matrix/key/v2/server"):
            self._reply(200, self.server.peer.key_document())
        elif path == "/_matrix/federation/v1/version":
            self._reply(200, {"server": {"name": "sc-bench-peer", "version": "0"}})
        else:
            self._reply(404, {"errcode": "M_NOT_FOUND", "error": "the bench peer serves keys only"})

    def do_PUT(self) -> None:
        self._drain()
        if self.path.startswith("/_matrix/federation/v1/send/"):
            self._reply(200, {"pdus": {}})
        else:
            self._reply(404, {"errcode": "M_NOT_FOUND", "error": "not served"})

    def do_POST(self) -> None:
        self._drain()
        self._reply(404, {"errcode": "M_NOT_FOUND", "error": "not served"})


class _PeerHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    peer: FakePeer


class FakePeer:
    """A signing remote homeserver on ``127.0.0.1:<port>`` that talks to one target."""

    def __init__(self, target_url: str, target_name: str, workdir: Path) -> None:
        self.port = free_port()
        self.server_name = f"127.0.0.1:{self.port}"
        self.key = generate_signing_key("bench" + secrets.token_hex(2))
        self.key_id = get_key_id(self.key)
        self.target = urllib.parse.urlsplit(target_url)
        self.target_name = target_name
        self._txn = 0
        self._conn: http.client.HTTPSConnection | None = None
        cert, key = harness.write_self_signed_certificate(workdir / "peer-tls")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._http = _PeerHttpServer(("127.0.0.1", self.port), _PeerHandler)
        self._http.peer = self
        self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        self._thread = threading.Thread(target=self._http.serve_forever, name="bench-peer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops the HTTPS listener and the outbound connection."""
        self._http.shutdown()
        self._http.server_close()
        if self._conn is not None:
            self._conn.close()

    def key_document(self) -> dict[str, Any]:
        """``GET /_matrix/key/v2/server``: our verify key, self-signed, valid for a day."""
        document = {
            "server_name": self.server_name,
            "verify_keys": {self.key_id: {"key": encode_verify_key_base64(get_verify_key(self.key))}},
            "old_verify_keys": {},
            "valid_until_ts": int(time.time() * 1000) + 86_400_000,
        }
        return sign_json(document, self.server_name, self.key)

    def user(self, localpart: str) -> str:
        """A user ID on the peer."""
        return f"@{localpart}:{self.server_name}"

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any, int]:
        """A signed federation request to the target; returns status, JSON body and body size."""
        auth = sign_request(
            method=method, uri=path, origin=self.server_name, destination=self.target_name,
            content=body, signing_key=self.key, key_id=self.key_id,
        )  # fmt: skip
        headers = {"Authorization": auth, "Content-Type": "application/json", "Connection": "keep-alive"}
        raw = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=raw, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return response.status, parsed, len(data)

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            host = self.target.hostname or "127.0.0.1"
            self._conn = http.client.HTTPSConnection(
                host, self.target.port or 8448, timeout=300, context=harness.loopback_tls_context()
            )
        return self._conn

    # ----------------------------------------------------------------------- joins and PDUs

    def join(self, room_id: str, localpart: str, known: PeerRoom | None = None) -> tuple[PeerRoom, int]:
        """Joins ``@localpart`` to ``room_id`` via make_join/send_join; returns the room and response size.

        Raises:
            RuntimeError: the target refused a step.
        """
        user_id = self.user(localpart)
        versions = "&".join(f"ver={urllib.parse.quote(v)}" for v in KNOWN_ROOM_VERSIONS)
        path = f"/_matrix/federation/v1/make_join/{_q(room_id)}/{_q(user_id)}?{versions}"
        status, answer, _ = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"make_join {room_id}: {status} {answer!r}")
        version = get_room_version(answer.get("room_version", "1"))
        template = dict(answer["event"])
        template["origin_server_ts"] = int(time.time() * 1000)
        template.pop("signatures", None)
        template.pop("hashes", None)
        event = finalise_event(template, version, self.server_name, self.key_id, self.key)
        path = f"/_matrix/federation/v2/send_join/{_q(room_id)}/{_q(event.event_id)}"
        status, answer, size = self.request("PUT", path, dict(event.pdu))
        if status != 200:
            raise RuntimeError(f"send_join {room_id}: {status} {answer!r}")
        if known is None:
            state_ids = {(e["type"], e["state_key"]): _event_id(e, version) for e in answer["state"]}
            known = PeerRoom(room_id, version, state_ids, event.event_id, int(template["depth"]))
        known.state_ids[("m.room.member", user_id)] = event.event_id
        known.last_event = event.event_id
        known.depth = max(known.depth, int(template["depth"]))
        return known, size

    def build(
        self, room: PeerRoom, sender: str, event_type: str, content: Mapping[str, Any], state_key: str | None = None
    ) -> dict[str, Any]:
        """A signed PDU on top of the room's last event (the room's chain is advanced)."""
        pdu = build_event(
            room_version=room.version, room_id=room.room_id, type=event_type, sender=sender,
            content=content, prev_event_ids=[room.last_event],
            auth_event_ids=room.auth_events(sender, event_type, state_key),
            depth=room.depth + 1, origin_server_ts=int(time.time() * 1000), state_key=state_key,
        )  # fmt: skip
        event = finalise_event(pdu, room.version, self.server_name, self.key_id, self.key)
        room.last_event, room.depth = event.event_id, room.depth + 1
        if state_key is not None:
            room.state_ids[(event_type, state_key)] = event.event_id
        return dict(event.pdu)

    def send_transaction(self, pdus: Sequence[Mapping[str, Any]]) -> int:
        """``PUT /send/{txnId}`` with these PDUs; returns how many the target reported an error for.

        Raises:
            RuntimeError: the transaction itself was refused.
        """
        self._txn += 1
        txn_id = f"{int(time.time() * 1000)}.{self._txn}"
        body = {"origin": self.server_name, "origin_server_ts": int(time.time() * 1000), "pdus": list(pdus)}
        status, answer, _ = self.request("PUT", f"/_matrix/federation/v1/send/{txn_id}", body)
        if status != 200:
            raise RuntimeError(f"/send {txn_id}: {status} {answer!r}")
        results = answer.get("pdus", {}) if isinstance(answer, dict) else {}
        return sum(1 for result in results.values() if isinstance(result, dict) and "error" in result)


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _event_id(pdu: Mapping[str, Any], version: RoomVersion) -> str:
    if "event_id" in pdu:
        return str(pdu["event_id"])
    from sc_proto.events.hashes import compute_event_id

    return compute_event_id(pdu, version)


# --------------------------------------------------------------------------- scenarios


@dataclass
class Figures:
    """The figures of one target."""

    label: str
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    """A homeserver under test: where it is, its name and a local user able to create rooms."""

    label: str
    base_url: str
    server_name: str
    client: harness.MatrixClient
    process: harness.TlsServerProcess | None = None
    _poller: http.client.HTTPSConnection | None = None

    def cpu_seconds(self) -> float | None:
        """CPU time the target process has used so far (``None`` for an external target)."""
        return self.process.cpu_seconds() if self.process is not None else None

    def poller(self) -> http.client.HTTPSConnection:
        """A keep-alive client connection for polling."""
        if self._poller is None:
            parts = urllib.parse.urlsplit(self.base_url)
            self._poller = http.client.HTTPSConnection(
                parts.hostname or "127.0.0.1", parts.port or 443, timeout=30, context=harness.loopback_tls_context()
            )
        return self._poller

    def drop_poller(self) -> None:
        """Closes the polling connection (a new one is made on the next poll)."""
        if self._poller is not None:
            self._poller.close()
            self._poller = None


def _wait_visible(target: Target, room_id: str, event_id: str, timeout: float = 120.0) -> bool:
    """Polls until the target's local user can read ``event_id`` (accepted and persisted).

    One keep-alive connection, every 20 ms: a new TLS handshake per poll would cost the target more
    CPU than the events being measured.
    """
    path = f"/_matrix/client/v3/rooms/{_q(room_id)}/event/{_q(event_id)}"
    headers = {"Authorization": f"Bearer {target.client.access_token}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = target.poller()
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            target.drop_poller()
            time.sleep(0.02)
            continue
        if response.status == 200:
            return True
        time.sleep(0.02)
    return False


def _send_paced(peer: FakePeer, target: Target, batches: Sequence[Batch], deadline: float) -> dict[str, Any]:
    """Sends each batch as one transaction and waits until its last PDU is persisted before the next.

    A receiver may process PDUs after answering ``/send`` (Synapse stages them, and prunes a room's
    queue beyond 100 staged events), so the clock runs until the PDU is readable, not until ``/send``
    returns. Building and signing happen before the clock starts.
    """
    sent = errors = lost = 0
    elapsed = 0.0
    for batch in batches:
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        errors += peer.send_transaction([pdu for _room_id, _event_id, pdu in batch])
        room_id, event_id, _ = batch[-1]
        lost += not _wait_visible(target, room_id, event_id)
        elapsed += time.perf_counter() - start
        sent += len(batch)
    return {
        "events": sent,
        "errors": errors,
        "lost_batches": lost,
        "seconds": round(elapsed, 3),
        "events_per_s": round(sent / elapsed, 1) if elapsed else None,
    }


def _message_batches(peer: FakePeer, rooms: Sequence[PeerRoom], sender: str, count: int) -> list[Batch]:
    """``count`` message PDUs, round-robin over ``rooms``, in transactions of 50."""
    batches = []
    for first in range(0, count, MAX_PDUS_PER_TXN):
        batch: Batch = []
        for i in range(first, min(first + MAX_PDUS_PER_TXN, count)):
            room = rooms[i % len(rooms)]
            pdu = peer.build(room, sender, "m.room.message", {"msgtype": "m.text", "body": f"bench {i}"})
            batch.append((room.room_id, room.last_event, pdu))
        batches.append(batch)
    return batches


def scenario_one_room(peer: FakePeer, target: Target, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    room_id = target.client.create_room(name="bench one room")
    room, _ = peer.join(room_id, "sender1")
    return _send_paced(peer, target, _message_batches(peer, [room], peer.user("sender1"), args.events), deadline)


def scenario_many_rooms(peer: FakePeer, target: Target, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    rooms, joins = [], []
    for i in range(args.rooms):
        room_id = target.client.create_room(name=f"bench room {i}")
        start = time.perf_counter()
        room, _ = peer.join(room_id, "sender1")
        joins.append(time.perf_counter() - start)
        rooms.append(room)
        if time.monotonic() > deadline:
            break
    batches = _message_batches(peer, rooms, peer.user("sender1"), args.events)
    result = _send_paced(peer, target, batches, deadline)
    result["all_rooms_complete"] = all(_wait_visible(target, r.room_id, r.last_event, 30) for r in rooms)
    result.update(rooms=len(rooms), join_ms=_latency(joins))
    return result


def scenario_big_join(peer: FakePeer, target: Target, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    room_id = target.client.create_room(name="bench big room")
    room, _ = peer.join(room_id, "m0")
    batches = []
    for first in range(1, args.members, MAX_PDUS_PER_TXN):
        batch: Batch = []
        for i in range(first, min(first + MAX_PDUS_PER_TXN, args.members)):
            user = peer.user(f"m{i}")
            pdu = peer.build(room, user, "m.room.member", {"membership": "join"}, state_key=user)
            batch.append((room_id, room.last_event, pdu))
        batches.append(batch)
    fill = _send_paced(peer, target, batches, deadline)
    members = len(target.client.joined_members(room_id))
    latencies, sizes = [], []
    for k in range(args.joiners):
        start = time.perf_counter()
        room, size = peer.join(room_id, f"joiner{k}", known=room)
        latencies.append(time.perf_counter() - start)
        sizes.append(size)
    return {
        "members_before_joins": members,
        "member_pdus_per_s": fill["events_per_s"],
        "member_pdus_lost": fill["errors"] + fill["lost_batches"],
        "join_ms": _latency(latencies),
        "send_join_response_kib": round(statistics.median(sizes) / 1024, 1) if sizes else None,
        "members_after_joins": len(target.client.joined_members(room_id)),
    }


def _latency(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p95": round(p95 * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


RUNNERS = {"one_room": scenario_one_room, "many_rooms": scenario_many_rooms, "big_join": scenario_big_join}


def measure(target: Target, args: argparse.Namespace, workdir: Path) -> Figures:
    """Runs the chosen scenarios against one target, each with a fresh peer (a fresh server name)."""
    figures = Figures(target.label)
    deadline = time.monotonic() + args.time_limit
    for name in args.scenario_list:
        peer = FakePeer(target.base_url, target.server_name, workdir / name)
        try:
            start, cpu_start = time.monotonic(), target.cpu_seconds()
            figures.results[name] = RUNNERS[name](peer, target, args, deadline)
            figures.results[name]["wall_s"] = round(time.monotonic() - start, 1)
            cpu_end = target.cpu_seconds()
            if cpu_start is not None and cpu_end is not None:
                figures.results[name]["target_cpu_s"] = round(cpu_end - cpu_start, 1)
        except Exception as exc:  # one failing scenario must not hide the others' figures
            figures.results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            peer.close()
        print(f"  {target.label} {name}: {json.dumps(figures.results[name])}", flush=True)
    return figures


# --------------------------------------------------------------------------- targets


def _synapse_python() -> Path:
    value = os.environ.get(harness.SYNAPSE_ENV)
    if value:
        return Path(value)
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "install-synapse")], capture_output=True, text=True, check=True, timeout=1800
    )
    return Path(done.stdout.strip().splitlines()[-1])


def start_target(kind: str, workdir: Path) -> tuple[Target, harness.Homeserver]:
    """Starts Synapse or SecureConnect with the federation harness and registers a local user."""
    if kind == "synapse":
        python = _synapse_python()
        server: harness.Homeserver = harness.start_synapse(workdir / "synapse", python=python)
        label = f"synapse {harness.synapse_version(python)}"
    else:
        server = harness.start_secureconnect(workdir / "ours", ready_paths=harness.READY_PATHS)
        label = "ours"
    client = server.register("bench_owner")
    return Target(label, server.base_url, server.server_name, client, server.process), server


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="synapse", help="comma-separated: synapse, ours")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--events", type=int, default=2000, help="PDUs per throughput scenario")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--joiners", type=int, default=5, help="timed joins into the big room")
    parser.add_argument("--quick", action="store_true", help="500 events, 10 rooms, 200 members, 3 joins")
    parser.add_argument("--url", help="a running target (https://127.0.0.1:PORT); needs --server-name, --token")
    parser.add_argument("--server-name", help="the running target's server name")
    parser.add_argument("--token", help="an access token of a local user of the running target")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT_S, help="seconds per target")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rooms, args.members, args.joiners = 500, 10, 200, 3
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if unknown := set(args.scenario_list) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    if unknown := set(args.server_list) - {"ours", "synapse"}:
        parser.error(f"unknown servers: {sorted(unknown)}")
    if args.url:
        if urllib.parse.urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
            parser.error("--url must be a loopback address (this benchmark only sends traffic to this machine)")
        if not (args.server_name and args.token):
            parser.error("--url needs --server-name and --token")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"federation benchmark; host: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    print("(wall-clock figures: compare runs made back to back on an idle machine)", flush=True)
    reports: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="sc-bench-federation-") as tmp:
        workdir = Path(tmp)
        if args.url:
            status, whoami = harness.https_json("GET", args.url + "/_matrix/client/v3/account/whoami", token=args.token)
            if status != 200:
                print(f"--token is not valid on {args.url}: {status} {whoami!r}", file=sys.stderr)
                return 2
            client = harness.MatrixClient(args.url, whoami["user_id"], args.token)
            reports.append(measure(Target("external", args.url, args.server_name, client), args, workdir))
        for kind in [] if args.url else args.server_list:
            target, server = start_target(kind, workdir)
            try:
                reports.append(measure(target, args, workdir))
            finally:
                server.stop()
    for report in reports:
        print(f"\n{report.label}")
        for name, result in report.results.items():
            print(f"  {name:<11} {json.dumps(result)}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in reports], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
