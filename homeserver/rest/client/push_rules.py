"""Push rules (spec client-server-api modules, "Push Notifications", ``pushrules.yaml``).

* ``GET /_matrix/client/v3/pushrules/`` and ``GET /_matrix/client/v3/pushrules/global/``
* ``GET/PUT/DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}``
* ``GET/PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled``
* ``GET/PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions``

Only the ``global`` scope exists; another scope is ``400 M_INVALID_PARAM``, as is an unknown kind.
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.http.auth import Authenticator, Requester
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_json_object_from_request, parse_string, require_bool
from homeserver.push.service import PushRulesService
from homeserver.rest.client.login import client_paths
from sc_proto.errors import Codes, MatrixError

RATE_LIMIT_ACTION = "push_rules.user"
GLOBAL_SCOPE = "global"


def _check_scope(scope: str) -> None:
    if scope != GLOBAL_SCOPE:
        raise MatrixError(400, Codes.INVALID_PARAM, "Only the 'global' push rule scope exists")


class PushRuleServlets:
    """Registers the push rule endpoints.

    Args:
        authenticator: authenticates requests.
        service: the push rules service.
        ratelimiter: has a rule for ``push_rules.user`` (applied to changes).
    """

    def __init__(
        self, authenticator: Authenticator, service: PushRulesService, ratelimiter: RateLimiter
    ) -> None:
        self._auth = authenticator
        self._service = service
        self._ratelimiter = ratelimiter

    def register(self, resource: JsonResource) -> None:
        resource.register("GET", client_paths("/pushrules/"), self.on_get_all)
        resource.register("GET", client_paths("/pushrules/{scope}/"), self.on_get_scope)
        rule = client_paths("/pushrules/{scope}/{kind}/{ruleId}")
        resource.register("GET", rule, self.on_get_rule)
        resource.register("PUT", rule, self.on_put_rule)
        resource.register("DELETE", rule, self.on_delete_rule)
        enabled = client_paths("/pushrules/{scope}/{kind}/{ruleId}/enabled")
        resource.register("GET", enabled, self.on_get_enabled)
        resource.register("PUT", enabled, self.on_put_enabled)
        actions = client_paths("/pushrules/{scope}/{kind}/{ruleId}/actions")
        resource.register("GET", actions, self.on_get_actions)
        resource.register("PUT", actions, self.on_put_actions)

    async def _changer(self, request: Request, scope: str) -> Requester:
        requester = await self._auth.get_requester(request)
        _check_scope(scope)
        self._ratelimiter.check_user(RATE_LIMIT_ACTION, requester.user_id, requester.is_admin)
        return requester

    async def on_get_all(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/pushrules/"""
        requester = await self._auth.get_requester(request)
        return 200, {"global": await self._service.get_ruleset(requester.user_id)}

    async def on_get_scope(self, request: Request, scope: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/pushrules/global/"""
        requester = await self._auth.get_requester(request)
        _check_scope(scope)
        return 200, await self._service.get_ruleset(requester.user_id)

    async def on_get_rule(self, request: Request, scope: str, kind: str, rule_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}"""
        requester = await self._auth.get_requester(request)
        _check_scope(scope)
        return 200, await self._service.get_rule(requester.user_id, kind, rule_id)

    async def on_put_rule(self, request: Request, scope: str, kind: str, rule_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}"""
        requester = await self._changer(request, scope)
        body = parse_json_object_from_request(request)
        before = parse_string(request, "before")
        after = parse_string(request, "after")
        await self._service.put_rule(requester.user_id, kind, rule_id, body, before=before, after=after)
        return 200, {}

    async def on_delete_rule(self, request: Request, scope: str, kind: str, rule_id: str) -> tuple[int, JsonDict]:
        """DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}"""
        requester = await self._changer(request, scope)
        await self._service.delete_rule(requester.user_id, kind, rule_id)
        return 200, {}

    async def on_get_enabled(self, request: Request, scope: str, kind: str, rule_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled"""
        requester = await self._auth.get_requester(request)
        _check_scope(scope)
        rule = await self._service.get_rule(requester.user_id, kind, rule_id)
        return 200, {"enabled": bool(rule["enabled"])}

    async def on_put_enabled(self, request: Request, scope: str, kind: str, rule_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled"""
        requester = await self._changer(request, scope)
        enabled = require_bool(parse_json_object_from_request(request), "enabled")
        await self._service.set_enabled(requester.user_id, kind, rule_id, enabled)
        return 200, {}

    async def on_get_actions(self, request: Request, scope: str, kind: str, rule_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions"""
        requester = await self._auth.get_requester(request)
        _check_scope(scope)
        rule = await self._service.get_rule(requester.user_id, kind, rule_id)
        return 200, {"actions": rule["actions"]}

    async def on_put_actions(self, request: Request, scope: str, kind: str, rule_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions"""
        requester = await self._changer(request, scope)
        body = parse_json_object_from_request(request)
        if "actions" not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'actions'")
        await self._service.set_actions(requester.user_id, kind, rule_id, body["actions"])
        return 200, {}
