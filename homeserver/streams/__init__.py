"""Streams: positions, tokens and the notifier (DESIGN.md 2.7)."""
