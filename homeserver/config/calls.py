"""The ``calls:`` section: TURN servers handed to VoIP clients (``GET /voip/turnServer``).

Credentials use the TURN REST API shared-secret scheme that coturn implements
(``use-auth-secret`` / ``static-auth-secret``): the homeserver and the TURN server share a secret,
and the homeserver mints short-lived usernames and passwords from it.
"""

from __future__ import annotations

import attrs

from homeserver.config._options import BOOL, integer, list_of, option, optional, string

# turn:host[:port][?transport=udp|tcp], turns:..., stun:..., stuns:... (RFC 7064/7065 URIs).
TURN_URI = string(r"(?:turns?|stuns?):[^\s]+", "a TURN/STUN URI such as 'turn:turn.example.com:3478?transport=udp'")
TURN_SECRET = string(name="a non-empty shared secret", secret=True)


@attrs.frozen
class CallsConfig:
    """VoIP settings: the TURN servers clients use to relay media."""

    turn_uris: tuple[str, ...] = option(
        (),
        list_of(TURN_URI),
        "TURN (and STUN) URIs given to clients. Empty disables GET /voip/turnServer (it answers 404 M_NOT_FOUND).",
    )
    turn_shared_secret: str | None = option(
        None,
        optional(TURN_SECRET),
        "The secret shared with the TURN server (coturn 'static-auth-secret'); credentials are derived "
        "from it. Without it GET /voip/turnServer answers 404 M_NOT_FOUND.",
        secret=True,
    )
    turn_user_lifetime_s: int = option(
        86400,
        integer(minimum=60, maximum=7 * 86400),
        "How long, in seconds, minted TURN credentials stay valid.",
    )
    turn_allow_guests: bool = option(
        True, BOOL, "Whether guest accounts may get TURN credentials (they get 403 M_FORBIDDEN otherwise)."
    )

    @property
    def turn_enabled(self) -> bool:
        """True when both URIs and a shared secret are configured."""
        return bool(self.turn_uris) and bool(self.turn_shared_secret)
