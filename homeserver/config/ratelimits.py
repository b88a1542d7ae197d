"""The ``ratelimits:`` section: token-bucket limits per action, per client IP and per user."""

from __future__ import annotations

import attrs

from homeserver.config._options import BOOL, integer, option, positive_number, section_meta


@attrs.frozen
class RateLimit:
    """A token bucket: ``burst`` requests at once, refilled at ``per_second``."""

    per_second: float = option(1.0, positive_number(), "Sustained requests per second.")
    burst: int = option(10, integer(minimum=1), "Requests allowed at once before limiting starts.")


@attrs.frozen
class ActionLimits:
    """The limits of one action, keyed by client IP and by user."""

    per_ip: RateLimit = attrs.field(
        factory=RateLimit, metadata=section_meta(RateLimit, "Keyed by the client IP address.")
    )
    per_user: RateLimit = attrs.field(
        factory=RateLimit,
        metadata=section_meta(
            RateLimit,
            "Keyed by the user: the authenticated user, or for login the account being logged into "
            "(registration has no user yet and uses only per_ip).",
        ),
    )


def _limits(ip: tuple[float, int], user: tuple[float, int]) -> ActionLimits:
    return ActionLimits(per_ip=RateLimit(*ip), per_user=RateLimit(*user))


@attrs.frozen
class RatelimitsConfig:
    """Rate limiting. Limited requests get 429 M_LIMIT_EXCEEDED with retry_after_ms."""

    enabled: bool = option(
        True, BOOL, "Master switch; false disables every limit below (generate-config --no-rate-limits)."
    )
    admins_exempt: bool = option(True, BOOL, "Server admins are not rate limited.")
    login: ActionLimits = attrs.field(
        default=_limits((0.17, 3), (0.17, 3)), metadata=section_meta(ActionLimits, "POST /login attempts.")
    )
    registration: ActionLimits = attrs.field(
        default=_limits((0.17, 3), (0.17, 3)), metadata=section_meta(ActionLimits, "POST /register attempts.")
    )
    message: ActionLimits = attrs.field(
        default=_limits((5.0, 50), (0.2, 10)), metadata=section_meta(ActionLimits, "Sending room events.")
    )
    join: ActionLimits = attrs.field(
        default=_limits((1.0, 20), (0.1, 10)), metadata=section_meta(ActionLimits, "Joining rooms.")
    )
    default_request: ActionLimits = attrs.field(
        default=_limits((20.0, 100), (10.0, 50)), metadata=section_meta(ActionLimits, "Every other request.")
    )
