"""Account invariants under real concurrency (real threads, both engines).

AUTH-4: concurrent logins never leave a user with more sessions than the limit.
RACE-5/7: concurrent password attempts never reserve more checks than the lockout limit.
Issue 10: concurrent creations of one user ID create it once (the others are told it is taken).
"""

from __future__ import annotations

from twisted.internet import defer

from homeserver.storage.stores.devices import DeviceStore, NewSession
from homeserver.storage.stores.profiles import ProfileStore
from homeserver.storage.stores.users import UserStore
from tests.storage.harness import TestDatabase, ThreadCallbackReactor


def _session(i: int) -> NewSession:
    return NewSession(
        user_id="@alice:test:8448", device_id=f"DEV{i}", display_name=None, access_hash=f"hash{i}",
        access_expires_at_ts=None, refresh_hash=None, refresh_expires_at_ts=None, ip="127.0.0.1", user_agent="t",
    )


class AccountConcurrencyTests:
    def test_concurrent_logins_respect_the_session_limit(self, prepared_database: TestDatabase) -> None:
        """AUTH-4: 12 logins at once with a limit of 3 end with exactly 3 sessions."""
        reactor = ThreadCallbackReactor()
        pool = prepared_database.make_pool(reactor=reactor, run_in_thread=True, pool_max=6, txn_retries=50)
        try:
            users, devices = UserStore(pool), DeviceStore(pool)
            assert reactor.wait(defer.ensureDeferred(users.create_user("@alice:test:8448", None, 1)))
            logins = [defer.ensureDeferred(devices.create_session(_session(i), 1000 + i, 3)) for i in range(12)]
            reactor.wait(defer.gatherResults(logins))
            left = reactor.wait(defer.ensureDeferred(devices.get_devices("@alice:test:8448")))
            assert len(left) == 3
        finally:
            prepared_database.close_pools(reactor)

    def test_concurrent_attempts_never_exceed_lockout_limit(self, prepared_database: TestDatabase) -> None:
        """RACE-5/7: 30 simultaneous reservations with a limit of 5 allow exactly 5."""
        reactor = ThreadCallbackReactor()
        pool = prepared_database.make_pool(reactor=reactor, run_in_thread=True, pool_max=6, txn_retries=50)
        try:
            users = UserStore(pool)
            assert reactor.wait(defer.ensureDeferred(users.create_user("@alice:test:8448", None, 1)))
            attempts = [
                defer.ensureDeferred(
                    users.reserve_login_attempt("@alice:test:8448", 10_000, max_attempts=5, window_ms=60_000, lock_ms=60_000)
                )
                for _ in range(30)
            ]
            decisions = reactor.wait(defer.gatherResults(attempts))
            assert sum(d.allowed for d in decisions) == 5
        finally:
            prepared_database.close_pools(reactor)

    def test_concurrent_creations_of_one_user_id(self, prepared_database: TestDatabase) -> None:
        """Eight creations of one user ID at once (real threads): exactly one creates it, none fails."""
        reactor = ThreadCallbackReactor()
        pool = prepared_database.make_pool(reactor=reactor, run_in_thread=True, pool_max=6, txn_retries=50)
        try:
            users = UserStore(pool)
            creations = [
                defer.ensureDeferred(users.create_user("@bob:test:8448", f"hash{i}", i, displayname=f"Bob {i}"))
                for i in range(8)
            ]
            results = reactor.wait(defer.gatherResults(creations))
            assert sorted(results) == [False] * 7 + [True]
            winner = results.index(True)
            user = reactor.wait(defer.ensureDeferred(users.get_user("@bob:test:8448")))
            assert user is not None and user.password_hash == f"hash{winner}"
            profile = reactor.wait(defer.ensureDeferred(ProfileStore(pool).get_profile("@bob:test:8448")))
            assert profile is not None and profile.displayname == f"Bob {winner}"
        finally:
            prepared_database.close_pools(reactor)
