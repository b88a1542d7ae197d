"""Server-key costs in process: sign/verify a key response, keyring lookups (memory, database), fetches.

Prints microseconds per operation; nothing is asserted. Run: ``python bench/server_keys.py [--n 5000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet import defer, task

from federation.key_store import ServerKeyStore
from federation.keyring import Keyring
from federation.local_keys import LocalKeys
from homeserver.storage.engines import DatabaseSettings, create_engine
from homeserver.storage.migrations import prepare_database
from homeserver.storage.pool import DatabasePool
from homeserver.util.clock import Clock
from sc_proto.crypto.keys import generate_signing_key
from sc_proto.federation.keys import build_server_keys_response, parse_server_keys

NOW_S = 1_700_000_000


class _Origins:
    """A FederationHttp answering /_matrix/key/v2/server for any destination, from per-name keys."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.keys: dict[str, Any] = {}
        self.requests = 0

    async def get_json(
        self, destination: str, path: str, args: Mapping[str, Sequence[str]] | None = None, **_: Any
    ) -> dict[str, Any]:
        self.requests += 1
        key = self.keys.setdefault(destination, generate_signing_key("k1"))
        return build_server_keys_response(destination, [key], {}, self.clock.time_msec() + 86_400_000)

    async def post_json(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def put_json(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError


def _run(d: Any) -> Any:
    results: list[Any] = []
    defer.ensureDeferred(d).addBoth(results.append)
    return results[0]


def _per_op(label: str, n: int, fn: Any) -> None:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    print(f"{label:<48} {1e6 * (time.perf_counter() - start) / n:8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    n = parser.parse_args().n
    key = generate_signing_key("a")
    response = build_server_keys_response("x.test", [key], {}, 10**13)
    _per_op(
        "build + sign /key/v2/server response",
        n,
        lambda i: build_server_keys_response("x.test", [key], {}, 10**13),
    )
    _per_op(
        "parse + verify a response",
        n,
        lambda i: parse_server_keys(response, expected_server_name="x.test", received_ts=0),
    )

    reactor = task.Clock()
    reactor.advance(NOW_S)
    clock = Clock(reactor)
    with tempfile.TemporaryDirectory() as tmp:
        pool = DatabasePool(
            create_engine(DatabaseSettings(url=f"sqlite://{tmp}/keys.db")), None, run_in_thread=False
        )
        _run(prepare_database(pool))
        http = _Origins(clock)
        keyring = Keyring(
            local=LocalKeys("us.test", key),
            store=ServerKeyStore(pool),
            http=http,
            clock=clock,
            cache_servers=1,
        )
        now = NOW_S * 1000
        _per_op(
            "fetch + verify + store (new server each time)",
            min(n, 500),
            lambda i: _run(keyring.get_verify_key(f"s{i}.test", "ed25519:k1", now)),
        )
        _per_op(
            "lookup, memory cache hit",
            n,
            lambda i: _run(keyring.get_verify_key("s0.test", "ed25519:k1", now)),
        )
        _per_op(
            "lookup, database hit (memory evicted)",
            min(n, 500),
            lambda i: _run(keyring.get_verify_key(f"s{i % 2}.test", "ed25519:k1", now)),
        )
        print(f"requests sent: {http.requests}")
        _run(pool.close())


if __name__ == "__main__":
    main()
