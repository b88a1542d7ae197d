"""Wires server-side search (issue 5) into a homeserver: index store, persist hooks, ``/search``.

Part of the composition root (``homeserver/app/``); called by ``wire_feature_modules``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.rest.client.search import SearchServlets
from homeserver.search.indexer import SearchIndexer
from homeserver.search.service import RoomEventSearch
from homeserver.storage.stores.search import SearchStore

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver


async def wire(hs: Homeserver) -> None:
    """Builds the search store, indexer and service; registers the hooks and the servlet.

    Sets ``hs.search`` (the :class:`RoomEventSearch`), ``hs.search_store`` and ``hs.search_indexer``.
    """
    core = hs.rooms
    store = SearchStore(hs.pool)
    indexer = SearchIndexer(store)
    core.persister.in_txn_hooks.append(indexer.index_txn)
    core.persister.on_persisted.append(indexer.on_persisted)
    search = RoomEventSearch(
        store, core.events, core.rooms, core.state_groups, core.visibility, core.serializer, core.stream_tracker
    )
    SearchServlets(hs.authenticator, hs.ratelimiter, search).register(hs.resource)
    hs.search = search  # type: ignore[attr-defined]  # feature services hang off the composition root
    hs.search_store = store  # type: ignore[attr-defined]  # (see wire_feature_modules)
    hs.search_indexer = indexer  # type: ignore[attr-defined]
