"""homeserver package."""
