"""Small shared utilities (clock wrapper)."""

from homeserver.util.clock import Clock

__all__ = ["Clock"]
