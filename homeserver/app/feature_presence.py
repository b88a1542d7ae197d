"""Wires presence (issue 5) into a homeserver: service, sweep, sync source, hooks and endpoints.

Part of the composition root. With ``presence.enabled: false`` only the endpoints are registered
(they keep their permission checks; GET answers ``offline``, PUT is ignored) and nothing is tracked:
no sync observer, no persister hook, no sweep, no sync source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from homeserver.app.features import Feature, FeatureServices, Provided
from homeserver.events.persister import PersistedEvent
from homeserver.presence.memberships import JoinedRoomsCache
from homeserver.presence.service import PresenceService
from homeserver.presence.state import Timeouts
from homeserver.rest.client.presence import PresenceServlets
from homeserver.sync.sources.presence import PresenceSource

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver

INACTIVE_MEMBERSHIPS = frozenset({"leave", "ban"})
"""Memberships a user's own event for which is not activity (leaving, which deactivation also does)."""


async def wire(hs: Homeserver, _services: FeatureServices) -> Provided:
    """Builds presence from ``hs`` and registers it; provides the service (nothing when disabled)."""
    config = hs.config.presence
    rooms_store = hs.rooms.rooms

    async def load_joined_rooms(user_id: str) -> list[str]:
        nids = await rooms_store.get_rooms_for_user(user_id, ("join",))
        records = await rooms_store.get_rooms_by_nid(list(nids))
        return [records[nid].room_id for nid in nids if nid in records]

    async def user_exists(user_id: str) -> bool:
        return await hs.stores.users.get_user(user_id) is not None

    service: PresenceService | None = None
    if config.enabled:
        service = PresenceService(
            hs.config.server.server_name,
            hs.clock,
            hs.stores.presence,
            JoinedRoomsCache(load_joined_rooms),
            hs.rooms.notifier,
            Timeouts(idle_ms=config.idle_timeout_s * 1000, offline_ms=config.offline_timeout_s * 1000),
        )
        await service.start()
        hs.rooms.persister.on_persisted.append(_persisted_hook(service))
        hs.sync.engine.sync_observers.append(service.user_syncing)
        hs.sync.registry.register(PresenceSource(service))
        hs.reactor.addSystemEventTrigger("before", "shutdown", service.stop)
        joined_rooms = service.memberships.get
    PresenceServlets(
        hs.authenticator,
        hs.ratelimiter,
        service,
        user_exists,
        joined_rooms if service is not None else load_joined_rooms,
    ).register(hs.resource)
    return [service] if service is not None else []


def _persisted_hook(service: PresenceService) -> Callable[[PersistedEvent], None]:
    def on_persisted(persisted: PersistedEvent) -> None:
        event = persisted.stored.event
        if event.type == "m.room.member" and event.state_key is not None:
            service.on_membership(event.state_key, event.room_id, event.membership)
            if event.membership in INACTIVE_MEMBERSHIPS and event.sender == event.state_key:
                return  # leaving (also on deactivation) is not activity; a moderator's kick or ban is
        # Sending counts as activity, right after the commit and before anyone is woken (CHAT-4).
        service.user_active(event.sender)

    return on_persisted


FEATURE = Feature("presence", wire, provides=(PresenceService,))
