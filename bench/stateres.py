"""Benchmark: state resolution v2.1 (or v2) of two conflicting states of a large room.

Builds a room with ``--members`` joined users and a history of a few thousand extra auth-chain
events (power-level edits, membership updates), forks it into two branches that conflict
(competing power-level changes, bans, kicks, topic changes and joins on both sides), then runs the
sans-I/O loop (``prepare`` / ``needed_event_ids`` / ``add_events``) against an in-memory "database"
and ``resolve`` with the real authorization rules. Prints figures; asserts nothing.

Run: ``python bench/stateres.py [--members 10000] [--room-version 12] [--seed 1]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Mapping
from typing import Any

from sc_proto.auth.rules import check_auth
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import EventFormat, RoomVersion, get_room_version
from sc_proto.state import full_conflicted_set, prepare, resolve

CREATOR = "@creator:bench.test"
PL: StateKey = ("m.room.power_levels", "")
JR: StateKey = ("m.room.join_rules", "")


class RoomGenerator:
    """Creates events whose auth events are selected from a given state map."""

    def __init__(self, rv: RoomVersion) -> None:
        self.rv = rv
        self.events: dict[str, Event] = {}
        self.ts = 1_000_000
        self.n = 0
        self.room_id = "!room:bench.test"
        self.state: dict[StateKey, str] = {}

    def user(self, i: int) -> str:
        return f"@u{i}:s{i % 50}.test"

    def pl_content(self, users: Mapping[str, int]) -> dict[str, Any]:
        all_users = dict(users)
        if not self.rv.privileged_creators:
            all_users[CREATOR] = 100
        return {"users": all_users, "users_default": 0, "state_default": 50, "ban": 50, "kick": 50,
                "events": {"m.room.power_levels": 100}}

    def send(self, etype: str, sender: str, content: dict[str, Any], state_key: str | None,
             on: dict[StateKey, str]) -> str:
        keys: list[StateKey] = [PL, ("m.room.member", sender)]
        if self.rv.create_event_in_auth_events:
            keys.insert(0, ("m.room.create", ""))
        if etype == "m.room.member" and state_key is not None:
            keys.append(("m.room.member", state_key))
            if content.get("membership") in ("join", "invite", "knock"):
                keys.append(JR)
        auth = list(dict.fromkeys(on[k] for k in keys if k in on))
        self.n += 1
        self.ts += 1
        event_id = f"$e{self.n}"
        pdu: dict[str, Any] = {"type": etype, "sender": sender, "content": content, "depth": self.n,
                               "origin_server_ts": self.ts, "room_id": self.room_id,
                               "prev_events": [f"$e{self.n - 1}"], "auth_events": auth}
        if etype == "m.room.create":
            pdu["prev_events"] = pdu["auth_events"] = []
            if self.rv.room_id_from_create_event:
                del pdu["room_id"]
                self.room_id = "!" + event_id[1:]
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.rv.event_format is EventFormat.V1:
            for f in ("prev_events", "auth_events"):
                pdu[f] = [[r, {"sha256": "x"}] for r in pdu[f]]
        ev = Event(pdu, self.rv, event_id)
        self.events[event_id] = ev
        if state_key is not None:
            on[(etype, state_key)] = event_id
        return event_id


def build_base(gen: RoomGenerator, members: int, history: int, rng: random.Random) -> list[str]:
    """Creates the room, joins ``members`` users and adds ``history`` auth-chain events."""
    s = gen.state
    create_content: dict[str, Any] = {"room_version": gen.rv.identifier}
    if not gen.rv.implicit_room_creator:
        create_content["creator"] = CREATOR
    gen.send("m.room.create", CREATOR, create_content, "", s)
    gen.send("m.room.member", CREATOR, {"membership": "join"}, CREATOR, s)
    users = [gen.user(i) for i in range(members)]
    mods = users[:20]
    levels = {u: 50 for u in mods}
    gen.send("m.room.power_levels", CREATOR, gen.pl_content(levels), "", s)
    gen.send("m.room.join_rules", CREATOR, {"join_rule": "public"}, "", s)
    for u in users:
        gen.send("m.room.member", u, {"membership": "join"}, u, s)
    for i in range(history):
        kind = i % 10
        if kind == 0:  # power-level edit: promote/demote someone
            levels[rng.choice(users[20:])] = rng.choice([0, 10, 20])
            gen.send("m.room.power_levels", CREATOR, gen.pl_content(levels), "", s)
        elif kind == 1:
            gen.send("m.room.join_rules", rng.choice(mods), {"join_rule": "public"}, "", s)
        else:  # membership update (displayname change)
            u = rng.choice(users)
            gen.send("m.room.member", u, {"membership": "join", "displayname": f"n{i}"}, u, s)
    return users


def fork(gen: RoomGenerator, users: list[str], rng: random.Random,
         changes: int) -> tuple[dict[StateKey, str], dict[StateKey, str]]:
    """Two branches from the base state with competing changes."""
    a, b = dict(gen.state), dict(gen.state)
    mods, rest = users[:20], users[20:]
    levels_a = {u: 50 for u in mods}
    levels_a[mods[0]] = 0  # the creator demotes mod 0 on branch A...
    gen.send("m.room.power_levels", CREATOR, gen.pl_content(levels_a), "", a)
    for i in range(changes):  # ...while mod 0 bans people on branch B
        gen.send("m.room.member", mods[0], {"membership": "ban"}, rest[i], b)
        gen.send("m.room.member", mods[1], {"membership": "ban"}, rest[changes + i], a)
        gen.send("m.room.member", mods[2], {"membership": "leave"}, rest[2 * changes + i], b)
    gen.send("m.room.topic", mods[3], {"topic": "A"}, "", a)
    gen.send("m.room.topic", mods[4], {"topic": "B"}, "", b)
    levels_b = {u: 50 for u in mods}
    levels_b[rest[-1]] = 50
    gen.send("m.room.power_levels", mods[5], gen.pl_content(levels_b), "", b)  # not allowed (< 100)
    for i in range(changes):
        u = gen.user(len(users) + i)
        gen.send("m.room.member", u, {"membership": "join"}, u, a if i % 2 else b)
        gen.send("m.room.topic", rng.choice(mods[3:]), {"topic": f"t{i}"}, "", a if i % 3 else b)
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=3_000, help="extra auth-chain events")
    parser.add_argument("--changes", type=int, default=300, help="bans/leaves/joins per branch")
    parser.add_argument("--room-version", default="12")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="resolve runs (best and median shown)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rv = get_room_version(args.room_version)
    t0 = time.perf_counter()
    gen = RoomGenerator(rv)
    users = build_base(gen, args.members, args.history, rng)
    a, b = fork(gen, users, rng, min(args.changes, max(1, (args.members - 20) // 3)))
    t1 = time.perf_counter()

    prep = prepare([a, b])
    rounds = 0
    while ids := prep.needed_event_ids():
        rounds += 1
        prep.add_events(gen.events[i] for i in ids)
    t2 = time.perf_counter()
    check_auth  # noqa: B018 - imported up front so the lazy import is not timed
    runs: list[float] = []
    for _ in range(max(1, args.repeat)):
        t = time.perf_counter()
        result = resolve(rv, [a, b], prep.events_by_id)
        runs.append(time.perf_counter() - t)
    best, median = min(runs), statistics.median(runs)
    full = full_conflicted_set(rv, [a, b], prep.events_by_id)

    loaded = len(prep.events_by_id)
    print(f"room version {rv.identifier}, {args.members} members, {len(gen.events)} events generated "
          f"in {t1 - t0:.2f}s")
    print(f"state sizes: {len(a)} / {len(b)}; conflicted keys: {len(prep.conflicted)}; "
          f"unconflicted keys: {len(prep.unconflicted)}")
    print(f"prepare loop: {rounds} rounds, {loaded} events loaded, {t2 - t1:.3f}s")
    print(f"resolve: best {best:.3f}s, median {median:.3f}s wall over {len(runs)} runs; "
          f"full conflicted set {len(full)} events; auth closure {loaded} events")
    print(f"throughput (best run): {len(full) / best:,.0f} conflicted events/s, "
          f"{loaded / best:,.0f} closure events/s")
    print(f"resolved state: {len(result)} entries; power levels {result[PL]}")


if __name__ == "__main__":
    main()
