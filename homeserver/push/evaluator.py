"""The push rule evaluator: which actions a user's ruleset gives an event.

Theory of operation
-------------------
A ruleset (the ``global`` object of ``GET /pushrules/``) is *compiled* once into a
:class:`CompiledRuleset`: disabled rules and rules with an unrecognised condition (which the spec
says never match) are dropped, every condition becomes a small closure, glob patterns become
precompiled regular expressions, and each rule's actions are summarised once as
:class:`PushActions`. Evaluating an event then walks the rules in priority order and returns the
actions of the first rule whose conditions all hold, or :data:`NO_ACTIONS`.

Glob matching (spec appendices, "Glob-style matching") never backtracks over the event's text: a
pattern is split at ``*`` into fixed-length segments (``?`` is one character) that are found left to
right, each at its earliest possible position, which finds a match whenever one exists. So matching
costs at most one linear scan of the value per segment, whatever the pattern or the event's body
(a regular expression with ``.*`` per star would be polynomial in the body's length). For
``content.body`` the match may be any substring starting and ending at a word boundary (a character
outside ``[A-Za-z0-9_]``, or either end of the value); elsewhere it must cover the whole value.
Matching is case-insensitive (Python's ``re.IGNORECASE``).

:class:`PushRuleEvaluator` keeps one compiled ruleset per user (LRU-bounded), loads it on first use
through a loader (the push rules service) and drops it when :meth:`PushRuleEvaluator.invalidate` is
called after a change.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from homeserver.push.rules import CONTENT, KINDS, ROOM, SENDER, parse_member_count
from sc_proto.auth.power_levels import get_notification_level, get_user_power_level
from sc_proto.events.model import Event

JsonDict = dict[str, Any]
Ruleset = Mapping[str, Sequence[Mapping[str, Any]]]

_WORD_CHARS: Final = "A-Za-z0-9_"
_BEFORE_BOUNDARY: Final = f"(?<![{_WORD_CHARS}])"
_AFTER_BOUNDARY: Final = f"(?![{_WORD_CHARS}])"
_FLAGS: Final = re.IGNORECASE | re.DOTALL
_MISSING: Final = object()
BODY_KEY: Final = "content.body"
DEFAULT_CACHE_SIZE: Final = 10_000


# ---------------------------------------------------------------------- actions


@dataclass(frozen=True)
class PushActions:
    """What a matching rule asks for.

    Attributes:
        actions: the rule's actions as the client wrote them (historical ones stripped).
        notify: the event notifies (``notify`` is among the actions).
        highlight: the ``highlight`` tweak is set (with no value, or ``true``).
        tweaks: every ``set_tweak`` name -> value (``None`` for a tweak without value).
        rule_id: the matching rule, None when no rule matched.
    """

    actions: tuple[Any, ...] = ()
    notify: bool = False
    highlight: bool = False
    tweaks: Mapping[str, Any] = field(default_factory=dict)
    rule_id: str | None = None

    @property
    def sound(self) -> str | None:
        """The ``sound`` tweak's value, if set to a string."""
        value = self.tweaks.get("sound")
        return value if isinstance(value, str) else None


NO_ACTIONS: Final = PushActions()
"""No rule matched (or the user sent the event): nothing to notify."""


def summarise_actions(actions: Sequence[Any], rule_id: str | None = None) -> PushActions:
    """Builds :class:`PushActions` from an actions array (historical and malformed entries ignored)."""
    notify = False
    tweaks: dict[str, Any] = {}
    kept: list[Any] = []
    for action in actions:
        if action == "notify":
            notify = True
            kept.append(action)
        elif isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            tweaks[action["set_tweak"]] = action.get("value")
            kept.append(action)
    highlight = "highlight" in tweaks and tweaks["highlight"] in (None, True)
    return PushActions(tuple(kept), notify, highlight, tweaks, rule_id)


# ---------------------------------------------------------------------- context


@dataclass(frozen=True)
class RoomPowerLevels:
    """The room's power levels as ``sender_notification_permission`` needs them.

    Attributes:
        power_levels: the current ``m.room.power_levels`` event, if any.
        create: the ``m.room.create`` event (creators; infinite power in v12 rooms).
    """

    power_levels: Event | None
    create: Event | None

    def sender_may_notify(self, sender: str, key: str) -> bool:
        """Whether ``sender``'s level reaches the ``notifications.<key>`` level."""
        level = get_user_power_level(sender, self.power_levels, self.create)
        return level >= get_notification_level(self.power_levels, key)


@dataclass(frozen=True)
class _Context:
    event: Mapping[str, Any]
    sender: str
    member_count: int
    display_name: str | None
    power_levels: RoomPowerLevels | None


Matcher = Callable[[_Context], bool]


# ---------------------------------------------------------------------- paths and globs


def split_path(key: str) -> tuple[str, ...]:
    """Splits a dot-separated property path; ``\\.`` is a literal dot and ``\\\\`` a backslash.

    Other escapes are kept as written (spec appendices, "Dot-separated property paths").
    """
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        char = key[i]
        if char == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return tuple(parts)


def lookup(event: Mapping[str, Any], path: Sequence[str]) -> object:
    """The value at ``path`` in ``event``, or a private sentinel when absent."""
    value: object = event
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _segment(text: str) -> str:
    return "".join("." if char == "?" else re.escape(char) for char in text)


@functools.lru_cache(maxsize=4096)
def compile_glob(pattern: str, word_boundary: bool) -> Callable[[str], bool]:
    """A case-insensitive glob matcher (see the module docstring for the algorithm).

    Args:
        pattern: ``*`` matches any run of characters, ``?`` exactly one.
        word_boundary: match any substring starting and ending at a word boundary (``content.body``)
            instead of the whole value.
    """
    pieces = pattern.split("*")
    if len(pieces) == 1:
        if word_boundary:
            single = re.compile(_BEFORE_BOUNDARY + _segment(pattern) + _AFTER_BOUNDARY, _FLAGS)
            return lambda value: single.search(value) is not None
        whole = re.compile(_segment(pattern), _FLAGS)
        return lambda value: whole.fullmatch(value) is not None
    first = re.compile((_BEFORE_BOUNDARY if word_boundary else "") + _segment(pieces[0]), _FLAGS)
    middle = [re.compile(_segment(p), _FLAGS) for p in pieces[1:-1] if p]
    last = re.compile(_segment(pieces[-1]) + (_AFTER_BOUNDARY if word_boundary else r"\Z"), _FLAGS)

    def matches(value: str) -> bool:
        found = first.search(value) if word_boundary else first.match(value)
        if found is None:
            return False
        position = found.end()
        for segment in middle:
            found = segment.search(value, position)
            if found is None:
                return False
            position = found.end()
        return last.search(value, position) is not None

    return matches


@functools.lru_cache(maxsize=4096)
def _display_name_regex(name: str) -> re.Pattern[str]:
    return re.compile(_BEFORE_BOUNDARY + re.escape(name) + _AFTER_BOUNDARY, _FLAGS)


def _same_scalar(a: object, b: object) -> bool:
    """Exact equality of non-compound JSON values (``true`` is not ``1``)."""
    return type(a) is type(b) and a == b and isinstance(a, (str, int, bool, type(None)))


# ---------------------------------------------------------------------- conditions


def _event_match(condition: Mapping[str, Any]) -> Matcher | None:
    key, pattern = condition.get("key"), condition.get("pattern")
    if not isinstance(key, str) or not isinstance(pattern, str):
        return None
    path = split_path(key)
    glob = compile_glob(pattern, key == BODY_KEY)

    def matcher(ctx: _Context) -> bool:
        value = lookup(ctx.event, path)
        return isinstance(value, str) and glob(value)

    return matcher


def _property_is(condition: Mapping[str, Any]) -> Matcher | None:
    key, expected = condition.get("key"), condition.get("value", _MISSING)
    if not isinstance(key, str) or expected is _MISSING:
        return None
    path = split_path(key)
    return lambda ctx: _same_scalar(lookup(ctx.event, path), expected)


def _property_contains(condition: Mapping[str, Any]) -> Matcher | None:
    key, expected = condition.get("key"), condition.get("value", _MISSING)
    if not isinstance(key, str) or expected is _MISSING:
        return None
    path = split_path(key)

    def matcher(ctx: _Context) -> bool:
        value = lookup(ctx.event, path)
        return isinstance(value, list) and any(_same_scalar(item, expected) for item in value)

    return matcher


def _member_count(condition: Mapping[str, Any]) -> Matcher | None:
    spec = condition.get("is")
    parsed = parse_member_count(spec) if isinstance(spec, str) else None
    if parsed is None:
        return None
    op, number = parsed
    compare: dict[str, Callable[[int], bool]] = {
        "==": lambda n: n == number,
        "<": lambda n: n < number,
        ">": lambda n: n > number,
        "<=": lambda n: n <= number,
        ">=": lambda n: n >= number,
    }
    test = compare[op]
    return lambda ctx: test(ctx.member_count)


def _display_name(condition: Mapping[str, Any]) -> Matcher | None:
    body_path = split_path(BODY_KEY)

    def matcher(ctx: _Context) -> bool:
        name = (ctx.display_name or "").strip()
        body = lookup(ctx.event, body_path)
        return bool(name) and isinstance(body, str) and _display_name_regex(name).search(body) is not None

    return matcher


def _sender_permission(condition: Mapping[str, Any]) -> Matcher | None:
    key = condition.get("key")
    if not isinstance(key, str):
        return None
    return lambda ctx: ctx.power_levels is not None and ctx.power_levels.sender_may_notify(ctx.sender, key)


_CONDITIONS: Final[Mapping[str, Callable[[Mapping[str, Any]], Matcher | None]]] = {
    "event_match": _event_match,
    "event_property_is": _property_is,
    "event_property_contains": _property_contains,
    "room_member_count": _member_count,
    "contains_display_name": _display_name,
    "sender_notification_permission": _sender_permission,
}


def compile_condition(condition: object) -> Matcher | None:
    """A matcher for one condition; None for an unrecognised or malformed one (it never matches)."""
    if not isinstance(condition, Mapping):
        return None
    factory = _CONDITIONS.get(str(condition.get("kind")))
    return None if factory is None else factory(condition)


# ---------------------------------------------------------------------- rulesets


@dataclass(frozen=True)
class CompiledRule:
    """An enabled rule ready to evaluate."""

    kind: str
    rule_id: str
    matchers: tuple[Matcher, ...]
    actions: PushActions


def _rule_matchers(kind: str, rule: Mapping[str, Any]) -> tuple[Matcher, ...] | None:
    """The matchers a rule's kind implies; None when the rule can never match."""
    rule_id = rule.get("rule_id")
    if not isinstance(rule_id, str):
        return None
    if kind == ROOM:
        return (lambda ctx: ctx.event.get("room_id") == rule_id,)
    if kind == SENDER:
        return (lambda ctx: ctx.sender == rule_id,)
    if kind == CONTENT:
        pattern = rule.get("pattern")
        if not isinstance(pattern, str):
            return None
        matcher = _event_match({"key": BODY_KEY, "pattern": pattern})
        return None if matcher is None else (matcher,)
    conditions = rule.get("conditions", [])
    if not isinstance(conditions, list):
        return None
    matchers: list[Matcher] = []
    for condition in conditions:
        compiled = compile_condition(condition)
        if compiled is None:
            return None
        matchers.append(compiled)
    return tuple(matchers)


class CompiledRuleset:
    """A user's ruleset, compiled for fast evaluation.

    Args:
        user_id: the owner (their own events never notify them).
        ruleset: the ``global`` ruleset object (kind -> rules in priority order).
    """

    def __init__(self, user_id: str, ruleset: Ruleset) -> None:
        self.user_id = user_id
        rules: list[CompiledRule] = []
        for kind in KINDS:
            for rule in ruleset.get(kind, ()):
                if not isinstance(rule, Mapping) or rule.get("enabled", True) is not True:
                    continue
                matchers = _rule_matchers(kind, rule)
                actions = rule.get("actions", [])
                if matchers is None or not isinstance(actions, list):
                    continue
                rules.append(CompiledRule(kind, str(rule["rule_id"]), matchers, summarise_actions(actions, str(rule["rule_id"]))))
        self.rules: tuple[CompiledRule, ...] = tuple(rules)

    def evaluate(
        self,
        event: Event | Mapping[str, Any],
        room_member_count: int,
        display_name: str | None = None,
        power_levels: RoomPowerLevels | None = None,
    ) -> PushActions:
        """The actions of the first matching rule for ``event`` (:data:`NO_ACTIONS` if none matches).

        Args:
            event: the event (or its JSON).
            room_member_count: the room's joined member count.
            display_name: the owner's display name in the room.
            power_levels: the room's power levels (``sender_notification_permission`` never matches
                without them).
        """
        pdu = event.pdu if isinstance(event, Event) else event
        sender = pdu.get("sender")
        if not isinstance(sender, str) or sender == self.user_id:
            return NO_ACTIONS
        ctx = _Context(pdu, sender, room_member_count, display_name, power_levels)
        for rule in self.rules:
            if all(matcher(ctx) for matcher in rule.matchers):
                return rule.actions
        return NO_ACTIONS


RulesetLoader = Callable[[str], Awaitable[Ruleset]]


class PushRuleEvaluator:
    """Evaluates events against users' push rules, compiling each user's ruleset once.

    Args:
        loader: returns a user's full ruleset (defaults merged with their rules).
        cache_size: compiled rulesets kept (least recently used are dropped).
    """

    def __init__(self, loader: RulesetLoader, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._loader = loader
        self._cache: OrderedDict[str, CompiledRuleset] = OrderedDict()
        self._cache_size = cache_size
        self._invalidations = 0
        self.compilations = 0
        """How many rulesets were compiled (tests check the cache)."""

    def invalidate(self, user_id: str) -> None:
        """Drops ``user_id``'s compiled ruleset (call after every change to their rules)."""
        self._cache.pop(user_id, None)
        self._invalidations += 1

    async def get_ruleset(self, user_id: str) -> CompiledRuleset:
        """The user's compiled ruleset, loading and compiling it on first use."""
        cached = self._cache.get(user_id)
        if cached is not None:
            self._cache.move_to_end(user_id)
            return cached
        invalidations = self._invalidations
        compiled = CompiledRuleset(user_id, await self._loader(user_id))
        self.compilations += 1
        # A change committed while we loaded may not be in what we read: use it once, never cache it.
        # (Any invalidation counts, not only this user's: rare, and it needs no per-user memory.)
        if self._invalidations == invalidations:
            self._cache[user_id] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    async def evaluate(
        self,
        user_id: str,
        event: Event | Mapping[str, Any],
        room_member_count: int,
        display_name: str | None = None,
        power_levels: RoomPowerLevels | None = None,
    ) -> PushActions:
        """The actions ``user_id``'s rules give ``event`` (see :meth:`CompiledRuleset.evaluate`)."""
        ruleset = await self.get_ruleset(user_id)
        return ruleset.evaluate(event, room_member_count, display_name, power_levels)
