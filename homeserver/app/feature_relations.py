"""Wires relations and threads (issue 5) into a homeserver.

* the relations index is written inside every event's persist transaction (an in-transaction hook),
  and the aggregation cache of the affected events is dropped right after that transaction commits,
  before anyone is told about the event;
* every locally created event passes the relation checks (duplicate annotations, threads off related
  events) in its room's turn;
* the serializer bundles aggregations wherever events are served;
* ``/relations`` and ``/threads`` are registered.

Provides :class:`RelationsService` and :class:`RelationAggregations`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.app.features import Feature, FeatureServices, Provided
from homeserver.relations.aggregations import RelationAggregations
from homeserver.relations.service import RelationsService
from homeserver.rest.client.relations import RelationServlets
from homeserver.storage.pool import Txn
from sc_proto.events.model import Event

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver


async def wire(hs: Homeserver, _services: FeatureServices) -> Provided:
    """Builds the relations store, aggregations and service, and registers them on ``hs``."""
    core = hs.rooms
    store = hs.stores.relations
    aggregations = RelationAggregations(store, core.events, core.visibility)
    service = RelationsService(store, core.events, core.visibility, hs.room_reader)

    def index_relations(txn: Txn, event: Event, stream: int, room_nid: int) -> None:
        changed = store.index_event_txn(txn, event, stream, room_nid)
        if changed:
            txn.call_after(aggregations.invalidate, changed)

    core.persister.in_txn_hooks.append(index_relations)
    core.creator.event_checks.append(service.check_event)
    core.serializer.bundler = aggregations
    RelationServlets(hs.authenticator, service, core.serializer).register(hs.resource)
    return [service, aggregations]


FEATURE = Feature("relations", wire, provides=(RelationsService, RelationAggregations))
