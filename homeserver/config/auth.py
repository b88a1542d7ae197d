"""The ``auth:`` section: token lifetimes, login lockout, sessions, password hashing cost."""

from __future__ import annotations

import attrs

from homeserver.config._options import (
    BOOL,
    choice,
    integer,
    option,
    optional,
    section_meta,
)
from homeserver.config.errors import ConfigError


@attrs.frozen
class LockoutConfig:
    """Temporary lockout of an account after repeated failed logins."""

    max_failed_attempts: int = option(
        5, integer(minimum=0), "Failed logins within window_s that lock the account; 0 disables lockout."
    )
    window_s: int = option(300, integer(minimum=1), "Sliding window (seconds) over which failures count.")
    lockout_duration_s: int = option(900, integer(minimum=1), "How long (seconds) a lockout lasts.")
    response: str = option(
        "rate_limited",
        choice("user_locked", "rate_limited"),
        "How a locked account answers logins: 'rate_limited' (429 M_LIMIT_EXCEEDED with retry_after_ms, "
        "which does not reveal that the account exists) or 'user_locked' (401 M_USER_LOCKED).",
    )


@attrs.frozen
class Argon2Config:
    """Argon2id cost parameters for password hashes (RFC 9106). Raising them re-hashes on next login."""

    time_cost: int = option(3, integer(1, 100), "Number of passes.")
    memory_cost_kib: int = option(65536, integer(8, 4 * 1024 * 1024), "Memory per hash, in KiB.")
    parallelism: int = option(1, integer(1, 64), "Lanes (threads) per hash.")

    def check(self, path: str) -> None:
        """Cross-option checks, called by the parser."""
        if self.memory_cost_kib < 8 * self.parallelism:
            raise ConfigError(
                f"must be at least 8 * parallelism ({8 * self.parallelism}), got {self.memory_cost_kib}",
                f"{path}.memory_cost_kib",
            )


@attrs.frozen
class AuthConfig:
    """Access/refresh tokens, login lockout, session limits and password hashing."""

    access_token_lifetime_ms: int | None = option(
        None,
        optional(integer(minimum=1)),
        "Lifetime of access tokens issued without a refresh token; null means they never expire.",
    )
    refreshable_access_token_lifetime_ms: int = option(
        300_000,
        integer(minimum=1),
        "Lifetime of access tokens issued together with a refresh token (expires_in_ms).",
    )
    refresh_token_lifetime_ms: int | None = option(
        None,
        optional(integer(minimum=1)),
        "Lifetime of an unused refresh token; null means it lasts until it is used.",
    )
    lockout: LockoutConfig = attrs.field(
        factory=LockoutConfig, metadata=section_meta(LockoutConfig, "Lockout after repeated failed logins.")
    )
    max_sessions_per_user: int = option(
        100,
        integer(minimum=0),
        "Most devices (sessions) a user may have; logging in beyond it evicts the oldest session. "
        "0 means unlimited.",
    )
    # Off by default: spec v1.20 removed the query parameter ("Using access tokens").
    allow_access_token_in_query: bool = option(
        False,
        BOOL,
        "Accept ?access_token= on requests (removed from the spec in v1.20; tokens in URLs leak into "
        "proxy logs). Enable only for old clients.",
    )
    argon2: Argon2Config = attrs.field(
        factory=Argon2Config, metadata=section_meta(Argon2Config, "Password hashing cost.")
    )
