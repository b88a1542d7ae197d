"""Client-Server API servlets, one module per spec area."""

__all__: list[str] = []
