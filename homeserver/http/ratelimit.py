"""Token-bucket rate limiting per (action, key), where the key is a user ID or a client IP.

Theory of operation
-------------------
Each (action, key) pair owns a bucket holding up to ``burst`` tokens. A request costs one token
(or ``cost``); tokens flow back at ``per_second``. A request finding too few tokens is refused with
429 ``M_LIMIT_EXCEEDED`` and ``retry_after_ms``: the time until enough tokens have flowed back.

Invariants:

* ``0 <= tokens <= burst`` for every stored bucket, and a refusal never consumes tokens.
* A bucket that has refilled completely is indistinguishable from no bucket, so idle buckets are
  dropped by a periodic sweep; memory grows only with recently active keys. A hard cap on the
  number of buckets evicts the least recently used ones if even that is not enough.
* Time comes only from the injected ``time_msec`` callable (no clock reads here).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimitRule:
    """How fast an action may be performed.

    Attributes:
        per_second: sustained rate (tokens regained per second), > 0.
        burst: bucket size: how many actions may be performed at once after a quiet period, >= 1.
    """

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and math.isfinite(self.per_second)):
            raise ValueError(f"per_second must be a positive finite number, not {self.per_second!r}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, not {self.burst!r}")


def rate_limit_key(user_id: str | None, client_ip: str) -> str:
    """Returns the bucket key for a request: the user ID if authenticated, else the client IP.

    The two namespaces cannot collide: user IDs start with ``@``, IPs never do.
    """
    return user_id if user_id else f"ip:{client_ip}"


@dataclass
class _Bucket:
    tokens: float
    updated_ms: int


class RateLimiter:
    """Per-(action, key) token buckets.

    Args:
        time_msec: returns the current time in milliseconds (the injected clock).
        rules: action name -> :class:`RateLimitRule` or ``(per_second, burst)``.
        enabled: False turns every check into a no-op (one switch for the whole server).
        exempt: ``exempt(key) -> bool``; exempt keys are never limited (e.g. appservices).
        admins_exempt: :meth:`check_user` skips admins.
        sweep_interval_ms: how often idle buckets are dropped.
        max_buckets: hard cap on stored buckets; beyond it the least recently used are evicted.

    Raises:
        ValueError: a rule is invalid.
    """

    def __init__(
        self,
        time_msec: Callable[[], int],
        rules: Mapping[str, RateLimitRule | tuple[float, int]],
        enabled: bool = True,
        exempt: Callable[[str], bool] | None = None,
        *,
        admins_exempt: bool = False,
        sweep_interval_ms: int = 60_000,
        max_buckets: int = 100_000,
    ) -> None:
        self._time_msec = time_msec
        self._rules: dict[str, RateLimitRule] = {
            action: rule if isinstance(rule, RateLimitRule) else RateLimitRule(*rule)
            for action, rule in rules.items()
        }
        self.enabled = enabled
        self.admins_exempt = admins_exempt
        self._exempt = exempt
        self._sweep_interval_ms = sweep_interval_ms
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._last_sweep_ms = time_msec()

    def add_rules(self, rules: Mapping[str, RateLimitRule]) -> None:
        """Adds the rules a feature contributes (composition root, before serving).

        Raises:
            ValueError: an action already has a rule (two owners of one action).
        """
        for action in rules:
            if action in self._rules:
                raise ValueError(f"rate-limit action {action!r} already has a rule")
        self._rules.update(rules)

    @property
    def bucket_count(self) -> int:
        """Number of buckets currently stored (for metrics and tests)."""
        return len(self._buckets)

    def rule(self, action: str) -> RateLimitRule:
        """Returns the rule for ``action``.

        Raises:
            KeyError: no rule is configured for ``action`` (a programming error).
        """
        try:
            return self._rules[action]
        except KeyError:
            raise KeyError(f"no rate-limit rule for action {action!r}") from None

    def check_user(self, action: str, user_id: str, is_admin: bool, cost: float = 1.0) -> None:
        """:meth:`check` keyed by user, skipped for admins when ``admins_exempt`` is set (config
        ``ratelimits.admins_exempt``)."""
        if not (self.admins_exempt and is_admin):
            self.check(action, user_id, cost)

    def check(self, action: str, key: str, cost: float = 1.0) -> None:
        """Consumes ``cost`` tokens from the (action, key) bucket, or refuses the request.

        Args:
            action: the rate-limited action (must have a rule).
            key: the user ID or IP the limit applies to.
            cost: tokens this request consumes.

        Raises:
            MatrixError: 429 ``M_LIMIT_EXCEEDED`` with a positive integer ``retry_after_ms``.
            KeyError: ``action`` has no rule.
        """
        rule = self.rule(action)
        if not self.enabled or self._is_exempt(key):
            return
        now = self._time_msec()
        self._maybe_sweep(now)
        tokens = self._available(rule, (action, key), now)
        if tokens + 1e-9 < cost:
            raise MatrixError(
                429,
                Codes.LIMIT_EXCEEDED,
                "Too many requests",
                extra={"retry_after_ms": self._wait_ms(rule, tokens, cost)},
            )
        self._store((action, key), tokens - cost, now)

    def can_do(self, action: str, key: str, cost: float = 1.0) -> bool:
        """Returns whether :meth:`check` would currently allow the request, consuming nothing."""
        return self.time_until_allowed_ms(action, key, cost) == 0

    def time_until_allowed_ms(self, action: str, key: str, cost: float = 1.0) -> int:
        """Returns how long (ms) until :meth:`check` would allow the request (0: allowed now)."""
        rule = self.rule(action)
        if not self.enabled or self._is_exempt(key):
            return 0
        tokens = self._available(rule, (action, key), self._time_msec())
        if tokens + 1e-9 >= cost:
            return 0
        return self._wait_ms(rule, tokens, cost)

    def _is_exempt(self, key: str) -> bool:
        return self._exempt is not None and self._exempt(key)

    def _available(self, rule: RateLimitRule, bucket_key: tuple[str, str], now: int) -> float:
        bucket = self._buckets.get(bucket_key)
        if bucket is None:
            return float(rule.burst)
        # A clock stepping backwards must not mint tokens (or take them away).
        elapsed_ms = max(0, now - bucket.updated_ms)
        return min(float(rule.burst), bucket.tokens + elapsed_ms * rule.per_second / 1000.0)

    @staticmethod
    def _wait_ms(rule: RateLimitRule, tokens: float, cost: float) -> int:
        # The epsilon absorbs float noise (0.99 tokens must mean 1 ms at 10/s, not 2).
        return max(1, math.ceil((cost - tokens) * 1000.0 / rule.per_second - 1e-6))

    def _store(self, bucket_key: tuple[str, str], tokens: float, now: int) -> None:
        bucket = self._buckets.get(bucket_key)
        if bucket is None:
            self._buckets[bucket_key] = _Bucket(tokens, now)
            if len(self._buckets) > self._max_buckets:
                evicted, _ = self._buckets.popitem(last=False)
                logger.warning("rate limiter full; evicting bucket for action %s", evicted[0])
        else:
            bucket.tokens, bucket.updated_ms = tokens, now
            self._buckets.move_to_end(bucket_key)

    def _maybe_sweep(self, now: int) -> None:
        if now - self._last_sweep_ms < self._sweep_interval_ms:
            return
        self._last_sweep_ms = now
        full = [
            bucket_key
            for bucket_key, bucket in self._buckets.items()
            if self._available(self._rules[bucket_key[0]], bucket_key, now) >= self._rules[bucket_key[0]].burst
        ]
        for bucket_key in full:
            del self._buckets[bucket_key]
