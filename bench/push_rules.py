"""Benchmark: push-rule glob matching and default-ruleset evaluation against adversarial bodies.

The glob matcher (``homeserver.push.evaluator.compile_glob``) must scan linearly: a many-star pattern
against a long body that almost matches must not backtrack. This prints, for growing body sizes, the
time of each adversarial match and its cost per KiB of body (flat when linear, growing when
quadratic), and the time to evaluate Bob's whole default ruleset for a message with such a body.
It asserts nothing; the correctness of those matches is tested in ``tests/homeserver/test_push_rules.py``.

Run: ``python bench/push_rules.py [--sizes 10000,30000,100000,300000] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from homeserver.push.evaluator import CompiledRuleset, compile_glob
from homeserver.push.rules import default_ruleset

BOB = "@bob:bench.test"
CASES: list[tuple[str, str, bool]] = [
    ("body, 7 stars", "a*a*a*a*a*a*a*b", True),
    ("whole value, 4 stars", "*a*a*a*b*", False),
]
"""``(label, pattern, word_boundary)``: patterns that never match ``"a " * n`` but nearly do everywhere."""


def best_of(repeat: int, run: Callable[..., object], *args: object) -> float:
    """The fastest of ``repeat`` calls of ``run(*args)``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run(*args)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="10000,30000,100000,300000", help="body sizes in 'a ' pairs")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (the best is printed)")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        parser.error("--sizes must be comma-separated integers")
    if not sizes or min(sizes) <= 0 or args.repeat <= 0:
        parser.error("--sizes and --repeat must be positive")
    ruleset = CompiledRuleset(BOB, default_ruleset(BOB))
    print(f"{'case':<24} {'body chars':>11} {'ms':>9} {'us/KiB':>9}")
    for label, pattern, word_boundary in CASES:
        matcher = compile_glob(pattern, word_boundary)
        for size in sizes:
            body = "a " * size
            seconds = best_of(args.repeat, matcher, body)
            print(f"{label:<24} {len(body):>11,} {seconds * 1000:>9.2f} {seconds * 1e6 / (len(body) / 1024):>9.2f}")
    for size in sizes:
        event = {"type": "m.room.message", "sender": "@alice:bench.test", "room_id": "!r:bench.test",
                 "content": {"msgtype": "m.text", "body": "a " * size}}
        seconds = best_of(args.repeat, ruleset.evaluate, event, 5, "Bob")
        print(f"{'default ruleset':<24} {size * 2:>11,} {seconds * 1000:>9.2f} {seconds * 1e6 / (size * 2 / 1024):>9.2f}")


if __name__ == "__main__":
    main()
