"""Composition of the stream writers and the one :class:`~homeserver.storage.stores.Stores` container.

Part of the composition root (``homeserver/app/``). Every database-backed stream other than
``events`` (still allocated by the persister, see ADR 0007) gets its
:class:`~homeserver.streams.writer.StreamWriter` here, from its declaration in
:mod:`homeserver.streams.registry`, seeded with the stream's position at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.pool import DatabasePool
from homeserver.storage.stores import Stores, build_stores
from homeserver.storage.stores.receipts import ReceiptStore
from homeserver.streams import registry
from homeserver.streams.notifier import Notifier
from homeserver.streams.writer import StreamWriter


@dataclass(frozen=True)
class StreamWriters:
    """The stream writers of this process (one per stream it writes)."""

    receipts: StreamWriter
    to_device: StreamWriter
    device_lists: StreamWriter


def _writer(spec: registry.StreamSpec, pool: DatabasePool, current: int, notifier: Notifier) -> StreamWriter:
    return StreamWriter(spec.name, registry.id_allocator(spec, pool.engine), current, notifier)


async def build_stores_and_streams(pool: DatabasePool, notifier: Notifier) -> tuple[Stores, StreamWriters]:
    """Builds the stream writers and every store once, reading the streams' positions."""
    receipts = _writer(registry.RECEIPTS, pool, await ReceiptStore.get_max_stream_id(pool), notifier)
    stores = build_stores(pool, receipts)
    streams = StreamWriters(
        receipts=receipts,
        to_device=_writer(registry.TO_DEVICE, pool, await stores.to_device.get_max_stream_id(), notifier),
        device_lists=_writer(registry.DEVICE_LISTS, pool, await stores.device_lists.get_max_stream_id(), notifier),
    )
    return stores, streams
