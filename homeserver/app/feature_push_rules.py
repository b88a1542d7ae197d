"""Wires push rules (issue 5 follow-up) into a homeserver: store, service, endpoints, sync source.

Part of the composition root. Provides :class:`~homeserver.push.service.PushRulesService`, whose
``evaluator`` the unread counter of ``feature_typing_receipts`` uses (an optional dependency there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.app.features import Feature, FeatureServices, Provided
from homeserver.http.ratelimit import RateLimitRule
from homeserver.push.service import PushRulesService
from homeserver.push.sync_source import PushRulesSource
from homeserver.rest.client.push_rules import RATE_LIMIT_ACTION, PushRuleServlets

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver

PUSH_RULE_RATE = RateLimitRule(per_second=2.0, burst=30)
"""Push rule changes per user (a client's settings screen may send a burst, then little)."""


async def wire(hs: Homeserver, _services: FeatureServices) -> Provided:
    """Builds the push rules service from ``hs``, registers its endpoints and sync source."""
    service = PushRulesService(hs.stores.push_rules, hs.stores.account_data)
    PushRuleServlets(hs.authenticator, service, hs.ratelimiter).register(hs.resource)
    hs.sync.registry.register(PushRulesSource(service.get_ruleset))
    return [service]


FEATURE = Feature(
    "push_rules", wire, provides=(PushRulesService,), rate_limits={RATE_LIMIT_ACTION: PUSH_RULE_RATE}
)
