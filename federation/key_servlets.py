"""The key API servlets (server-server API, "Retrieving server keys"), unauthenticated routes.

* ``GET /_matrix/key/v2/server``: our keys (current and old), signed, valid for
  ``federation.key_validity_period_s``.
* ``GET /_matrix/key/v2/query/{serverName}`` and ``POST /_matrix/key/v2/query``: the notary API: the
  keys of other servers (from the cache, or fetched from the origin), each response carrying the
  origin's signature and ours.

The deprecated ``GET /_matrix/key/v2/server/{keyId}`` is not served: the spec no longer lists it (only
``keys_server.yaml``'s ``/server``), and a server answering it ignored the key ID anyway.

Bounds: a ``POST`` query may name at most :data:`MAX_QUERY_SERVERS` servers and
:data:`MAX_QUERY_KEY_IDS` key IDs per server; anything malformed or larger is a 400 Matrix error
(``M_NOT_JSON``, ``M_BAD_JSON``, ``M_INVALID_PARAM``, ``M_TOO_LARGE``). The byte size of a body is
bounded by the transport.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer

from federation.interfaces import FederationRequest, FederationRouter, JsonDict
from federation.keyring import Keyring
from federation.local_keys import LocalKeys
from homeserver.util.clock import Clock
from sc_proto.errors import Codes, MatrixError
from sc_proto.federation.keys import notary_sign, parse_key_query_request
from sc_proto.identifiers import is_valid_server_name
from sc_proto.json import MAX_SAFE_INTEGER

logger = logging.getLogger(__name__)

MAX_QUERY_SERVERS = 100
"""Servers one ``POST /_matrix/key/v2/query`` may ask about (each may cost an outbound fetch)."""
MAX_QUERY_KEY_IDS = 50
"""Key IDs one server of a ``POST /_matrix/key/v2/query`` may name."""

_DIGITS = re.compile(r"[0-9]{1,16}")


class KeyServlets:
    """Serves our keys and the notary API.

    Args:
        keyring: the keyring (notary answers come from its cache and fetches).
        local: our keys.
        clock: the time source.
        validity_ms: how long our published response is declared valid.
    """

    def __init__(self, keyring: Keyring, local: LocalKeys, clock: Clock, validity_ms: int) -> None:
        self._keyring = keyring
        self._local = local
        self._clock = clock
        self._validity_ms = validity_ms

    def register(self, router: FederationRouter) -> None:
        """Registers the three routes, unauthenticated (key fetches carry no ``X-Matrix``)."""
        router.register("GET", "/_matrix/key/v2/server", self.on_get_server_keys, authenticated=False)
        router.register(
            "GET", "/_matrix/key/v2/query/{serverName}", self.on_query_server, authenticated=False
        )
        router.register("POST", "/_matrix/key/v2/query", self.on_query, authenticated=False)

    async def on_get_server_keys(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/key/v2/server"""
        return 200, self._own_response()

    async def on_query_server(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/key/v2/query/{serverName}"""
        server_name = request.path_args.get("serverName")
        if not is_valid_server_name(server_name):
            raise MatrixError(400, Codes.INVALID_PARAM, "serverName is not a valid server name")
        assert isinstance(server_name, str)  # is_valid_server_name checked it
        minimum = _parse_minimum(request.query.get("minimum_valid_until_ts"), self._clock.time_msec())
        return 200, {"server_keys": await self._responses_for(server_name, minimum)}

    async def on_query(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """POST /_matrix/key/v2/query"""
        if request.content is None:
            raise MatrixError(400, Codes.NOT_JSON, "the body must be a JSON object")
        queries = parse_key_query_request(
            request.content,
            now_ms=self._clock.time_msec(),
            max_servers=MAX_QUERY_SERVERS,
            max_key_ids=MAX_QUERY_KEY_IDS,
        )
        pending = [
            defer.ensureDeferred(self._responses_for(q.server_name, q.minimum_valid_until_ts))
            for q in queries
        ]
        try:
            results: list[list[dict[str, Any]]] = await defer.gatherResults(pending, consumeErrors=True)
        except defer.FirstError as e:
            e.subFailure.raiseException()
            raise  # pragma: no cover - raiseException always raises
        return 200, {"server_keys": [response for group in results for response in group]}

    def _own_response(self) -> dict[str, Any]:
        return dict(self._local.server_keys_response(self._clock.time_msec(), self._validity_ms))

    async def _responses_for(self, server_name: str, minimum_valid_until_ts: int) -> list[dict[str, Any]]:
        if server_name == self._local.server_name:
            return [self._own_response()]
        responses = await self._keyring.get_server_keys_for_notary(server_name, minimum_valid_until_ts)
        return [
            notary_sign(response, server_name, self._local.server_name, self._local.signing_key)
            for response in responses
        ]


def _parse_minimum(values: Sequence[str] | None, now_ms: int) -> int:
    """``minimum_valid_until_ts`` from the query string; the current time when absent (spec)."""
    if not values:
        return now_ms
    if len(values) != 1 or not _DIGITS.fullmatch(values[0]) or int(values[0]) > MAX_SAFE_INTEGER:
        raise MatrixError(400, Codes.INVALID_PARAM, "minimum_valid_until_ts must be one non-negative integer")
    return int(values[0])
