"""Server-side search of room events: the indexer (persist hook), request parsing and the search."""

__all__: list[str] = []
