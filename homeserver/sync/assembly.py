"""Builds the sync engine with the standard sources (called by the composition root).

Extension sources (typing, receipts, presence, to-device, device lists, the drive) are registered on
the returned registry by whoever builds them, after these; the engine needs no change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from homeserver.events.serialize import EventSerializer
from homeserver.storage.ids import StreamPositionTracker
from homeserver.storage.stores.account_data import AccountDataStore
from homeserver.storage.stores.events import EventStore
from homeserver.storage.stores.rooms import RoomStore
from homeserver.storage.stores.state_groups import StateGroupStore
from homeserver.streams.notifier import Notifier
from homeserver.sync.engine import SyncEngine
from homeserver.sync.sources.account_data import AccountDataSource
from homeserver.sync.sources.registry import SyncSourceRegistry
from homeserver.sync.sources.room_events import EventVisibility, RoomEventsSource


@dataclass
class SyncServices:
    """The sync engine and its standard sources."""

    engine: SyncEngine
    registry: SyncSourceRegistry
    room_events: RoomEventsSource
    account_data: AccountDataSource


def build_sync_services(
    *,
    events: EventStore,
    rooms: RoomStore,
    state_groups: StateGroupStore,
    serializer: EventSerializer,
    tracker: StreamPositionTracker,
    notifier: Notifier,
    visibility: EventVisibility,
    account_data: AccountDataStore,
    time_msec: Callable[[], int],
) -> SyncServices:
    """Registers the room-events and account-data sources and hooks account-data writes to the
    notifier (stream ``account_data``, the writing user)."""
    registry = SyncSourceRegistry()
    room_events = RoomEventsSource(events, rooms, state_groups, serializer, tracker, visibility)
    account_source = AccountDataSource(account_data, notifier)
    registry.register(room_events)
    registry.register(account_source)

    def account_data_written(user_id: str, stream_id: int) -> None:
        account_source.on_written(stream_id)
        notifier.on_new(AccountDataSource.stream, stream_id, users=[user_id])

    account_data.on_written.append(account_data_written)
    engine = SyncEngine(registry, notifier, time_msec)
    return SyncServices(engine, registry, room_events, account_source)
