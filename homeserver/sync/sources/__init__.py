"""Sync sources: one per stream (room events, account data...), registered in a
:class:`~homeserver.sync.sources.registry.SyncSourceRegistry`."""

__all__: list[str] = []
