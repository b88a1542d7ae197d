"""Push rules: the server-default rules, validation of user-defined rules, and the merged ruleset.

Spec: client-server-api, "Push Notifications" (``modules/push.md``) and ``pushrules.yaml``.

Theory of operation
-------------------
A user's ruleset has five kinds, checked in the order of :data:`KINDS`. Within a kind, user-defined
rules come first (most important first, the order the user chose), then the server-default rules of
that kind, in the order the spec lists them, with one exception: ``.m.rule.master`` precedes every
override rule, user-defined ones included. The default rules are those of the spec version in the
repository (v1.17 removed the legacy body-matching rules ``.m.rule.contains_display_name``,
``.m.rule.contains_user_name`` and ``.m.rule.roomnotif``, so they are not here).

A user cannot create or delete server-default rules (their IDs start with ``.``) but can change their
``enabled`` flag and ``actions``; those changes are stored apart and applied by
:func:`build_ruleset`. Everything a client sends is validated here (:func:`validate_rule_body`,
:func:`validate_actions`) before it is stored, so the evaluator only ever compiles well-formed rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

from sc_proto.errors import CanonicalJSONError, Codes, MatrixError
from sc_proto.json import encode_canonical_json

JsonDict = dict[str, Any]

OVERRIDE: Final = "override"
CONTENT: Final = "content"
ROOM: Final = "room"
SENDER: Final = "sender"
UNDERRIDE: Final = "underride"
KINDS: Final = (OVERRIDE, CONTENT, ROOM, SENDER, UNDERRIDE)
"""The rule kinds, in the order they are checked (highest priority first)."""

MASTER_RULE_ID: Final = ".m.rule.master"

HISTORICAL_ACTIONS: Final = frozenset({"dont_notify", "coalesce"})
"""Actions older spec versions defined; they are stripped wherever they appear (spec, "Historical Actions")."""

MAX_RULE_ID_BYTES: Final = 255
"""Longest rule ID accepted (NOTSPEC: the spec sets no limit; rule IDs are user or room IDs or short names)."""
MAX_CONDITIONS: Final = 32
"""Most conditions in one rule (NOTSPEC: bounds evaluation work per event)."""
MAX_ACTIONS: Final = 32
"""Most actions in one rule (NOTSPEC)."""
MAX_PATTERN_CHARS: Final = 512
"""Longest glob pattern or condition key (NOTSPEC: bounds matching work per event)."""

_MEMBER_COUNT_RE: Final = re.compile(r"(==|<=|>=|<|>)?([0-9]{1,9})")
MAX_SAFE_INTEGER: Final = 2**53 - 1


def _event_match(key: str, pattern: str) -> JsonDict:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _sound(value: str) -> JsonDict:
    return {"set_tweak": "sound", "value": value}


_HIGHLIGHT: Final[JsonDict] = {"set_tweak": "highlight"}


def _rule(rule_id: str, conditions: list[JsonDict], actions: list[Any], enabled: bool = True) -> JsonDict:
    return {"rule_id": rule_id, "default": True, "enabled": enabled, "conditions": conditions, "actions": actions}


def _default_override_rules(user_id: str) -> list[JsonDict]:
    """The default override rules in spec order (``.m.rule.master`` first)."""
    return [
        _rule(MASTER_RULE_ID, [], [], enabled=False),
        _rule(".m.rule.suppress_notices", [_event_match("content.msgtype", "m.notice")], []),
        _rule(
            ".m.rule.invite_for_me",
            [
                _event_match("type", "m.room.member"),
                _event_match("content.membership", "invite"),
                _event_match("state_key", user_id),
            ],
            ["notify", _sound("default")],
        ),
        _rule(".m.rule.member_event", [_event_match("type", "m.room.member")], []),
        _rule(
            ".m.rule.is_user_mention",
            [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": user_id}],
            ["notify", _sound("default"), dict(_HIGHLIGHT)],
        ),
        _rule(
            ".m.rule.is_room_mention",
            [
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            ["notify", dict(_HIGHLIGHT)],
        ),
        _rule(
            ".m.rule.tombstone",
            [_event_match("type", "m.room.tombstone"), _event_match("state_key", "")],
            ["notify", dict(_HIGHLIGHT)],
        ),
        _rule(".m.rule.reaction", [_event_match("type", "m.reaction")], []),
        _rule(
            ".m.rule.room.server_acl",
            [_event_match("type", "m.room.server_acl"), _event_match("state_key", "")],
            [],
        ),
        _rule(
            ".m.rule.suppress_edits",
            [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
            [],
        ),
    ]


def _default_underride_rules() -> list[JsonDict]:
    """The default underride rules in spec order."""
    one_to_one = {"kind": "room_member_count", "is": "2"}
    return [
        _rule(".m.rule.call", [_event_match("type", "m.call.invite")], ["notify", _sound("ring")]),
        _rule(
            ".m.rule.encrypted_room_one_to_one",
            [dict(one_to_one), _event_match("type", "m.room.encrypted")],
            ["notify", _sound("default")],
        ),
        _rule(
            ".m.rule.room_one_to_one",
            [dict(one_to_one), _event_match("type", "m.room.message")],
            ["notify", _sound("default")],
        ),
        _rule(".m.rule.message", [_event_match("type", "m.room.message")], ["notify"]),
        _rule(".m.rule.encrypted", [_event_match("type", "m.room.encrypted")], ["notify"]),
    ]


def default_ruleset(user_id: str) -> dict[str, list[JsonDict]]:
    """The server-default rules for ``user_id``, per kind, in spec order (fresh objects each call)."""
    return {
        OVERRIDE: _default_override_rules(user_id),
        CONTENT: [],
        ROOM: [],
        SENDER: [],
        UNDERRIDE: _default_underride_rules(),
    }


_DEFAULT_IDS: Final[Mapping[str, frozenset[str]]] = {
    kind: frozenset(rule["rule_id"] for rule in rules) for kind, rules in default_ruleset("@x:x").items()
}


def is_default_rule_id(rule_id: str) -> bool:
    """Whether ``rule_id`` is reserved for server-default rules (starts with a dot)."""
    return rule_id.startswith(".")


def default_rule_exists(kind: str, rule_id: str) -> bool:
    """Whether the server has a default rule ``rule_id`` of ``kind``."""
    return rule_id in _DEFAULT_IDS.get(kind, frozenset())


# ---------------------------------------------------------------------- the merged ruleset


class UserRuleLike(Protocol):
    """A stored user-defined rule (see :class:`homeserver.storage.stores.push_rules.StoredPushRule`)."""

    @property
    def kind(self) -> str: ...

    @property
    def rule_id(self) -> str: ...

    @property
    def definition(self) -> Mapping[str, Any]: ...

    @property
    def enabled(self) -> bool: ...


class DefaultChangeLike(Protocol):
    """A user's change to a server-default rule (None: unchanged)."""

    @property
    def enabled(self) -> bool | None: ...

    @property
    def actions(self) -> list[Any] | None: ...


def user_rule_json(rule: UserRuleLike) -> JsonDict:
    """The client format of a user-defined rule (``conditions`` only for override/underride,
    ``pattern`` only for content rules)."""
    out: JsonDict = {
        "rule_id": rule.rule_id,
        "default": False,
        "enabled": bool(rule.enabled),
        "actions": list(rule.definition.get("actions", [])),
    }
    if rule.kind in (OVERRIDE, UNDERRIDE):
        out["conditions"] = list(rule.definition.get("conditions", []))
    elif rule.kind == CONTENT:
        out["pattern"] = rule.definition.get("pattern", "")
    return out


def build_ruleset(
    user_id: str,
    user_rules: Iterable[UserRuleLike],
    default_changes: Mapping[tuple[str, str], DefaultChangeLike],
) -> dict[str, list[JsonDict]]:
    """The user's full ruleset (the ``global`` object of ``GET /pushrules/``).

    Args:
        user_id: the owner (default rules mention them).
        user_rules: their rules, most important first within each kind.
        default_changes: ``(kind, rule_id) -> change`` of server-default rules.
    """
    defaults = default_ruleset(user_id)
    for kind, rules in defaults.items():
        for rule in rules:
            change = default_changes.get((kind, rule["rule_id"]))
            if change is None:
                continue
            if change.enabled is not None:
                rule["enabled"] = change.enabled
            if change.actions is not None:
                rule["actions"] = list(change.actions)
    mine: dict[str, list[JsonDict]] = {kind: [] for kind in KINDS}
    for user_rule in user_rules:
        if user_rule.kind in mine:
            mine[user_rule.kind].append(user_rule_json(user_rule))
    ruleset: dict[str, list[JsonDict]] = {}
    for kind in KINDS:
        default_rules = defaults[kind]
        if kind == OVERRIDE:
            master = [r for r in default_rules if r["rule_id"] == MASTER_RULE_ID]
            rest = [r for r in default_rules if r["rule_id"] != MASTER_RULE_ID]
            ruleset[kind] = master + mine[kind] + rest
        else:
            ruleset[kind] = mine[kind] + default_rules
    return ruleset


def find_rule(ruleset: Mapping[str, list[JsonDict]], kind: str, rule_id: str) -> JsonDict | None:
    """The rule ``rule_id`` of ``kind`` in a built ruleset, or None."""
    for rule in ruleset.get(kind, []):
        if rule.get("rule_id") == rule_id:
            return rule
    return None


# ---------------------------------------------------------------------- validation


def _invalid(message: str, code: Codes = Codes.INVALID_PARAM) -> MatrixError:
    return MatrixError(400, code, message)


def check_kind(kind: str) -> str:
    """Returns ``kind`` if it is a rule kind.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` otherwise.
    """
    if kind not in KINDS:
        raise _invalid(f"Unknown push rule kind {kind[:64]!r}: expected one of {', '.join(KINDS)}")
    return kind


def check_new_rule_id(kind: str, rule_id: str) -> None:
    """Checks the ID of a rule a client creates or replaces.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for a server-default (``.``-prefixed) ID, a slash or
            backslash, an empty or overlong ID, or a room/sender rule not named after a room/user ID.
    """
    if not rule_id:
        raise _invalid("The rule ID must not be empty")
    if is_default_rule_id(rule_id):
        raise _invalid("Rule IDs starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise _invalid("Rule IDs must not contain '/' or '\\'")
    if len(rule_id.encode("utf-8")) > MAX_RULE_ID_BYTES:
        raise _invalid(f"Rule IDs must be at most {MAX_RULE_ID_BYTES} bytes")
    if kind == ROOM and not rule_id.startswith("!"):
        raise _invalid("The rule ID of a room rule must be a room ID")
    if kind == SENDER and not (rule_id.startswith("@") and ":" in rule_id):
        raise _invalid("The rule ID of a sender rule must be a user ID")


def validate_actions(value: object) -> list[Any]:
    """Validates an ``actions`` array; returns it with historical actions stripped.

    Accepted: ``"notify"``, the historical ``"dont_notify"``/``"coalesce"`` (dropped), and objects
    with a string ``set_tweak`` (other keys, such as ``value``, pass through: clients and gateways
    may agree on tweaks of their own).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for anything else.
    """
    if not isinstance(value, list):
        raise _invalid("'actions' must be an array")
    if len(value) > MAX_ACTIONS:
        raise _invalid(f"At most {MAX_ACTIONS} actions are allowed")
    actions: list[Any] = []
    for action in value:
        if isinstance(action, str):
            if action in HISTORICAL_ACTIONS:
                continue
            if action != "notify":
                raise _invalid(f"Unrecognised action {action[:64]!r}")
            actions.append(action)
        elif isinstance(action, dict):
            tweak = action.get("set_tweak")
            if not isinstance(tweak, str) or not tweak:
                raise _invalid("An action object must have a string 'set_tweak'")
            if tweak == "highlight" and "value" in action and not isinstance(action["value"], bool):
                raise _invalid("The 'highlight' tweak's value must be a boolean")
            try:  # the ruleset is stored as canonical JSON account data
                encode_canonical_json(action)
            except CanonicalJSONError:
                raise _invalid("Action values must be canonical JSON (no floats)") from None
            actions.append(action)
        else:
            raise _invalid("Each action must be a string or an object")
    return actions


def _is_scalar(value: object) -> bool:
    """A non-compound canonical-JSON value: string, boolean, null or an integer in the safe range."""
    if value is None or isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER


def _require_str(condition: Mapping[str, Any], name: str, kind: str) -> None:
    value = condition.get(name)
    if not isinstance(value, str):
        raise _invalid(f"A {kind} condition needs a string {name!r}")
    if len(value) > MAX_PATTERN_CHARS:
        raise _invalid(f"A condition's {name!r} is longer than {MAX_PATTERN_CHARS} characters")


def validate_condition(condition: object) -> JsonDict:
    """Validates one condition; returns it unchanged.

    Conditions of an unknown kind are accepted (the spec: they never match, disabling the rule);
    known kinds must carry their parameters with the right types.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM``.
    """
    if not isinstance(condition, dict):
        raise _invalid("Each condition must be an object")
    kind = condition.get("kind")
    if not isinstance(kind, str) or not kind:
        raise _invalid("Each condition needs a string 'kind'")
    if kind == "event_match":
        _require_str(condition, "key", kind)
        _require_str(condition, "pattern", kind)
    elif kind in ("event_property_is", "event_property_contains"):
        _require_str(condition, "key", kind)
        if "value" not in condition or not _is_scalar(condition["value"]):
            raise _invalid(f"A {kind} condition needs a 'value' that is a string, integer, boolean or null")
    elif kind == "room_member_count":
        member_count = condition.get("is")
        if not isinstance(member_count, str) or _MEMBER_COUNT_RE.fullmatch(member_count) is None:
            raise _invalid("A room_member_count condition needs 'is': an integer optionally prefixed by ==, <, >, <= or >=")
    elif kind == "sender_notification_permission":
        _require_str(condition, "key", kind)
    return condition


def validate_rule_body(kind: str, body: Mapping[str, Any]) -> JsonDict:
    """Validates a ``PUT /pushrules/global/{kind}/{ruleId}`` body; returns the stored definition.

    The definition holds ``actions`` plus ``conditions`` (override and underride) or ``pattern``
    (content); other keys of the body are ignored.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM`` or ``M_INVALID_PARAM``.
    """
    if "actions" not in body:
        raise _invalid("Missing 'actions'", Codes.MISSING_PARAM)
    definition: JsonDict = {"actions": validate_actions(body["actions"])}
    if kind in (OVERRIDE, UNDERRIDE):
        conditions = body.get("conditions", [])
        if not isinstance(conditions, list):
            raise _invalid("'conditions' must be an array")
        if len(conditions) > MAX_CONDITIONS:
            raise _invalid(f"At most {MAX_CONDITIONS} conditions are allowed")
        definition["conditions"] = [validate_condition(c) for c in conditions]
    elif kind == CONTENT:
        if "pattern" not in body:
            raise _invalid("Content rules need a 'pattern'", Codes.MISSING_PARAM)
        pattern = body["pattern"]
        if not isinstance(pattern, str):
            raise _invalid("'pattern' must be a string")
        if len(pattern) > MAX_PATTERN_CHARS:
            raise _invalid(f"'pattern' is longer than {MAX_PATTERN_CHARS} characters")
        definition["pattern"] = pattern
    return definition


def parse_member_count(spec: str) -> tuple[str, int] | None:
    """Parses a ``room_member_count`` ``is`` value into ``(operator, number)``; None if malformed."""
    found = _MEMBER_COUNT_RE.fullmatch(spec)
    if found is None:
        return None
    return found.group(1) or "==", int(found.group(2))
