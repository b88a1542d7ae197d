"""Wires typing notifications, read receipts, read markers and unread counts (issue 5, part 1).

Part of the composition root (``homeserver/app/``): builds the services from the core objects on
``hs``, registers the servlets and the ``ty`` (typing) and ``rc`` (receipts + unread counts) sync
sources, and exposes ``hs.typing``, ``hs.receipts`` and ``hs.unread`` for tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.ephemeral.access import require_joined
from homeserver.ephemeral.receipts import ReceiptService, ThreadResolver
from homeserver.ephemeral.typing import TypingService
from homeserver.ephemeral.unread import UnreadCounter
from homeserver.events.persister import PersistedEvent
from homeserver.http.ratelimit import RateLimiter, RateLimitRule
from homeserver.rest.client.receipts import RATE_LIMIT_ACTION as RECEIPT_ACTION
from homeserver.rest.client.receipts import ReceiptServlets
from homeserver.rest.client.typing import RATE_LIMIT_ACTION as TYPING_ACTION
from homeserver.rest.client.typing import TypingServlets
from homeserver.storage.ids import IdAllocator, StreamPositionTracker
from homeserver.storage.stores.receipts import ReceiptStore
from homeserver.sync.sources.receipts import ReceiptsSource
from homeserver.sync.sources.typing import TypingSource

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver

TYPING_RATE = RateLimitRule(per_second=2.0, burst=10)
"""Typing updates per user: clients refresh every few seconds while typing, plus start/stop."""
RECEIPT_RATE = RateLimitRule(per_second=5.0, burst=30)
"""Receipt and read-marker updates per user (catching up on many rooms sends a burst)."""


async def wire(hs: Homeserver) -> None:
    """Builds and registers typing, receipts, read markers and unread counts on ``hs``."""
    core = hs.rooms
    ratelimits = hs.config.ratelimits
    limiter = RateLimiter(
        hs.clock.time_msec,
        {TYPING_ACTION: TYPING_RATE, RECEIPT_ACTION: RECEIPT_RATE},
        enabled=ratelimits.enabled,
        admins_exempt=ratelimits.admins_exempt,
    )

    async def joined(room_id: str, user_id: str) -> object:
        return await require_joined(core.creator, room_id, user_id)

    typing = TypingService(hs.clock, core.notifier, joined)

    def stop_typing_on_leave(persisted: PersistedEvent) -> None:
        event = persisted.stored.event
        if event.type == "m.room.member" and event.state_key is not None and event.membership != "join":
            typing.stop_typing(event.state_key, event.room_id)

    core.persister.on_persisted.append(stop_typing_on_leave)

    stream_ids = IdAllocator(hs.pool.engine, "receipts", "stream_id", "receipts_stream_seq")
    tracker = StreamPositionTracker(await ReceiptStore.get_max_stream_id(hs.pool))
    store = ReceiptStore(hs.pool, stream_ids, tracker)
    threads = ThreadResolver(core.events)
    receipts = ReceiptService(
        store, core.events, core.creator, core.visibility, hs.stores.account_data, core.notifier, threads,
        hs.clock.time_msec,
    )
    # Push rules (feature_push_rules, wired earlier in name order) decide what counts and highlights.
    push_rules = getattr(hs, "push_rules", None)
    evaluator = push_rules.evaluator if push_rules is not None else None
    unread = UnreadCounter(hs.pool, core.events, core.rooms, store, core.creator, threads, push_rules=evaluator)

    TypingServlets(hs.authenticator, typing, limiter).register(hs.resource)
    ReceiptServlets(hs.authenticator, receipts, limiter).register(hs.resource)
    hs.sync.registry.register(TypingSource(typing))
    hs.sync.registry.register(ReceiptsSource(store, unread))
    hs.typing = typing  # type: ignore[attr-defined]  # feature services hang off the composition root
    hs.receipts = receipts  # type: ignore[attr-defined]
    hs.unread = unread  # type: ignore[attr-defined]
