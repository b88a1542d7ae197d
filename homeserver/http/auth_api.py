"""The core's :class:`~homeserver.api.services.AuthAPI` for adapters' servlets (media, drive, federation).

Adapters authenticate client requests and check event visibility through this object rather than
the core's :class:`~homeserver.http.auth.Authenticator` and history-visibility filter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.api.services import Requester
from homeserver.http.auth import Authenticator

VisibilityCheck = Callable[[str, str], Awaitable[bool]]
"""``check(user_id, event_id)``: whether history visibility lets the user see the event."""


class ClientAuthAPI:
    """Authenticates client requests for adapters (satisfies ``AuthAPI``).

    Args:
        authenticator: the access-token authenticator.
        can_see_event: the history-visibility check (built by the composition root over the rooms core).
    """

    def __init__(self, authenticator: Authenticator, can_see_event: VisibilityCheck) -> None:
        self._auth = authenticator
        self._can_see_event = can_see_event

    async def authenticate(self, request: Any, *, allow_guest: bool = False) -> Requester:
        """The requester of ``request``, or 401 ``M_MISSING_TOKEN``/``M_UNKNOWN_TOKEN``."""
        found = await self._auth.get_requester(request, allow_guest=allow_guest)
        return Requester(user_id=found.user_id, device_id=found.device_id, is_admin=found.is_admin)

    async def can_see_event(self, user_id: str, event_id: str) -> bool:
        """Whether ``user_id`` may see ``event_id`` (False for unknown events)."""
        return await self._can_see_event(user_id, event_id)
