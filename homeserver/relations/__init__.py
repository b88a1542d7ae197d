"""Event relationships: edits, reactions, references, threads and bundled aggregations (issue 5)."""

__all__: list[str] = []
