"""The federation sender (implements :class:`homeserver.api.ports.FederationSender`; DESIGN.md 2.3, 2.4).

Theory of operation:

* **Fan-out.** ``notify_new_events(position)`` (called by the core after each persisted event)
  wakes one fan-out loop. The loop reads our timeline events after the shard's persisted position
  through :class:`~homeserver.api.services.OutboundEventsAPI` (a page at a time, never past the
  events stream's safe position), works out each event's destinations (servers joined in the state
  after it, plus a membership target's server, minus ourselves, restricted to this shard's
  destinations), then in **one** database transaction records per destination and room the newest
  event it is owed and moves the position past the page. Only then are the PDUs offered to the
  destinations' in-memory queues (:mod:`federation.sender.queue`).
* **Nothing is lost on restart.** What a queue held in memory is described by the database: a
  destination whose rooms hold events newer than it acknowledged starts in catch-up mode, and
  persisted EDUs are still in the outbox. A fresh install starts at the stream's current position
  (history is not replayed to anyone).
* **EDUs.** ``send_edu`` writes persistent types (:data:`PERSISTENT_EDU_TYPES`) to the outbox
  before returning, then pokes the queues; ephemeral types go to memory only.
* **Sharding.** :func:`destination_shard` maps a destination to one of ``shards`` sender
  processes (a stable hash, so every process agrees); a sender fans out and sends only for its
  own shard, and keeps one position row per shard. Today one process runs shard 0 of 1.
  Changing the number of shards needs the queues drained (like the event persisters').

Invariants: the shard position never moves backwards, and never past an event whose
destination rows are not committed (pages without destinations may leave it up to
:data:`POSITION_WRITE_INTERVAL` behind: re-reading them finds no destinations again, as an
event's destinations depend only on the state after it); our own server is never a destination; at most one
transaction per destination is in flight (the queue's guard).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from federation.interfaces import FederationHttp
from federation.sender.queue import DestinationQueue, QueueSettings
from federation.sender.store import SenderStore
from federation.sender.transactions import QueuedEdu, QueuedPdu, TransactionIds
from homeserver.api.services import OutboundEventsAPI
from homeserver.identity import LocalServer
from homeserver.storage.pool import DatabasePool
from homeserver.util.clock import Clock, DelayedCall
from sc_proto.errors import InvalidIdentifierError
from sc_proto.identifiers import ServerName

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

PERSISTENT_EDU_TYPES = frozenset({"m.direct_to_device", "m.device_list_update", "m.signing_key_update"})
"""EDU types that must survive a restart (to-device delivery is a promise to the sender)."""


POSITION_WRITE_INTERVAL = 1000
"""A page that owes nobody anything moves the persisted position only this far behind (a restart
re-reads at most this many events, which have no destinations: one write per page is saved in
rooms without other servers)."""


def destination_shard(destination: str, shards: int) -> int:
    """The sender shard (``0 <= shard < shards``) that serves ``destination`` (stable across processes)."""
    if shards <= 1:
        return 0
    digest = hashlib.sha256(destination.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


@dataclass(frozen=True)
class SenderSettings:
    """How the sender runs.

    Attributes:
        queue: per-destination bounds and backoff.
        fanout_batch: events examined per fan-out page.
        refanout_delay_s: when notified of a position the stream has not reached yet (a lower
            ordering still in flight), look again after this long.
        shard: this process's shard.
        shards: how many sender shards there are.
        persistent_edu_types: EDU types written to the outbox.
    """

    queue: QueueSettings = field(default_factory=QueueSettings)
    fanout_batch: int = 200
    refanout_delay_s: float = 1.0
    shard: int = 0
    shards: int = 1
    persistent_edu_types: frozenset[str] = PERSISTENT_EDU_TYPES


class FederationSenderService:
    """Sends our PDUs and EDUs to other servers.

    Built before the database exists (the composition root hands it to the core as a port);
    :meth:`start` gives it the database and the core's events reader. Until then notifications
    are remembered and EDUs held in memory.

    Args:
        server_name: our server name.
        clock: time and timers.
        http: signed federation requests.
        settings: bounds, backoff and shard.
        rand: uniform draws in ``[0, 1)`` (backoff jitter; tests fix it).
    """

    def __init__(
        self,
        server_name: str,
        clock: Clock,
        http: FederationHttp,
        settings: SenderSettings | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._local = LocalServer(server_name)
        self._clock = clock
        self._http = http
        self._settings = settings or SenderSettings()
        self._rand = rand
        self._txn_ids = TransactionIds(clock.time_msec())
        self._queues: dict[str, DestinationQueue] = {}
        self._store: SenderStore | None = None
        self._events: OutboundEventsAPI | None = None
        self._position = 0
        self._persisted_position = 0
        self._wanted = 0
        self._fanning = False
        self._fan_again = False
        self._refanout: DelayedCall | None = None
        self._early_edus: list[tuple[list[str], str, JsonDict]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self, pool: DatabasePool, events: OutboundEventsAPI) -> None:
        """Resumes from the database: the shard's position, owed destinations, queued EDUs."""
        store = SenderStore(pool)
        position = await store.get_position(self._settings.shard)
        if position is None:
            position = events.current_position()
            await store.record_fanout(self._settings.shard, position, [])
        self._store, self._events, self._position = store, events, position
        self._persisted_position = position
        for destination in await store.get_destinations_with_work():
            if self._is_my_destination(destination):
                self._queue(destination).start_catchup()
        early, self._early_edus = self._early_edus, []
        for destinations, edu_type, content in early:
            await self.send_edu(destinations, edu_type, content)
        logger.info("federation sender started at position %d (shard %d)", position, self._settings.shard)
        self.notify_new_events(events.current_position())

    def stop(self) -> None:
        """Cancels timers (shutdown); nothing queued is lost (it is in the database)."""
        if self._refanout is not None and self._refanout.active():
            self._refanout.cancel()
        for queue in self._queues.values():
            queue.stop()

    @property
    def position(self) -> int:
        """How far the events stream has been fanned out."""
        return self._position

    def queue_for(self, destination: str) -> DestinationQueue | None:
        """The destination's queue, if it has one (tests, admin)."""
        return self._queues.get(destination)

    # ------------------------------------------------------------------ FederationSender

    def notify_new_events(self, position: int) -> None:
        """The events stream reached ``position``: fan out what is new (never raises or blocks)."""
        self._wanted = max(self._wanted, position)
        if self._events is None:
            return
        if self._fanning:
            self._fan_again = True
            return
        self._fanning = True
        defer.ensureDeferred(self._fan_out()).addErrback(lambda f: logger.error("fan-out failed: %s", f.getErrorMessage()))

    async def send_edu(self, destinations: Collection[str], edu_type: str, content: JsonDict) -> None:
        """Queues an EDU for each destination (persistently for :data:`PERSISTENT_EDU_TYPES`)."""
        targets = [d for d in dict.fromkeys(destinations) if self._is_remote_server(d)]
        if not targets:
            return
        if self._store is None:
            self._early_edus.append((targets, edu_type, dict(content)))
            return
        if edu_type in self._settings.persistent_edu_types:
            await self._store.add_edus([(d, edu_type, content) for d in targets], self._clock.time_msec())
            for destination in targets:
                if self._is_my_destination(destination):
                    self._queue(destination).persisted_edus_added()
            return
        for destination in targets:
            if self._is_my_destination(destination):
                self._queue(destination).enqueue_edu(QueuedEdu(edu_type, content))

    # ------------------------------------------------------------------ fan-out

    async def _fan_out(self) -> None:
        assert self._events is not None and self._store is not None
        try:
            while True:
                self._fan_again = False
                page = await self._events.get_outbound_events(self._position, self._settings.fanout_batch)
                if page.upto <= self._position:
                    if self._fan_again:
                        continue
                    if self._wanted > self._position:
                        self._schedule_refanout()
                    return
                offers: list[tuple[str, QueuedPdu]] = []
                for event in page.events:
                    pdu = QueuedPdu(event.stream_ordering, event.room_id, event.event_id, event.pdu)
                    for destination in sorted(event.destinations):
                        if self._is_remote_server(destination) and self._is_my_destination(destination):
                            offers.append((destination, pdu))
                rows = [(d, p.room_id, p.stream_ordering) for d, p in offers]
                if rows or page.upto - self._persisted_position >= POSITION_WRITE_INTERVAL:
                    await self._store.record_fanout(self._settings.shard, page.upto, rows)
                    self._persisted_position = page.upto
                self._position = page.upto
                for destination, pdu in offers:
                    self._queue(destination).enqueue_pdu(pdu)
        except Exception:
            logger.exception("fan-out failed at position %d; retrying", self._position)
            self._schedule_refanout()
        finally:
            self._fanning = False

    def _schedule_refanout(self) -> None:
        if self._refanout is not None and self._refanout.active():
            return

        def again() -> None:
            self._refanout = None
            self.notify_new_events(self._wanted)

        self._refanout = self._clock.call_later(self._settings.refanout_delay_s, again)

    # ------------------------------------------------------------------ helpers

    def _queue(self, destination: str) -> DestinationQueue:
        queue = self._queues.get(destination)
        if queue is None:
            assert self._store is not None and self._events is not None
            queue = DestinationQueue(
                destination, self._local.name, self._store, self._http, self._events, self._clock, self._txn_ids,
                self._settings.queue, self._rand,
            )
            self._queues[destination] = queue
        return queue

    def _is_my_destination(self, destination: str) -> bool:
        return destination_shard(destination, self._settings.shards) == self._settings.shard

    def _is_remote_server(self, destination: str) -> bool:
        if self._local.is_mine_server(destination):
            return False
        try:
            ServerName.parse(destination)
        except InvalidIdentifierError:
            logger.warning("not a server name: %r", destination[:100])
            return False
        return True
