"""Benchmark: presence CPU per 1,000 online users, in process (no HTTP).

Simulates ``--users`` online users driving the real :class:`~homeserver.presence.service.PresenceService`
on a fake clock: each keeps a 30-second long poll open (sync ends, its incremental presence read runs
as ``/sync`` would, and the next one starts at once), a share of them send a message now and then
(activity), the rest idle into ``unavailable``, and a few stop syncing and go ``offline``. Users sit in
rooms of ``--room-size``; the room-mate audience comes from the joined-rooms cache; changes wake the
notifier and are stored by the sweep in an in-memory SQLite database. Time advances one simulated
second per step, so the single sweep runs as in production.

Prints the process CPU seconds spent per 1,000 online users per minute of (simulated wall) time, and
per broadcast state change. The driver's own loop is included, so the figure is an upper bound.

Run: ``python bench/presence.py [--users 1000] [--minutes 10] [--room-size 50] [--seed 1]``
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task

from homeserver.presence.memberships import JoinedRoomsCache
from homeserver.presence.service import PresenceService
from homeserver.presence.state import Timeouts
from homeserver.storage.engines import DatabaseSettings, create_engine
from homeserver.storage.migrations import prepare_database
from homeserver.storage.pool import DatabasePool
from homeserver.storage.stores.presence import PresenceStore
from homeserver.streams.notifier import Notifier
from homeserver.util.clock import Clock

POLL_S = 30
"""Long-poll length of the simulated clients."""


def _run(d: Any) -> Any:
    """Runs a coroutine that completes synchronously (synchronous pool, fake clock)."""
    results: list[Any] = []
    defer.ensureDeferred(d).addBoth(results.append)
    if not results:
        raise RuntimeError("did not complete synchronously")
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def _build(users: list[str], room_size: int, reactor: task.Clock) -> tuple[PresenceService, dict[str, set[str]]]:
    rooms: dict[str, set[str]] = {u: set() for u in users}
    for i, user in enumerate(users):
        rooms[user].add(f"!r{i // room_size}:bench")
        rooms[user].add(f"!s{(i * 7) % max(1, len(users) // room_size)}:bench")  # a second, mixed room

    async def load(user_id: str) -> list[str]:
        return sorted(rooms.get(user_id, ()))

    pool = DatabasePool(create_engine(DatabaseSettings(url="sqlite://:memory:")), None, run_in_thread=False)
    _run(prepare_database(pool))
    clock = Clock(reactor)
    service = PresenceService(
        "bench", clock, PresenceStore(pool), JoinedRoomsCache(load), Notifier(clock), Timeouts(300_000, 30_000)
    )
    _run(service.start())
    return service, rooms


def simulate(n_users: int, minutes: int, room_size: int, seed: int) -> dict[str, float]:
    """Runs the simulation; returns the figures."""
    rng = random.Random(seed)
    reactor = task.Clock()
    reactor.advance(1_700_000_000)
    users = [f"@u{i}:bench" for i in range(n_users)]
    service, rooms = _build(users, room_size, reactor)
    talkers = rng.sample(users, int(n_users * 0.6))  # 60 % send now and then; the rest idle
    leavers = set(rng.sample(users, int(n_users * 0.05)))  # 5 % stop syncing half-way
    by_second: list[list[str]] = [[] for _ in range(POLL_S)]
    for user in users:
        by_second[rng.randrange(POLL_S)].append(user)
    open_syncs: dict[str, Callable[[], None]] = {}
    positions: dict[str, int] = {}
    for user in users:
        open_syncs[user] = service.user_syncing(user, None, None)
        positions[user] = service.position
    total_s = minutes * 60
    cpu_start = time.process_time()
    changes_start = service.changes
    delivered = 0
    for second in range(total_s):
        for user in by_second[second % POLL_S]:
            done = open_syncs.pop(user, None)
            if done is not None:
                done()
            if user in leavers and second > total_s // 2:
                continue
            to = service.position
            events = _run(service.get_changes(user, rooms[user], positions[user], to))
            delivered += len(events)
            positions[user] = to
            open_syncs[user] = service.user_syncing(user, None, None)
        for user in rng.sample(talkers, max(1, len(talkers) // 120)):  # ~ one message / 2 min each
            service.user_active(user)
        reactor.advance(1)
    cpu = time.process_time() - cpu_start
    changes = service.changes - changes_start
    return {
        "users": n_users,
        "minutes": minutes,
        "cpu_s": cpu,
        "changes": changes,
        "delivered": delivered,
        "cpu_per_1k_users_per_min": cpu / (n_users / 1000) / minutes,
        "cpu_per_change_us": cpu / max(1, changes) * 1e6,
        "online_at_end": service.online_count(),
    }


def main() -> None:
    """Parses arguments, runs, prints."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--room-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    r = simulate(args.users, args.minutes, args.room_size, args.seed)
    print(f"presence: {r['users']} online users, {r['minutes']} simulated minutes, rooms of {args.room_size}")
    print(f"  CPU total                        {r['cpu_s']:.3f} s")
    print(f"  state changes broadcast          {r['changes']}  (events delivered to room-mates: {r['delivered']})")
    print(f"  CPU per 1,000 online users/min   {r['cpu_per_1k_users_per_min'] * 1000:.1f} ms")
    print(f"  CPU per state change             {r['cpu_per_change_us']:.1f} us (all presence work / changes)")
    print(f"  not offline at the end          {r['online_at_end']}")


if __name__ == "__main__":
    main()
