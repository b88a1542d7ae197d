"""The event write path: per-room input queue and persister (DESIGN.md 2.4)."""
