"""E2EE key-distribution benchmarks over the Client-Server API: SecureConnect ("ours") and Synapse.

Scenarios (figures only; nothing is asserted):

* ``claim``: a user with 50 devices, each with signed device keys, 60 one-time keys and a fallback
  key. A second user claims one ``signed_curve25519`` key of every device per ``/keys/claim`` (50 keys
  per request), back to back: p50/p95/p99 latency and keys/s. Later requests hit fallback keys once
  the one-time keys run out (counted separately).
* ``query``: ``/keys/query`` of that user (all 50 devices) back to back: p50/p95/p99 latency.
* ``todevice``: 10 senders send ``PUT /sendToDevice`` (one message to one device each) in a closed loop
  for a few seconds: messages/s and p50/p95 latency; then the recipient drains its inbox through
  ``/sync`` (100 per response): messages/s delivered, and that every message arrived exactly once.

Device keys are real Ed25519-signed objects (``sc_proto``), so servers that check signatures accept
them. Traffic goes to 127.0.0.1 only. Run: ``python bench/e2ee.py [--servers ours,synapse]
[--db sqlite|postgres] [--quick]``, or ``python bench/e2ee.py --url http://127.0.0.1:8008`` to measure
a running homeserver of any kind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat import (  # after the sys.path insert: needs the repository root
    DEFAULT_POSTGRES,
    Http,
    Report,
    RequestFailed,
    User,
    bounded_gather,
    load_average,
    login,
    percentile,
    print_ratio,
    print_report,
    register,
    start_ours,
)
from bench.common import ServerProcess, check_comparison_args
from sc_proto.crypto.keys import encode_verify_key_base64, generate_signing_key, get_verify_key
from sc_proto.crypto.signing import sign_json

SCENARIOS = ("claim", "query", "todevice")


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is (``--quick`` shrinks everything)."""

    devices: int = 50
    otks_per_device: int = 60
    claims: int = 80
    queries: int = 200
    senders: int = 10
    send_seconds: float = 10.0
    scenario_timeout: float = 900.0


FULL = Sizes()
QUICK = Sizes(devices=10, otks_per_device=5, claims=10, queries=20, senders=4, send_seconds=2.0, scenario_timeout=300.0)


async def device_id_of(user: User) -> str:
    return str((await user.call("GET", "/account/whoami"))["device_id"])


async def upload_keys(user: User, otks: int) -> None:
    """Uploads signed device keys, ``otks`` signed one-time keys and a fallback key for ``user``'s device."""
    device_id = await device_id_of(user)
    key = generate_signing_key("b")
    key_id = f"ed25519:{device_id}"
    device_keys = sign_json(
        {
            "user_id": user.user_id,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{device_id}": secrets.token_hex(16), key_id: encode_verify_key_base64(get_verify_key(key))},
        },
        user.user_id, key, key_id=key_id,
    )
    one_time = {
        f"signed_curve25519:K{i}": sign_json({"key": secrets.token_hex(16)}, user.user_id, key, key_id=key_id)
        for i in range(otks)
    }
    fallback = {"signed_curve25519:FB": sign_json({"key": secrets.token_hex(16), "fallback": True}, user.user_id, key,
                                                  key_id=key_id)}
    await user.call("POST", "/keys/upload", {"device_keys": device_keys, "one_time_keys": one_time,
                                            "fallback_keys": fallback})


async def login_retrying(http: Http, user_id: str) -> User:
    """Logs in, waiting out 429 answers (login rate limits and in-flight caps)."""
    for _ in range(50):
        try:
            return await login(http, user_id)
        except RequestFailed as exc:
            if " 429 " not in str(exc):
                raise
            await asyncio.sleep(1.0)
    return await login(http, user_id)


class Population:
    """The users of one run: a target with many devices, a claimer/querier, senders, a recipient."""

    def __init__(self, http: Http) -> None:
        self.http = http
        self.prefix = f"e{secrets.token_hex(3)}"
        self.target_devices: list[User] = []
        self.target_device_ids: list[str] = []
        self.other: User | None = None

    async def target(self, sizes: Sizes) -> tuple[User, list[str]]:
        """The 50-device user (built once per run); returns the claimer and the device IDs."""
        if not self.target_devices:
            first = await register(self.http, f"{self.prefix}target")
            # One login at a time: servers refuse bursts of concurrent logins of one account.
            self.target_devices = [first] + [await login_retrying(self.http, first.user_id) for _ in range(sizes.devices - 1)]
            await bounded_gather([partial(upload_keys, u, sizes.otks_per_device) for u in self.target_devices])
            self.target_device_ids = await bounded_gather([partial(device_id_of, u) for u in self.target_devices])
            self.other = await register(self.http, f"{self.prefix}other")
        assert self.other is not None
        return self.other, self.target_device_ids


async def timed(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    await call()
    return time.perf_counter() - t0


async def scenario_claim(pop: Population, sizes: Sizes, report: Report) -> None:
    """/keys/claim of one key per device of a 50-device user, back to back."""
    claimer, device_ids = await pop.target(sizes)
    target = pop.target_devices[0].user_id
    body = {"one_time_keys": {target: {d: "signed_curve25519" for d in device_ids}}}
    latencies: list[float] = []
    fallback_hits = 0
    for _ in range(sizes.claims):
        t0 = time.perf_counter()
        answer = await claimer.call("POST", "/keys/claim", body)
        latencies.append(time.perf_counter() - t0)
        devices = answer.get("one_time_keys", {}).get(target, {})
        fallback_hits += sum(1 for keys in devices.values() if "signed_curve25519:FB" in keys)
    label = f"claim x{len(device_ids)} devices"
    for p in (50, 95, 99):
        report.add(label, f"latency p{p}", percentile(latencies, p) * 1000, "ms")
    report.add(label, "keys claimed", len(device_ids) * len(latencies) / sum(latencies), "keys/s", True)
    report.add(label, "fallback answers", fallback_hits, "count")


async def scenario_query(pop: Population, sizes: Sizes, report: Report) -> None:
    """/keys/query of the 50-device user, back to back."""
    querier, device_ids = await pop.target(sizes)
    body: dict[str, Any] = {"device_keys": {pop.target_devices[0].user_id: []}}
    answer = await querier.call("POST", "/keys/query", body)
    returned = len(answer.get("device_keys", {}).get(pop.target_devices[0].user_id, {}))
    latencies = [await timed(partial(querier.call, "POST", "/keys/query", body)) for _ in range(sizes.queries)]
    label = f"query x{len(device_ids)} devices"
    for p in (50, 95, 99):
        report.add(label, f"latency p{p}", percentile(latencies, p) * 1000, "ms")
    report.add(label, "devices returned", returned, "count", True)


async def scenario_todevice(pop: Population, sizes: Sizes, report: Report) -> None:
    """Closed-loop /sendToDevice throughput, then draining the inbox through /sync."""
    recipient = await register(pop.http, f"{pop.prefix}rcpt")
    recipient_device = await device_id_of(recipient)
    since = str((await recipient.sync(None, 0))[0]["next_batch"])
    senders = await bounded_gather([partial(register, pop.http, f"{pop.prefix}s{i}") for i in range(sizes.senders)])
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    until = loop.time() + sizes.send_seconds
    start = loop.time()

    async def sender(index: int, user: User) -> None:
        n = 0
        while loop.time() < until:
            n += 1
            messages = {recipient.user_id: {recipient_device: {"ciphertext": secrets.token_hex(64), "i": f"{index}.{n}"}}}
            t0 = loop.time()
            await user.call("PUT", f"/sendToDevice/m.room.encrypted/t{index}.{n}", {"messages": messages})
            latencies.append(loop.time() - t0)

    await asyncio.gather(*(sender(i, s) for i, s in enumerate(senders)))
    elapsed = loop.time() - start
    report.add("to-device send", "throughput", len(latencies) / elapsed, "msg/s", True)
    for p in (50, 95):
        report.add("to-device send", f"latency p{p}", percentile(latencies, p) * 1000, "ms")
    seen: list[str] = []
    t0 = loop.time()
    while len(seen) < len(latencies) and loop.time() - t0 < 300:
        body, _ = await recipient.sync(since, 0)
        since = str(body["next_batch"])
        events = body.get("to_device", {}).get("events", [])
        seen.extend(str(e.get("content", {}).get("i")) for e in events)
        if not events:
            await asyncio.sleep(0.05)
    drain = loop.time() - t0
    report.add("to-device drain", "delivered", len(seen) / drain if drain else 0.0, "msg/s", True)
    report.add("to-device drain", "sent", len(latencies), "count")
    report.add("to-device drain", "received", len(seen), "count")
    report.add("to-device drain", "received twice", len(seen) - len(set(seen)), "count")


SCENARIO_FUNCS = {"claim": scenario_claim, "query": scenario_query, "todevice": scenario_todevice}


async def measure_server(label: str, base_url: str, scenarios: list[str], sizes: Sizes) -> Report:
    """Runs the scenarios against one server; a failing scenario is recorded and the next one runs."""
    import aiohttp

    report = Report(label, base_url)
    report.notes.append(f"load average before: {load_average()}")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        pop = Population(Http(base_url, session))
        for name in scenarios:
            print(f"  {label}: {name}...", flush=True)
            try:
                await asyncio.wait_for(SCENARIO_FUNCS[name](pop, sizes, report), sizes.scenario_timeout)
            except Exception as exc:  # one broken scenario must not hide the others' figures
                report.failures[name] = f"{type(exc).__name__}: {exc}"[:400]
                print(f"    FAILED: {report.failures[name]}")
    report.notes.append(f"load average after: {load_average()}")
    return report


def run_one(kind: str, args: argparse.Namespace, sizes: Sizes) -> Report:
    """Starts ``kind`` (ours or synapse), measures it and stops it."""
    cleanup: list[Callable[[], None]] = []
    with tempfile.TemporaryDirectory(prefix="sc-e2ee-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            process: ServerProcess
            if kind == "ours":
                process = start_ours(args.db, args.postgres_url, tmp, cleanup)
                cleanup.append(process.kill)
                label = f"ours ({args.db})"
            else:
                from bench.synapse_setup import start_synapse

                synapse = start_synapse(db=args.db, postgres_url=args.postgres_url, data_dir=tmp / "synapse")
                cleanup.append(synapse.close)
                process, label = synapse.process, f"synapse {synapse.version} ({args.db})"
            print(f"{label}: {process.base_url}", flush=True)
            report = asyncio.run(measure_server(label, process.base_url, args.scenario_list, sizes))
            if kind == "ours" and (code := process.stop(30)) != 0:
                print(f"  ours exited with {code}; log tail:\n{process.tail(20)}")
            return report
        finally:
            for action in reversed(cleanup):
                action()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="measure this running homeserver (any implementation) instead")
    parser.add_argument("--servers", default="ours,synapse", help="comma list of: ours, synapse")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("SC_TEST_POSTGRES", DEFAULT_POSTGRES))
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of: " + ", ".join(SCENARIOS))
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    check_comparison_args(parser, args, SCENARIOS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    print(f"e2ee benchmark ({'quick' if args.quick else 'full'}); host: {os.cpu_count()} CPUs", flush=True)
    if args.url:
        reports = [asyncio.run(measure_server("external", args.url, args.scenario_list, sizes))]
    else:
        reports = [run_one(kind, args, sizes) for kind in args.server_list]
    for report in reports:
        print_report(report)
    by_kind = {r.label.split()[0]: r for r in reports}
    if "ours" in by_kind and "synapse" in by_kind:
        print_ratio(by_kind["ours"], by_kind["synapse"])
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in reports], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
