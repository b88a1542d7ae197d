"""Wires server-side search (issue 5) into a homeserver: index store, persist hooks, ``/search``.

Part of the composition root (``homeserver/app/``). Provides :class:`RoomEventSearch` and
:class:`SearchIndexer` (the index store is ``hs.stores.search``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.app.features import Feature, FeatureServices, Provided
from homeserver.rest.client.search import SearchServlets
from homeserver.search.indexer import SearchIndexer
from homeserver.search.service import RoomEventSearch

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver


async def wire(hs: Homeserver, _services: FeatureServices) -> Provided:
    """Builds the search indexer and service; registers the hooks and the servlet."""
    core = hs.rooms
    store = hs.stores.search
    indexer = SearchIndexer(store)
    core.persister.in_txn_hooks.append(indexer.index_txn)
    core.persister.on_persisted.append(indexer.on_persisted)
    search = RoomEventSearch(
        store, core.events, core.rooms, core.state_groups, core.visibility, core.serializer, core.stream_tracker
    )
    SearchServlets(hs.authenticator, hs.ratelimiter, search).register(hs.resource)
    return [search, indexer]


FEATURE = Feature("search", wire, provides=(RoomEventSearch, SearchIndexer))
