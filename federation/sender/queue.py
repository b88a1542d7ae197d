"""One queue per destination: what it is owed, one transaction in flight, backoff and catch-up.

Theory of operation:

* **Modes.** A queue is either *live* or *catching up*. Live, it holds our PDUs for the
  destination in memory, in stream order, and sends them oldest first, 50 per transaction.
  Catching up, it holds no PDUs: it asks ``federation_destination_rooms`` for the rooms whose
  newest event for the destination is newer than what the destination acknowledged
  (``last_successful``), and sends that one newest event per room. The destination fetches
  what lies between through ``get_missing_events``/``backfill`` (spec: the ``prev_events`` of
  what it receives point at what it lacks), so a long outage costs one PDU per room, not the
  backlog.
* **Entering catch-up.** On start when the database says the destination is owed events (the
  memory queue of the previous process is gone), and when the live queue grows past
  ``max_pending_pdus`` (a destination that is down while rooms are busy).
* **Leaving catch-up.** When a query finds nothing newer and no PDU was offered since the query
  began (``_catchup_dirty``): a PDU whose fan-out committed while the query ran would otherwise be
  dropped by the catching-up queue and never found.
* **EDUs.** Ephemeral EDUs (typing, receipts, presence) live in a bounded memory deque (the oldest
  dropped first; lost on restart). Persistent EDUs (to-device, device lists, signing keys) live
  only in ``federation_edu_outbox`` and are read a page at a time; a transaction takes up to half
  its 100 EDU slots from memory first, then persisted ones, so neither kind starves the other.
* **One transaction in flight.** ``_running`` guards the send loop; anything offered meanwhile
  sets ``_again`` and is picked up before the loop exits.
* **Acknowledgement.** After a 2xx answer, in one database transaction: ``last_successful``
  advances to the newest PDU sent, the sent persisted EDUs are deleted, and the backoff is reset.
  Then the sent items leave memory. Per-PDU errors in the answer are logged, never retried.
* **Failure.** No answer, a 5xx, 429 or 408: the backoff grows (persisted) and the same items are
  retried when it expires. Any other 4xx means the destination refused this transaction as such:
  retrying it unchanged cannot succeed, so it is logged and dropped (the destination still gets
  later transactions; catch-up covers rooms it missed when it asks).

Invariants: every PDU with ``stream_ordering <= last_successful`` reached the destination (or was
refused by it); a live queue's PDUs are all newer than ``last_successful`` and in stream order; a
catching-up queue holds no PDUs in memory.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from twisted.internet import defer

from federation.interfaces import FederationHttp, RemoteHttpError, RemoteUnreachable
from federation.sender.backoff import BackoffPolicy, RetryState
from federation.sender.store import SenderStore
from federation.sender.transactions import (
    MAX_EDUS_PER_TRANSACTION,
    MAX_PDUS_PER_TRANSACTION,
    QueuedEdu,
    QueuedPdu,
    Transaction,
    TransactionIds,
    pdu_errors,
)
from homeserver.api.services import OutboundEventsAPI
from homeserver.util.clock import Clock, DelayedCall

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429})
"""4xx answers that mean "later", not "never" (5xx are always retried)."""


@dataclass(frozen=True)
class QueueSettings:
    """Bounds and timing of a destination queue.

    Attributes:
        backoff: the retry policy.
        max_pending_pdus: live PDUs held in memory before the queue falls back to catch-up.
        max_pending_edus: ephemeral EDUs held in memory (the oldest are dropped beyond it).
    """

    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    max_pending_pdus: int = 200
    max_pending_edus: int = 1000


class DestinationQueue:
    """Everything owed to one destination.

    Args:
        destination: the server name.
        origin: our server name.
        store: the sender's tables.
        http: signed federation requests.
        events: reads PDUs for catch-up.
        clock: time and timers.
        txn_ids: transaction ids of this process.
        settings: bounds and backoff.
        rand: uniform draws in ``[0, 1)`` for the backoff jitter.
    """

    def __init__(
        self,
        destination: str,
        origin: str,
        store: SenderStore,
        http: FederationHttp,
        events: OutboundEventsAPI,
        clock: Clock,
        txn_ids: TransactionIds,
        settings: QueueSettings,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.destination = destination
        self._origin = origin
        self._store = store
        self._http = http
        self._events = events
        self._clock = clock
        self._txn_ids = txn_ids
        self._settings = settings
        self._rand = rand
        self._pdus: deque[QueuedPdu] = deque()
        self._pdu_generation = 0
        self._edus: deque[QueuedEdu] = deque(maxlen=settings.max_pending_edus)
        self._persisted_pending = False
        self._catching_up = False
        self._catchup_dirty = False
        self._loaded = False
        self._last_successful = 0
        self._retry = RetryState()
        self._running = False
        self._again = False
        self._wakeup: DelayedCall | None = None
        self.sent_transactions = 0
        """Transactions acknowledged (for tests and metrics)."""

    # ------------------------------------------------------------------ offering work

    @property
    def catching_up(self) -> bool:
        """Whether the queue is in catch-up mode."""
        return self._catching_up

    @property
    def retry(self) -> RetryState:
        """The current backoff."""
        return self._retry

    def pending_pdus(self) -> int:
        """Live PDUs held in memory."""
        return len(self._pdus)

    def enqueue_pdu(self, pdu: QueuedPdu) -> None:
        """Offers one of our PDUs (its fan-out row is already committed)."""
        if self._catching_up:
            self._catchup_dirty = True
        else:
            self._pdus.append(pdu)
            if len(self._pdus) > self._settings.max_pending_pdus:
                logger.info("too many PDUs queued: catching up later", extra={"destination": self.destination})
                self._enter_catchup()
        self.attempt()

    def enqueue_edu(self, edu: QueuedEdu) -> None:
        """Offers an ephemeral EDU (memory only)."""
        self._edus.append(edu)
        self.attempt()

    def persisted_edus_added(self) -> None:
        """Says that EDUs for the destination were written to the outbox."""
        self._persisted_pending = True
        self.attempt()

    def start_catchup(self) -> None:
        """Starts in catch-up mode (on start, when the database says events are owed)."""
        self._enter_catchup()
        self._persisted_pending = True
        self.attempt()

    def _enter_catchup(self) -> None:
        self._catching_up = True
        self._catchup_dirty = True
        self._pdus.clear()
        self._pdu_generation += 1

    # ------------------------------------------------------------------ the send loop

    def attempt(self) -> None:
        """Sends what is owed now, unless a transaction is in flight or the destination is backing off."""
        if self._running:
            self._again = True
            return
        if self._loaded and self._retry.backing_off:
            ready_at = self._retry.ready_at()
            now = self._clock.time_msec()
            if now < ready_at:
                self._schedule(ready_at - now)
                return
        self._running = True
        self._again = False
        defer.ensureDeferred(self._run()).addErrback(
            lambda f: logger.error("send loop failed: %s", f.getErrorMessage(), extra={"destination": self.destination})
        )

    def stop(self) -> None:
        """Cancels the pending wake-up (shutdown)."""
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = None

    def _schedule(self, delay_ms: int) -> None:
        if self._wakeup is not None and self._wakeup.active():
            return
        self._wakeup = self._clock.call_later(delay_ms / 1000.0, self._woken)

    def _woken(self) -> None:
        self._wakeup = None
        self.attempt()

    async def _run(self) -> None:
        try:
            if not self._loaded:
                record = await self._store.get_destination(self.destination)
                self._last_successful, self._retry, self._loaded = record.last_successful, record.retry, True
                now = self._clock.time_msec()
                if self._retry.backing_off and now < self._retry.ready_at():
                    self._schedule(self._retry.ready_at() - now)
                    return
            while True:
                self._again = False
                built = await self._next_transaction()
                if built is None:
                    if self._again:
                        continue
                    return
                if not await self._send(*built):
                    return
        finally:
            self._running = False

    async def _next_transaction(self) -> tuple[Transaction, int | None, int] | None:
        """The next transaction, the ``last_successful`` it would establish, and the PDU generation."""
        generation = self._pdu_generation
        pdus: Sequence[QueuedPdu]
        upto: int | None
        if self._catching_up:
            pdus, upto = await self._catchup_pdus()
        else:
            pdus = [self._pdus[i] for i in range(min(len(self._pdus), MAX_PDUS_PER_TRANSACTION))]
            upto = pdus[-1].stream_ordering if pdus else None
        edus = await self._take_edus()
        if not pdus and not edus:
            return None
        return Transaction(self._txn_ids.next(), self.destination, pdus, edus), upto, generation

    async def _catchup_pdus(self) -> tuple[list[QueuedPdu], int | None]:
        while True:
            self._catchup_dirty = False
            rows = await self._store.get_catchup_rooms(self.destination, self._last_successful, MAX_PDUS_PER_TRANSACTION)
            if rows:
                found = await self._events.get_pdus([so for so, _ in rows])
                pdus = [QueuedPdu(p.stream_ordering, p.room_id, p.event_id, p.pdu) for p in found]
                upto = max(so for so, _ in rows)
                if pdus:
                    return pdus, upto
                # Every one was purged: nothing to send for these rooms; move past them.
                await self._store.mark_delivered(self.destination, upto, [], reset_retry=False)
                self._last_successful = max(self._last_successful, upto)
                continue
            if not self._catchup_dirty:
                self._catching_up = False
                logger.info("caught up", extra={"destination": self.destination})
                return [], None

    async def _take_edus(self) -> list[QueuedEdu]:
        memory_first = min(len(self._edus), MAX_EDUS_PER_TRANSACTION // 2)
        persisted: list[QueuedEdu] = []
        if self._persisted_pending:
            self._persisted_pending = False
            room = MAX_EDUS_PER_TRANSACTION - memory_first
            stored = await self._store.get_edus(self.destination, room)
            persisted = [QueuedEdu(e.edu_type, e.content, e.outbox_id) for e in stored]
            if len(stored) >= room:
                self._persisted_pending = True  # more wait in the outbox
        memory_count = min(len(self._edus), MAX_EDUS_PER_TRANSACTION - len(persisted))
        return [self._edus[i] for i in range(memory_count)] + persisted

    async def _send(self, txn: Transaction, upto: int | None, generation: int) -> bool:
        """Sends one transaction; True when the queue may go on (acknowledged or refused for good)."""
        extra = {"destination": self.destination}
        try:
            response = await self._http.put_json(self.destination, txn.path, txn.body(self._origin, self._clock.time_msec()))
        except RemoteHttpError as e:
            if e.status < 500 and e.status not in RETRYABLE_STATUSES:
                logger.warning("transaction %s refused with HTTP %d: dropped", txn.txn_id, e.status, extra=extra)
                await self._acknowledge(txn, upto, generation, {})
                return True
            await self._failed(txn, f"HTTP {e.status}")
            return False
        except RemoteUnreachable as e:
            await self._failed(txn, e.reason)
            return False
        except Exception:
            logger.exception("transaction %s failed", txn.txn_id, extra=extra)
            await self._failed(txn, "internal error")
            return False
        await self._acknowledge(txn, upto, generation, response)
        return True

    async def _acknowledge(self, txn: Transaction, upto: int | None, generation: int, response: object) -> None:
        if isinstance(response, dict):
            for event_id, error in pdu_errors(response).items():
                logger.warning("%s refused PDU %s: %s", self.destination, event_id, error, extra={"destination": self.destination})
        was_backing_off = self._retry.backing_off
        await self._store.mark_delivered(self.destination, upto, txn.outbox_ids, reset_retry=was_backing_off)
        self._retry = RetryState()
        if upto is not None and upto > self._last_successful:
            self._last_successful = upto
        if generation == self._pdu_generation and not self._catching_up:
            for _ in range(min(len(txn.pdus), len(self._pdus))):
                self._pdus.popleft()
        for edu in txn.edus:
            if edu.outbox_id is None:
                try:
                    self._edus.remove(edu)
                except ValueError:
                    pass  # dropped from the bounded deque meanwhile
        self.sent_transactions += 1

    async def _failed(self, txn: Transaction, reason: str) -> None:
        self._retry = self._retry.after_failure(self._clock.time_msec(), self._settings.backoff, self._rand)
        if txn.outbox_ids:
            self._persisted_pending = True
        logger.info(
            "transaction %s failed (%s): retrying in %d ms", txn.txn_id, reason, self._retry.retry_interval_ms,
            extra={"destination": self.destination},
        )
        await self._store.set_retry(self.destination, self._retry)
        self._schedule(self._retry.retry_interval_ms)
