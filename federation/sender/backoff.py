"""Exponential backoff with jitter and a cap, per destination (pure: time is a parameter).

Theory of operation:

* A destination that fails (no answer, or an answer that says "try later") is not tried again until
  ``retry_last_ts + retry_interval_ms``. The first failure waits ``initial_ms``; each further one
  multiplies the interval by ``multiplier`` up to ``max_ms``, then draws a jitter factor in
  ``[1 - jitter, 1 + jitter]`` so that many servers that lost one peer at the same moment do not
  retry it in lock-step.
* The state is persisted (``federation_destinations``) whenever it changes, so a restart keeps
  waiting instead of hammering a dead server. A success resets it to "no backoff".

Invariants: ``0 <= retry_interval_ms <= max_ms * (1 + jitter)``; an interval is 0 exactly when the
destination is not backing off.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """How long to wait after failures.

    Attributes:
        initial_ms: the wait after the first failure.
        multiplier: growth per further failure.
        max_ms: the cap (before jitter).
        jitter: the relative spread of each wait (0.2: +/- 20 %).
    """

    initial_ms: int = 5_000
    multiplier: float = 2.0
    max_ms: int = 60 * 60 * 1000
    jitter: float = 0.2

    def next_interval(self, previous_ms: int, rand: Callable[[], float] = random.random) -> int:
        """The wait after another failure, given the wait after the previous one (0: none yet).

        Args:
            previous_ms: the current interval, jitter included (the cap bounds the growth).
            rand: a uniform draw in ``[0, 1)`` (tests pass a fixed one).
        """
        if previous_ms <= 0:
            base = float(self.initial_ms)
        else:
            base = min(float(self.max_ms), max(float(self.initial_ms), previous_ms * self.multiplier))
        factor = 1.0 + self.jitter * (2.0 * rand() - 1.0)
        return max(1, int(base * factor))


@dataclass(frozen=True)
class RetryState:
    """A destination's backoff as stored.

    Attributes:
        retry_last_ts: when it last failed (ms), 0 when not backing off.
        retry_interval_ms: the wait after that failure, 0 when not backing off.
    """

    retry_last_ts: int = 0
    retry_interval_ms: int = 0

    @property
    def backing_off(self) -> bool:
        """Whether the last attempt failed."""
        return self.retry_interval_ms > 0

    def ready_at(self) -> int:
        """When the destination may be tried again (ms; 0 when it may be now)."""
        return self.retry_last_ts + self.retry_interval_ms if self.backing_off else 0

    def after_failure(self, now_ms: int, policy: BackoffPolicy, rand: Callable[[], float] = random.random) -> RetryState:
        """The state after another failed attempt at ``now_ms``."""
        return RetryState(now_ms, policy.next_interval(self.retry_interval_ms, rand))
