"""The ``push_rules`` aggregate: a user's own push rules and their changes to the server-default ones.

Theory of operation: user-defined rules live in ``push_rules`` with a ``position`` per (user, kind),
lower meaning more important. A new rule without ``before``/``after`` gets a position below every
existing one (most important); a positioned insert or move renumbers the kind's rules ``0..n-1`` in
the same transaction, so the read-modify-write is atomic (PostgreSQL retries it on a serialization
failure; SQLite has one writer). Changes to server-default rules (only ``enabled`` and ``actions``
may change) live in ``push_rule_default_changes``, ``NULL`` meaning "as the default".

The store validates nothing about rule contents (``homeserver.push.rules`` does, before calling it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn

MAX_RULES_PER_USER = 1000
"""Most user-defined rules one user may have (NOTSPEC: the ruleset travels in every initial sync)."""


class PushRuleAnchorNotFoundError(Exception):
    """The ``before``/``after`` rule of a positioned write is not one of the user's rules of that kind."""

    def __init__(self, rule_id: str) -> None:
        super().__init__(rule_id)
        self.rule_id = rule_id


class TooManyPushRulesError(Exception):
    """The user already has :data:`MAX_RULES_PER_USER` rules."""


@dataclass(frozen=True)
class StoredPushRule:
    """One user-defined rule.

    Attributes:
        kind: ``override``, ``content``, ``room``, ``sender`` or ``underride``.
        rule_id: the rule's ID.
        position: order within the kind (lower is more important).
        definition: ``actions`` plus ``conditions`` or ``pattern``.
        enabled: whether the rule is enabled.
    """

    kind: str
    rule_id: str
    position: int
    definition: dict[str, Any]
    enabled: bool


@dataclass(frozen=True)
class StoredDefaultChange:
    """A user's change to one server-default rule (None: as the default)."""

    enabled: bool | None
    actions: list[Any] | None


@dataclass(frozen=True)
class UserPushRules:
    """Everything stored about one user's push rules.

    Attributes:
        rules: their rules, ordered by kind then position.
        default_changes: ``(kind, rule_id) -> change`` of server-default rules.
    """

    rules: list[StoredPushRule] = field(default_factory=list)
    default_changes: dict[tuple[str, str], StoredDefaultChange] = field(default_factory=dict)


def _encode(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _decode_object(text: object) -> dict[str, Any]:
    value = json.loads(str(text))
    return value if isinstance(value, dict) else {}


def _decode_list(text: object) -> list[Any] | None:
    if text is None:
        return None
    value = json.loads(str(text))
    return value if isinstance(value, list) else None


class PushRuleStore:
    """Reads and writes ``push_rules`` and ``push_rule_default_changes``.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    async def get_user_rules(self, user_id: str) -> UserPushRules:
        """Everything stored about ``user_id``'s rules."""

        def get_user_rules_txn(txn: Txn) -> UserPushRules:
            txn.execute(
                "SELECT kind, rule_id, position, definition, enabled FROM push_rules WHERE user_id = ?"
                " ORDER BY kind, position, rule_id",
                (user_id,),
            )
            rules = [
                StoredPushRule(str(r[0]), str(r[1]), int(r[2]), _decode_object(r[3]), bool(r[4]))
                for r in txn.fetchall()
            ]
            txn.execute(
                "SELECT kind, rule_id, enabled, actions FROM push_rule_default_changes WHERE user_id = ?",
                (user_id,),
            )
            changes = {
                (str(r[0]), str(r[1])): StoredDefaultChange(None if r[2] is None else bool(r[2]), _decode_list(r[3]))
                for r in txn.fetchall()
            }
            return UserPushRules(rules, changes)

        return await self._pool.run_read("get_push_rules", get_user_rules_txn)

    async def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        definition: dict[str, Any],
        *,
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        """Creates or replaces a user-defined rule.

        A new rule is enabled. Without ``before``/``after`` a new rule becomes the most important of
        its kind and a replaced one keeps its place (and its ``enabled``); with them the rule is moved
        just before (more important than) ``before``, or else just after ``after``.

        Raises:
            PushRuleAnchorNotFoundError: the anchor is not another of the user's rules of ``kind``.
            TooManyPushRulesError: creating the rule would exceed :data:`MAX_RULES_PER_USER`.
        """
        anchor = before if before is not None else after
        encoded = _encode(definition)

        def put_rule_txn(txn: Txn) -> None:
            txn.execute(
                "SELECT rule_id, position FROM push_rules WHERE user_id = ? AND kind = ? ORDER BY position, rule_id",
                (user_id, kind),
            )
            rows = [(str(r[0]), int(r[1])) for r in txn.fetchall()]
            ids = [rid for rid, _ in rows]
            exists = rule_id in ids
            if anchor is not None and (anchor == rule_id or anchor not in ids):
                raise PushRuleAnchorNotFoundError(anchor)
            if not exists:
                txn.execute("SELECT COUNT(*) FROM push_rules WHERE user_id = ?", (user_id,))
                row = txn.fetchone()
                if row is not None and int(row[0]) >= MAX_RULES_PER_USER:
                    raise TooManyPushRulesError()
            if exists:
                txn.execute(
                    "UPDATE push_rules SET definition = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                    (encoded, user_id, kind, rule_id),
                )
            else:
                top = min((p for _, p in rows), default=1) - 1
                txn.execute(
                    "INSERT INTO push_rules (user_id, kind, rule_id, position, definition, enabled)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (user_id, kind, rule_id, top, encoded, True),
                )
            if anchor is None:
                return
            order = [rid for rid in ids if rid != rule_id]
            index = order.index(anchor) + (0 if before is not None else 1)
            order.insert(index, rule_id)
            txn.execute_many(
                "UPDATE push_rules SET position = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                [(position, user_id, kind, rid) for position, rid in enumerate(order)],
            )

        await self._pool.run_txn("put_push_rule", put_rule_txn)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        """Deletes a user-defined rule; False when there was none."""

        def delete_rule_txn(txn: Txn) -> bool:
            txn.execute(
                "DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?", (user_id, kind, rule_id)
            )
            return txn.rowcount > 0

        return await self._pool.run_txn("delete_push_rule", delete_rule_txn)

    async def set_rule_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> bool:
        """Enables or disables a user-defined rule; False when there is none."""

        def set_enabled_txn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE push_rules SET enabled = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (enabled, user_id, kind, rule_id),
            )
            return txn.rowcount > 0

        return await self._pool.run_txn("set_push_rule_enabled", set_enabled_txn)

    async def set_rule_actions(self, user_id: str, kind: str, rule_id: str, actions: Sequence[Any]) -> bool:
        """Replaces a user-defined rule's actions; False when there is no such rule."""

        def set_actions_txn(txn: Txn) -> bool:
            txn.execute(
                "SELECT definition FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (user_id, kind, rule_id),
            )
            row = txn.fetchone()
            if row is None:
                return False
            definition = _decode_object(row[0])
            definition["actions"] = list(actions)
            txn.execute(
                "UPDATE push_rules SET definition = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (_encode(definition), user_id, kind, rule_id),
            )
            return True

        return await self._pool.run_txn("set_push_rule_actions", set_actions_txn)

    async def change_default_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        *,
        enabled: bool | None = None,
        actions: Sequence[Any] | None = None,
    ) -> None:
        """Records a change to a server-default rule (a None argument leaves that part as it was)."""
        encoded = None if actions is None else _encode(list(actions))

        def change_default_txn(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO push_rule_default_changes (user_id, kind, rule_id, enabled, actions)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET"
                " enabled = COALESCE(excluded.enabled, push_rule_default_changes.enabled),"
                " actions = COALESCE(excluded.actions, push_rule_default_changes.actions)",
                (user_id, kind, rule_id, enabled, encoded),
            )

        await self._pool.run_txn("change_default_push_rule", change_default_txn)
