"""VoIP support: TURN credentials for call media relays (issue 4)."""

__all__: list[str] = []
