"""Managing a user's push rules: the operations behind ``/pushrules`` and the ``m.push_rules`` account data.

Theory of operation: each change runs in the user's turn of a :class:`Linearizer` (one change per
user at a time in this process) and then, still in that turn, (1) drops the user's compiled ruleset
from the evaluator and (2) rebuilds the full ruleset from the store and writes it as the user's
global ``m.push_rules`` account data, so the account-data stream (which wakes ``/sync``) delivers it
and the account-data writes of successive changes land in the order the changes did. The store is
the source of truth; the account data is a copy for clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from homeserver.push.evaluator import PushRuleEvaluator
from homeserver.push.rules import (
    build_ruleset,
    check_kind,
    check_new_rule_id,
    default_rule_exists,
    find_rule,
    is_default_rule_id,
    validate_actions,
    validate_rule_body,
)
from homeserver.storage.stores.push_rules import (
    MAX_RULES_PER_USER,
    PushRuleAnchorNotFoundError,
    PushRuleStore,
    TooManyPushRulesError,
)
from homeserver.util.linearizer import Linearizer
from sc_proto.errors import Codes, MatrixError

JsonDict = dict[str, Any]
PUSH_RULES_TYPE = "m.push_rules"
"""The account data type carrying the ruleset."""


class AccountDataWriter(Protocol):
    """What the service needs from :class:`homeserver.storage.stores.account_data.AccountDataStore`."""

    async def set_account_data(
        self, user_id: str, room_id: str | None, data_type: str, content: dict[str, Any]
    ) -> int:
        """Stores account data (global when ``room_id`` is None); returns its stream id."""
        ...


def _not_found() -> MatrixError:
    return MatrixError(404, Codes.NOT_FOUND, "The push rule was not found.")


class PushRulesService:
    """Reads and changes users' push rules.

    Args:
        store: the push rule store.
        account_data: where the ``m.push_rules`` copy is written.
        cache_size: compiled rulesets the evaluator keeps.

    Attributes:
        evaluator: evaluates events against users' rules (kept current by this service).
    """

    def __init__(self, store: PushRuleStore, account_data: AccountDataWriter, cache_size: int = 10_000) -> None:
        self._store = store
        self._account_data = account_data
        self._linearizer = Linearizer("push_rules")
        self.evaluator = PushRuleEvaluator(self.get_ruleset, cache_size)

    # ------------------------------------------------------------------ reads

    async def get_ruleset(self, user_id: str) -> dict[str, list[JsonDict]]:
        """The user's full ``global`` ruleset (defaults merged with their rules and changes)."""
        stored = await self._store.get_user_rules(user_id)
        return build_ruleset(user_id, stored.rules, stored.default_changes)

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> JsonDict:
        """One rule in client format.

        Raises:
            MatrixError: 400 for an unknown kind, 404 ``M_NOT_FOUND`` for an unknown rule.
        """
        check_kind(kind)
        rule = find_rule(await self.get_ruleset(user_id), kind, rule_id)
        if rule is None:
            raise _not_found()
        return rule

    # ------------------------------------------------------------------ changes

    async def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        body: Mapping[str, Any],
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        """Creates or replaces a user-defined rule (``PUT /pushrules/global/{kind}/{ruleId}``).

        Raises:
            MatrixError: 400 for a bad kind, a reserved or malformed rule ID, an invalid body, an
                unknown ``before``/``after`` rule (``M_UNKNOWN``, as the spec's example), or too many rules.
        """
        check_kind(kind)
        check_new_rule_id(kind, rule_id)
        definition = validate_rule_body(kind, body)
        async with self._linearizer.queue(user_id):
            try:
                await self._store.put_rule(user_id, kind, rule_id, definition, before=before, after=after)
            except PushRuleAnchorNotFoundError as error:
                raise MatrixError(400, Codes.UNKNOWN, f"before/after rule not found: {error.rule_id[:255]}") from None
            except TooManyPushRulesError:
                raise MatrixError(
                    400, Codes.INVALID_PARAM, f"A user may have at most {MAX_RULES_PER_USER} push rules"
                ) from None
            await self._changed(user_id)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        """Deletes a user-defined rule.

        Raises:
            MatrixError: 400 for a bad kind or a server-default rule, 404 for an unknown rule.
        """
        check_kind(kind)
        if is_default_rule_id(rule_id):
            if default_rule_exists(kind, rule_id):
                raise MatrixError(400, Codes.INVALID_PARAM, "Server-default push rules cannot be deleted")
            raise _not_found()
        async with self._linearizer.queue(user_id):
            if not await self._store.delete_rule(user_id, kind, rule_id):
                raise _not_found()
            await self._changed(user_id)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
        """Enables or disables a rule (server-default rules included).

        Raises:
            MatrixError: 400 for a bad kind, 404 for an unknown rule.
        """
        check_kind(kind)
        async with self._linearizer.queue(user_id):
            if is_default_rule_id(rule_id):
                if not default_rule_exists(kind, rule_id):
                    raise _not_found()
                await self._store.change_default_rule(user_id, kind, rule_id, enabled=enabled)
            elif not await self._store.set_rule_enabled(user_id, kind, rule_id, enabled):
                raise _not_found()
            await self._changed(user_id)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: object) -> None:
        """Replaces a rule's actions (server-default rules included).

        Raises:
            MatrixError: 400 for a bad kind or invalid actions, 404 for an unknown rule.
        """
        check_kind(kind)
        valid = validate_actions(actions)
        async with self._linearizer.queue(user_id):
            if is_default_rule_id(rule_id):
                if not default_rule_exists(kind, rule_id):
                    raise _not_found()
                await self._store.change_default_rule(user_id, kind, rule_id, actions=valid)
            elif not await self._store.set_rule_actions(user_id, kind, rule_id, valid):
                raise _not_found()
            await self._changed(user_id)

    async def _changed(self, user_id: str) -> None:
        """After a committed change: forget the compiled rules, publish the ruleset as account data."""
        self.evaluator.invalidate(user_id)
        ruleset = await self.get_ruleset(user_id)
        await self._account_data.set_account_data(user_id, None, PUSH_RULES_TYPE, {"global": ruleset})
