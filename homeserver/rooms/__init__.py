"""Rooms: creation, membership, messages, aliases, directory, visibility."""
