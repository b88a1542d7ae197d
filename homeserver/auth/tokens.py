"""Token generation and digests.

Tokens are 256-bit random values. Only their SHA-256 digest is stored (docs/adr/0002). Each kind carries a
short prefix so a leaked string is recognisable in a secret scanner (``sct_`` access, ``scr_`` refresh,
``scl_`` login token); the prefix carries no authority.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass

ACCESS_PREFIX = "sct_"
REFRESH_PREFIX = "scr_"
LOGIN_TOKEN_PREFIX = "scl_"  # noqa: S105 - a prefix, not a secret

_DEVICE_ALPHABET = string.ascii_uppercase


def new_token(prefix: str) -> str:
    """Returns a fresh random token with ``prefix`` (URL-safe characters only)."""
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The stored form of a token: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_device_id() -> str:
    """A new device ID: ten upper-case letters, as clients commonly expect."""
    return "".join(secrets.choice(_DEVICE_ALPHABET) for _ in range(10))


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What the token store knows about an access token.

    Attributes:
        user_id: the owner.
        device_id: the device the token belongs to (None for some appservice/admin tokens).
        token_id: the token's database id.
        expires_at_ms: expiry time in ms since the epoch, or None for never.
        is_admin: the owner is a server admin.
        is_guest: the owner is a guest account.
        deactivated: the owner's account is deactivated.
        locked: the owner's account is locked.
        suspended: the owner's account is suspended (endpoints decide what that forbids).
    """

    user_id: str
    device_id: str | None
    token_id: int | str
    expires_at_ms: int | None = None
    is_admin: bool = False
    is_guest: bool = False
    deactivated: bool = False
    locked: bool = False
    suspended: bool = False
