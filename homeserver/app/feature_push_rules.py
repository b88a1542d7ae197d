"""Wires push rules (issue 5 follow-up) into a homeserver: store, service, endpoints, sync source.

Part of the composition root. Sets ``hs.push_rules`` (a
:class:`~homeserver.push.service.PushRulesService`, whose ``evaluator`` the unread counter of
``feature_typing_receipts`` uses; this module is wired before it, in name order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.http.ratelimit import RateLimiter, RateLimitRule
from homeserver.push.service import PushRulesService
from homeserver.push.sync_source import PushRulesSource
from homeserver.rest.client.push_rules import RATE_LIMIT_ACTION, PushRuleServlets
from homeserver.storage.stores.push_rules import PushRuleStore

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver

PUSH_RULE_RATE = RateLimitRule(per_second=2.0, burst=30)
"""Push rule changes per user (a client's settings screen may send a burst, then little)."""


async def wire(hs: Homeserver) -> None:
    """Builds the push rules service from ``hs``, registers its endpoints and sync source."""
    ratelimits = hs.config.ratelimits
    limiter = RateLimiter(
        hs.clock.time_msec,
        {RATE_LIMIT_ACTION: PUSH_RULE_RATE},
        enabled=ratelimits.enabled,
        admins_exempt=ratelimits.admins_exempt,
    )
    service = PushRulesService(PushRuleStore(hs.pool), hs.stores.account_data)
    PushRuleServlets(hs.authenticator, service, limiter).register(hs.resource)
    hs.sync.registry.register(PushRulesSource(service.get_ruleset))
    hs.push_rules = service  # type: ignore[attr-defined]  # feature services hang off the composition root
