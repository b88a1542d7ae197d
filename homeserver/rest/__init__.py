"""REST servlets: ``client`` (Client-Server API), later ``admin`` and ``internal``."""

__all__: list[str] = []
