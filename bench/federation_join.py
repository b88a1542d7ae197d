"""Remote join cost versus room size, in process: two homeservers over the in-memory federation
transport of ``tests/federation/harness.py`` (fake reactor, SQLite, synchronous database calls).

For each room size N, server B gets a public room with N joined local members; then a user of A joins
it by ID. Printed: the wall time of the join request (make_join, send_join on B, checking N+ state
events on A, persisting them) and of the same user's first ``/sync`` afterwards.

Run: ``python -m bench.federation_join [--members 50,200,1000]`` from the repository root (as a module:
``bench/media.py`` would shadow the ``media`` package).
"""

from __future__ import annotations

import argparse
import time
import urllib.parse

from tests.federation.harness import FederationTestCase


class _Bench(FederationTestCase):
    def runTest(self) -> None:
        """Unused: the benchmark drives setUp and the helpers itself."""


def run(members: int) -> tuple[float, float]:
    case = _Bench()
    case.setUp()
    try:
        _, bob_token = case.user_on(case.b, "bob")
        room_id = case.create_room(case.b, bob_token, preset="public_chat")
        for i in range(members):
            user = case.get_success(case.b.hs.create_user(f"m{i}", None))
            case.get_success(case.b.hs.membership.join(user, room_id))
        _, alice_token = case.user_on(case.a, "alice")
        start = time.perf_counter()
        path = f"/_matrix/client/v3/join/{urllib.parse.quote(room_id, safe='')}?via={case.b.name}"
        channel = case.request(case.a, "POST", path, {}, alice_token)
        joined = time.perf_counter() - start
        assert channel.code == 200, channel.json_body
        start = time.perf_counter()
        sync = case.request(case.a, "GET", "/_matrix/client/v3/sync", None, alice_token)
        synced = time.perf_counter() - start
        assert room_id in sync.json_body["rooms"]["join"]
        return joined, synced
    finally:
        case.doCleanups()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="50,200,1000")
    args = parser.parse_args()
    print(f"{'members':>8} {'join s':>8} {'ms/state event':>15} {'first sync s':>13}")
    for n in (int(x) for x in args.members.split(",")):
        joined, synced = run(n)
        print(f"{n:>8} {joined:>8.2f} {1000 * joined / (n + 6):>15.2f} {synced:>13.2f}")


if __name__ == "__main__":
    main()
