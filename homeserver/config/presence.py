"""The ``presence:`` section: online/unavailable/offline tracking (spec module "Presence").

Presence is derived from activity: syncing keeps a user from going offline, sending a message or
setting ``online`` counts as activity, and one periodic sweep applies the timeouts below.
"""

from __future__ import annotations

import attrs

from homeserver.config._options import BOOL, integer, option


@attrs.frozen
class PresenceConfig:
    """Presence tracking and its timeouts."""

    enabled: bool = option(
        True,
        BOOL,
        "Track and share presence. When false nothing is tracked: GET /presence answers 'offline', PUT "
        "is accepted and ignored, and /sync carries no presence events.",
    )
    idle_timeout_s: int = option(
        300,
        integer(minimum=10, maximum=7 * 86400),
        "Seconds without activity (sending a message, setting presence) after which an online user "
        "becomes 'unavailable'.",
    )
    offline_timeout_s: int = option(
        30,
        integer(minimum=5, maximum=86400),
        "Seconds after a user's last /sync ends (with no other sync open) after which they become "
        "'offline'.",
    )
