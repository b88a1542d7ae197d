"""Composition of the rooms core: stores, persister, event creator, notifier (issue 4).

Part of the composition root (``homeserver/app/``): builds the objects of the write path and the
streams once per process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from homeserver.api.ports import RemoteEventFetcher
from homeserver.events.federation_reads import RoomHistoryReader
from homeserver.events.input_queue import RoomInput
from homeserver.events.persister import EventPersister
from homeserver.events.serialize import EventSerializer
from homeserver.rooms.messages import EventCreator
from homeserver.rooms.visibility import HistoryVisibilityFilter
from homeserver.storage.ids import IdAllocator, StreamPositionTracker
from homeserver.storage.pool import DatabasePool
from homeserver.storage.stores import Stores
from homeserver.storage.stores.events import EventStore
from homeserver.storage.stores.rooms import RoomStore
from homeserver.storage.stores.state_groups import StateGroupStore
from homeserver.streams import registry
from homeserver.streams.notifier import Notifier
from homeserver.streams.writer import StreamWriter
from homeserver.util.clock import Clock
from sc_proto.crypto.keys import SigningKey, generate_signing_key, read_signing_keys, write_signing_keys

logger = logging.getLogger(__name__)


def load_or_create_signing_key(path: str) -> SigningKey:
    """Reads the server's signing key; creates one (and the file, mode 0600) when the file is missing."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            keys = read_signing_keys(f.read())
        if not keys:
            raise ValueError(f"no signing key in {path}")
        return keys[0]
    key = generate_signing_key("a_1")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(write_signing_keys([key]))
    logger.warning("signing key file was missing: generated a new key in %s", path)
    return key


@dataclass
class RoomServices:
    """The rooms core of one process."""

    events: EventStore
    rooms: RoomStore
    state_groups: StateGroupStore
    notifier: Notifier
    stream_tracker: StreamPositionTracker
    persister: EventPersister
    creator: EventCreator
    serializer: EventSerializer
    visibility: HistoryVisibilityFilter
    """History visibility: ``filter_events_for_client`` and room-state access (``/sync``, ``/messages``)."""
    _history: RoomHistoryReader | None = None

    @property
    def room_input(self) -> RoomInput:
        """The room input (:class:`homeserver.api.services.RoomEventsAPI` for the federation adapter)."""
        return self.creator.input

    @property
    def history(self) -> RoomHistoryReader:
        """Graph reads served to other servers (:class:`homeserver.api.services.RoomHistoryAPI`)."""
        if self._history is None:
            self._history = RoomHistoryReader(self.events, self.rooms, self.state_groups, self.creator.state)
        return self._history


async def build_room_services(
    pool: DatabasePool,
    clock: Clock,
    server_name: str,
    signing_key: SigningKey,
    stores: Stores,
    notifier: Notifier,
    fetcher: RemoteEventFetcher | None = None,
) -> RoomServices:
    """Builds the rooms core over ``stores``; reads the events stream's position from the database.

    Args:
        fetcher: how the room input asks other servers for missing events (default: local only).
    """
    engine = pool.engine
    stream_ids = registry.id_allocator(registry.EVENTS, engine)
    room_nids = IdAllocator(engine, "rooms", "room_nid", "room_nid_seq")
    events, rooms, state_groups = stores.events, stores.rooms, stores.state_groups
    stream = StreamWriter(registry.EVENTS.name, stream_ids, await events.get_max_stream_ordering(), notifier)
    tracker = stream.tracker
    persister = EventPersister(pool, events, state_groups, stream, clock.time_msec)
    creator = EventCreator(
        server_name, signing_key, pool, events, rooms, state_groups, persister, room_nids, clock.time_msec,
        fetcher=fetcher,
    )
    serializer = EventSerializer(events, state_groups, clock.time_msec)
    visibility = HistoryVisibilityFilter(events, rooms, state_groups, creator)
    return RoomServices(
        events, rooms, state_groups, notifier, tracker, persister, creator, serializer, visibility=visibility
    )
