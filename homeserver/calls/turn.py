"""TURN credentials for ``GET /voip/turnServer`` (TURN REST API shared-secret scheme).

coturn's ``use-auth-secret`` mode (draft-uberti-behave-turn-rest) accepts any username of the form
``<expiry unix seconds>:<anything>`` whose password is ``base64(HMAC-SHA1(secret, username))``, until
the expiry passes. The homeserver shares the secret with the TURN server and mints such credentials
per request; nothing is stored. The secret is never logged or returned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from homeserver.config.calls import CallsConfig
from sc_proto.errors import Codes, MatrixError


@dataclass(frozen=True)
class TurnCredentials:
    """Credentials for one client, as ``GET /voip/turnServer`` returns them."""

    username: str
    password: str
    uris: tuple[str, ...]
    ttl: int

    def to_json(self) -> dict[str, Any]:
        """The response body."""
        return {"username": self.username, "password": self.password, "uris": list(self.uris), "ttl": self.ttl}

    def __repr__(self) -> str:
        # The password is a bearer credential: keep it out of logs and tracebacks.
        return f"TurnCredentials(username={self.username!r}, uris={self.uris!r}, ttl={self.ttl})"


def turn_username(user_id: str, now_ms: int, lifetime_s: int) -> str:
    """``<expiry>:<user_id>``: the expiry is in whole seconds since the epoch."""
    return f"{now_ms // 1000 + lifetime_s}:{user_id}"


def turn_password(secret: str, username: str) -> str:
    """``base64(HMAC-SHA1(secret, username))`` (standard alphabet, padded), as coturn checks it."""
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class TurnCredentialIssuer:
    """Mints TURN credentials from the ``calls:`` config.

    Args:
        config: the ``calls`` section.
        time_msec: the clock.
    """

    def __init__(self, config: CallsConfig, time_msec: Callable[[], int]) -> None:
        self._config = config
        self._now = time_msec

    @property
    def enabled(self) -> bool:
        """Whether TURN is configured (URIs and a shared secret)."""
        return self._config.turn_enabled

    def issue(self, user_id: str, is_guest: bool) -> TurnCredentials | None:
        """Credentials for ``user_id``; None when TURN is not configured.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` for guests when ``turn_allow_guests`` is off.
        """
        config = self._config
        if not config.turn_enabled or config.turn_shared_secret is None:
            return None
        if is_guest and not config.turn_allow_guests:
            raise MatrixError(403, Codes.FORBIDDEN, "Guest users may not use the TURN server")
        username = turn_username(user_id, self._now(), config.turn_user_lifetime_s)
        password = turn_password(config.turn_shared_secret, username)
        return TurnCredentials(username, password, config.turn_uris, config.turn_user_lifetime_s)
