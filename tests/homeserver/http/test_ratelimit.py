"""Tests for homeserver.http.ratelimit: token buckets on an injected clock."""

from __future__ import annotations

import pytest
from twisted.trial.unittest import SynchronousTestCase

from homeserver.http.ratelimit import RateLimiter, RateLimitRule, rate_limit_key
from sc_proto.errors import Codes, MatrixError


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


class RateLimiterTests(SynchronousTestCase):
    """Burst, refill, retry_after_ms, switches, exemptions and memory bounds."""

    def setUp(self) -> None:
        self.time = FakeTime()
        self.limiter = RateLimiter(self.time, {"message": (0.5, 3), "login": RateLimitRule(10.0, 1)})

    def refused_after_ms(self, action: str, key: str) -> int:
        with pytest.raises(MatrixError) as error:
            self.limiter.check(action, key)
        assert error.value.http_status == 429
        assert error.value.errcode == Codes.LIMIT_EXCEEDED
        retry = error.value.to_json()["retry_after_ms"]
        assert isinstance(retry, int) and retry > 0
        return retry

    def test_burst_then_refused(self) -> None:
        """``burst`` requests pass at once; the next is refused with a positive retry_after_ms."""
        for _ in range(3):
            self.limiter.check("message", "@a:test:8448")
        self.assertEqual(self.refused_after_ms("message", "@a:test:8448"), 2000)

    def test_refill_over_time(self) -> None:
        """Tokens flow back at per_second; retry_after_ms shrinks as time passes."""
        for _ in range(3):
            self.limiter.check("message", "@a:test:8448")
        self.time.now += 1500
        self.assertEqual(self.refused_after_ms("message", "@a:test:8448"), 500)
        self.time.now += 500
        self.limiter.check("message", "@a:test:8448")
        self.assertEqual(self.refused_after_ms("message", "@a:test:8448"), 2000)

    def test_refill_caps_at_burst(self) -> None:
        """A long pause refills only up to the burst size."""
        self.limiter.check("message", "@a:test:8448")
        self.time.now += 10**9
        for _ in range(3):
            self.limiter.check("message", "@a:test:8448")
        self.refused_after_ms("message", "@a:test:8448")

    def test_refusal_does_not_consume(self) -> None:
        """Refused requests do not push the retry time further out."""
        for _ in range(3):
            self.limiter.check("message", "@a:test:8448")
        for _ in range(5):
            self.assertEqual(self.refused_after_ms("message", "@a:test:8448"), 2000)

    def test_retry_after_is_at_least_one_ms(self) -> None:
        """Even a nearly full token gives an integer retry_after_ms >= 1."""
        self.limiter.check("login", "ip:1.2.3.4")
        self.time.now += 99
        self.assertEqual(self.refused_after_ms("login", "ip:1.2.3.4"), 1)

    def test_can_do_does_not_consume(self) -> None:
        """can_do and time_until_allowed_ms only look."""
        for _ in range(10):
            self.assertTrue(self.limiter.can_do("login", "@a:test:8448"))
        self.limiter.check("login", "@a:test:8448")
        self.assertFalse(self.limiter.can_do("login", "@a:test:8448"))
        self.assertEqual(self.limiter.time_until_allowed_ms("login", "@a:test:8448"), 100)

    def test_keys_and_actions_are_independent(self) -> None:
        """Per-user and per-IP keys, and different actions, have separate buckets."""
        self.limiter.check("login", rate_limit_key("@a:test:8448", "1.2.3.4"))
        self.limiter.check("login", rate_limit_key(None, "1.2.3.4"))
        self.limiter.check("login", rate_limit_key("@b:test:8448", "1.2.3.4"))
        self.limiter.check("message", rate_limit_key("@a:test:8448", "1.2.3.4"))
        self.refused_after_ms("login", "@a:test:8448")
        self.refused_after_ms("login", "ip:1.2.3.4")

    def test_rate_limit_key(self) -> None:
        """Users are keyed by ID, anonymous requests by IP, in separate namespaces."""
        self.assertEqual(rate_limit_key("@a:test:8448", "1.2.3.4"), "@a:test:8448")
        self.assertEqual(rate_limit_key(None, "1.2.3.4"), "ip:1.2.3.4")

    def test_disabled_switch(self) -> None:
        """enabled=False turns every check into a no-op, and can be flipped at run time."""
        limiter = RateLimiter(self.time, {"login": (1.0, 1)}, enabled=False)
        for _ in range(100):
            limiter.check("login", "@a:test:8448")
        self.assertTrue(limiter.can_do("login", "@a:test:8448"))
        self.assertEqual(limiter.bucket_count, 0)
        limiter.enabled = True
        limiter.check("login", "@a:test:8448")
        self.assertFalse(limiter.can_do("login", "@a:test:8448"))

    def test_exemption(self) -> None:
        """Exempt keys are never limited; others still are."""
        limiter = RateLimiter(self.time, {"login": (1.0, 1)}, exempt=lambda key: key == "@admin:test:8448")
        for _ in range(100):
            limiter.check("login", "@admin:test:8448")
        self.assertEqual(limiter.time_until_allowed_ms("login", "@admin:test:8448"), 0)
        limiter.check("login", "@user:test:8448")
        with pytest.raises(MatrixError):
            limiter.check("login", "@user:test:8448")

    def test_idle_buckets_expire(self) -> None:
        """Buckets that have refilled completely are dropped by the periodic sweep."""
        limiter = RateLimiter(self.time, {"login": (1.0, 2)}, sweep_interval_ms=1000)
        for i in range(50):
            limiter.check("login", f"@u{i}:test:8448")
        self.assertEqual(limiter.bucket_count, 50)
        self.time.now += 1000  # one token back each: full again
        limiter.check("login", "@fresh:test:8448")
        self.assertEqual(limiter.bucket_count, 1)

    def test_partially_refilled_buckets_survive_sweep(self) -> None:
        """The sweep keeps buckets that still remember consumed tokens."""
        limiter = RateLimiter(self.time, {"login": (1.0, 5)}, sweep_interval_ms=1000)
        for _ in range(5):
            limiter.check("login", "@a:test:8448")
        self.time.now += 1000
        limiter.check("login", "@b:test:8448")
        self.assertEqual(limiter.bucket_count, 2)
        self.assertFalse(limiter.can_do("login", "@a:test:8448", cost=2))

    def test_hard_cap_evicts_least_recently_used(self) -> None:
        """The number of buckets never exceeds max_buckets."""
        limiter = RateLimiter(self.time, {"login": (1.0, 1)}, max_buckets=10)
        for i in range(25):
            limiter.check("login", f"@u{i}:test:8448")
        self.assertEqual(limiter.bucket_count, 10)
        self.assertTrue(limiter.can_do("login", "@u0:test:8448"))  # evicted, so forgiven
        self.assertFalse(limiter.can_do("login", "@u24:test:8448"))

    def test_clock_going_backwards(self) -> None:
        """A clock step backwards neither mints nor removes tokens."""
        self.limiter.check("login", "@a:test:8448")
        self.time.now -= 10_000
        self.assertFalse(self.limiter.can_do("login", "@a:test:8448"))

    def test_cost(self) -> None:
        """Requests may cost more than one token."""
        self.limiter.check("message", "@a:test:8448", cost=3)
        self.refused_after_ms("message", "@a:test:8448")
        with pytest.raises(MatrixError) as error:
            self.limiter.check("message", "@b:test:8448", cost=4)
        self.assertEqual(error.value.to_json()["retry_after_ms"], 2000)

    def test_unknown_action(self) -> None:
        """An action without a rule is a programming error (KeyError), not a 429."""
        with pytest.raises(KeyError):
            self.limiter.check("nope", "@a:test:8448")

    def test_invalid_rules(self) -> None:
        """Non-positive rates and bursts are refused at construction."""
        for rule in ((0, 1), (-1.0, 1), (float("inf"), 1), (float("nan"), 1), (1.0, 0)):
            with self.subTest(rule=rule), pytest.raises(ValueError):
                RateLimiter(self.time, {"x": rule})


class CheckUserTests(SynchronousTestCase):
    """check_user: per-user limits, with admins skipped only when admins_exempt is configured."""

    def setUp(self) -> None:
        self.time = FakeTime()

    def test_admins_exempt(self) -> None:
        limiter = RateLimiter(self.time, {"message": (1.0, 1)}, admins_exempt=True)
        for _ in range(5):
            limiter.check_user("message", "@admin:test:8448", is_admin=True)
        limiter.check_user("message", "@user:test:8448", is_admin=False)
        with pytest.raises(MatrixError) as info:
            limiter.check_user("message", "@user:test:8448", is_admin=False)
        assert info.value.errcode == Codes.LIMIT_EXCEEDED

    def test_admins_limited_when_not_exempt(self) -> None:
        limiter = RateLimiter(self.time, {"message": (1.0, 1)})
        limiter.check_user("message", "@admin:test:8448", is_admin=True)
        with pytest.raises(MatrixError):
            limiter.check_user("message", "@admin:test:8448", is_admin=True)
