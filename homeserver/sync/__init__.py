"""``/sync``: the engine, filters and the pluggable sources that fill responses (DESIGN.md 2.7)."""

__all__: list[str] = []
