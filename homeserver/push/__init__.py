"""Push rules (spec client-server-api, "Push Notifications"): server-default rules, validation of user
rules, the merged ruleset, and a compiled evaluator deciding each event's actions for a user."""

from homeserver.push.evaluator import CompiledRuleset, PushActions, PushRuleEvaluator, RoomPowerLevels
from homeserver.push.rules import KINDS, default_ruleset, is_default_rule_id

__all__ = [
    "KINDS",
    "CompiledRuleset",
    "PushActions",
    "PushRuleEvaluator",
    "RoomPowerLevels",
    "default_ruleset",
    "is_default_rule_id",
]
