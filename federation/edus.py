"""A typed registry of EDU handlers: other parts of the federation adapter plug in per ``edu_type``.

Unknown EDU types are ignored (server-server API: EDUs are best effort). A handler that raises is
logged and does not affect the transaction's answer or the other EDUs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

EDUHandler = Callable[[str, Mapping[str, Any]], Awaitable[None]]
"""``handler(origin, content)`` for one EDU from the authenticated ``origin``."""


class EDURegistry:
    """EDU type -> its handler (one per type)."""

    def __init__(self) -> None:
        self._handlers: dict[str, EDUHandler] = {}

    def register(self, edu_type: str, handler: EDUHandler) -> None:
        """Registers the handler of ``edu_type``.

        Raises:
            ValueError: the type already has a handler (two owners of one EDU type).
        """
        if edu_type in self._handlers:
            raise ValueError(f"EDU type {edu_type!r} already has a handler")
        self._handlers[edu_type] = handler

    def types(self) -> frozenset[str]:
        """The EDU types with a handler."""
        return frozenset(self._handlers)

    async def dispatch(self, origin: str, edu_type: str, content: Mapping[str, Any]) -> bool:
        """Hands one EDU to its handler; returns whether one was registered."""
        handler = self._handlers.get(edu_type)
        if handler is None:
            return False
        try:
            await handler(origin, content)
        except Exception:  # a handler's failure must not fail the transaction
            logger.exception("EDU handler for %s failed", edu_type, extra={"destination": origin})
        return True
