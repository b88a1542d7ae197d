"""The push-rules sync source (token name ``pr``): the ruleset in every initial sync.

Changes reach clients as ``m.push_rules`` account data (the service writes it after each change),
through the account-data source. A user who never changed a rule has no such account data, yet
clients expect their ruleset in the initial sync's ``account_data``; this source adds it there
(defaults merged with any changes) when the account-data source did not already. It has no stream of
its own: its position is always 0, so it never affects incremental syncs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.push.service import PUSH_RULES_TYPE
from homeserver.sync.sources.registry import SyncContext, SyncResult

RulesetReader = Callable[[str], Awaitable[dict[str, list[dict[str, Any]]]]]


class PushRulesSource:
    """Adds ``m.push_rules`` to initial syncs that lack it.

    Args:
        get_ruleset: returns a user's full ruleset.
    """

    name = "pr"

    def __init__(self, get_ruleset: RulesetReader) -> None:
        self._get_ruleset = get_ruleset

    async def current_position(self) -> int:
        return 0

    async def fill_initial(self, ctx: SyncContext, result: SyncResult, to_position: int) -> None:
        flt = ctx.filter.account_data
        if not flt.matches(PUSH_RULES_TYPE, None):
            return
        if any(event.get("type") == PUSH_RULES_TYPE for event in result.account_data):
            return
        if flt.limit is not None and len(result.account_data) >= flt.limit:
            return
        ruleset = await self._get_ruleset(ctx.user_id)
        result.account_data.append({"type": PUSH_RULES_TYPE, "content": {"global": ruleset}})

    async def fill_incremental(
        self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int
    ) -> None:
        return None
