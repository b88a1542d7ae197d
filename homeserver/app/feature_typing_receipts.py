"""Wires typing notifications, read receipts, read markers and unread counts (issue 5, part 1).

Part of the composition root (``homeserver/app/``): builds the services from the core objects on
``hs``, registers the servlets and the ``ty`` (typing) and ``rc`` (receipts + unread counts) sync
sources, and provides :class:`TypingService`, :class:`ReceiptService` and :class:`UnreadCounter`.
Uses the push rules' evaluator for unread/highlight counts when ``feature_push_rules`` provides it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.app.features import Feature, FeatureServices, Provided
from homeserver.ephemeral.access import require_joined
from homeserver.ephemeral.receipts import ReceiptService, ThreadResolver
from homeserver.ephemeral.typing import TypingService
from homeserver.ephemeral.unread import UnreadCounter
from homeserver.events.persister import PersistedEvent
from homeserver.http.ratelimit import RateLimitRule
from homeserver.push.service import PushRulesService
from homeserver.rest.client.receipts import RATE_LIMIT_ACTION as RECEIPT_ACTION
from homeserver.rest.client.receipts import ReceiptServlets
from homeserver.rest.client.typing import RATE_LIMIT_ACTION as TYPING_ACTION
from homeserver.rest.client.typing import TypingServlets
from homeserver.sync.sources.receipts import ReceiptsSource
from homeserver.sync.sources.typing import TypingSource

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver

TYPING_RATE = RateLimitRule(per_second=2.0, burst=10)
"""Typing updates per user: clients refresh every few seconds while typing, plus start/stop."""
RECEIPT_RATE = RateLimitRule(per_second=5.0, burst=30)
"""Receipt and read-marker updates per user (catching up on many rooms sends a burst)."""


async def wire(hs: Homeserver, services: FeatureServices) -> Provided:
    """Builds and registers typing, receipts, read markers and unread counts on ``hs``."""
    core = hs.rooms
    limiter = hs.ratelimiter

    async def joined(room_id: str, user_id: str) -> object:
        return await require_joined(core.creator, room_id, user_id)

    typing = TypingService(hs.clock, core.notifier, joined)

    def stop_typing_on_leave(persisted: PersistedEvent) -> None:
        event = persisted.stored.event
        if event.type == "m.room.member" and event.state_key is not None and event.membership != "join":
            typing.stop_typing(event.state_key, event.room_id)

    core.persister.on_persisted.append(stop_typing_on_leave)

    store = hs.stores.receipts
    threads = ThreadResolver(core.events)
    receipts = ReceiptService(
        store, core.events, core.creator, core.visibility, hs.stores.account_data, store.stream, threads,
        hs.clock.time_msec,
    )
    # Push rules (an optional dependency: wired first when present) decide what counts and highlights.
    push_rules = services.find(PushRulesService)
    evaluator = push_rules.evaluator if push_rules is not None else None
    unread = UnreadCounter(hs.pool, core.events, core.rooms, store, core.creator, threads, push_rules=evaluator)

    TypingServlets(hs.authenticator, typing, limiter).register(hs.resource)
    ReceiptServlets(hs.authenticator, receipts, limiter).register(hs.resource)
    hs.sync.registry.register(TypingSource(typing))
    hs.sync.registry.register(ReceiptsSource(store, unread))
    return [typing, receipts, unread]


FEATURE = Feature(
    "typing_receipts",
    wire,
    optional=(PushRulesService,),
    provides=(TypingService, ReceiptService, UnreadCounter),
    rate_limits={TYPING_ACTION: TYPING_RATE, RECEIPT_ACTION: RECEIPT_RATE},
)
