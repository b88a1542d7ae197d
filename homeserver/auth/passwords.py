"""Password hashing (Argon2id) and the password policy.

Hashing is CPU-heavy by design (tens of milliseconds), so callers run :meth:`PasswordHasher.hash` and
:meth:`PasswordHasher.verify` off the reactor thread. Plain passwords are never logged or stored.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import argon2
import argon2.exceptions

from sc_proto.errors import Codes, MatrixError


@dataclass(frozen=True)
class Argon2Parameters:
    """Argon2id cost parameters (defaults follow RFC 9106's second recommendation, scaled down)."""

    time_cost: int = 3
    memory_cost_kib: int = 65536
    parallelism: int = 1


class PasswordHasher:
    """Hashes and verifies passwords with Argon2id.

    Args:
        params: cost parameters; hashes made with older parameters still verify and are reported
            by :meth:`needs_rehash`.
    """

    def __init__(self, params: Argon2Parameters | None = None) -> None:
        p = params or Argon2Parameters()
        self._hasher = argon2.PasswordHasher(
            time_cost=p.time_cost,
            memory_cost=p.memory_cost_kib,
            parallelism=p.parallelism,
            type=argon2.Type.ID,
        )

    def hash(self, password: str) -> str:
        """Returns the encoded Argon2id hash of ``password`` (salted)."""
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``. A missing or malformed hash never matches."""
        if not password_hash:
            # Spend comparable time so a missing account cannot be told from a wrong password.
            self._hasher.hash(password)
            return False
        try:
            return self._hasher.verify(password_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with parameters other than the current ones."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except argon2.exceptions.InvalidHashError:
            return True


@dataclass(frozen=True)
class PasswordPolicy:
    """What a new password must satisfy. ``enabled=False`` accepts any non-empty password."""

    enabled: bool = True
    minimum_length: int = 10
    require_digit: bool = False
    require_symbol: bool = False
    require_lowercase: bool = False
    require_uppercase: bool = False
    forbid_username: bool = True

    def check(self, password: str, localpart: str | None = None) -> None:
        """Raises 400 ``M_WEAK_PASSWORD`` naming the first requirement ``password`` misses."""
        if not isinstance(password, str) or not password:
            raise MatrixError(400, Codes.WEAK_PASSWORD, "Password must not be empty")
        if len(password.encode("utf-8")) > 512:
            raise MatrixError(400, Codes.INVALID_PARAM, "Password is too long (512 bytes at most)")
        if not self.enabled:
            return
        if len(password) < self.minimum_length:
            raise MatrixError(
                400, Codes.WEAK_PASSWORD, f"Password must be at least {self.minimum_length} characters"
            )
        checks = (
            (self.require_digit, any(c.isdigit() for c in password), "a digit"),
            (self.require_symbol, any(c in string.punctuation for c in password), "a symbol"),
            (self.require_lowercase, any(c.islower() for c in password), "a lowercase letter"),
            (self.require_uppercase, any(c.isupper() for c in password), "an uppercase letter"),
        )
        for required, present, what in checks:
            if required and not present:
                raise MatrixError(400, Codes.WEAK_PASSWORD, f"Password must contain {what}")
        if self.forbid_username and localpart and localpart.lower() in password.lower():
            raise MatrixError(400, Codes.WEAK_PASSWORD, "Password must not contain the user name")

    def as_capability(self) -> dict[str, object]:
        """The policy as advertised by ``GET /_matrix/client/v1/auth_metadata``-style clients.

        Returned in the ``m.password_policy``-like shape Synapse's clients understand
        (``/_matrix/client/v3/password_policy``). # NOTSPEC: the password policy endpoint is a
        widely implemented extension, not in the spec.
        """
        if not self.enabled:
            return {}
        return {
            "m.minimum_length": self.minimum_length,
            "m.require_digit": self.require_digit,
            "m.require_symbol": self.require_symbol,
            "m.require_lowercase": self.require_lowercase,
            "m.require_uppercase": self.require_uppercase,
        }
