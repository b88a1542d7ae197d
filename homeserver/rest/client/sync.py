"""``GET /_matrix/client/v3/sync`` (and ``r0``): classic sync with long polling (spec "Syncing").

Query parameters: ``since`` (a ``next_batch`` token), ``timeout`` (ms, 0 = answer at once, clamped
to five minutes), ``full_state``, ``set_presence`` (passed to the engine's sync observers: presence),
``filter`` (inline JSON when it starts with ``{``, otherwise the ID of a filter the user uploaded).
The route is cancellable: a client that disconnects stops its long poll.
"""

from __future__ import annotations

import json

from twisted.web.server import Request

from homeserver.http.auth import Authenticator
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_boolean, parse_integer, parse_string
from homeserver.rest.client.filters import MAX_FILTER_BYTES, validate_filter
from homeserver.rest.client.login import client_paths
from homeserver.storage.stores.filters import FilterStore
from homeserver.sync.engine import SyncEngine, SyncRequest
from homeserver.sync.filters import SyncFilter, parse_sync_filter
from sc_proto.errors import Codes, MatrixError

PRESENCE_STATES = ("offline", "online", "unavailable")
_MAX_FILTER_ID_DIGITS = 15


class SyncServlets:
    """Registers ``/sync``.

    Args:
        authenticator: authenticates requests.
        engine: the sync engine.
        filters: stored filters.
    """

    def __init__(self, authenticator: Authenticator, engine: SyncEngine, filters: FilterStore) -> None:
        self._auth = authenticator
        self._engine = engine
        self._filters = filters

    def register(self, resource: JsonResource) -> None:
        resource.register("GET", client_paths("/sync"), self.on_sync, cancellable=True)

    async def on_sync(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/sync"""
        requester = await self._auth.get_requester(request, allow_guest=True)
        since = parse_string(request, "since")
        timeout = parse_integer(request, "timeout", default=0, minimum=0)
        full_state = parse_boolean(request, "full_state", default=False)
        set_presence = parse_string(request, "set_presence", allowed_values=PRESENCE_STATES)
        raw_filter = parse_string(request, "filter")
        sync_filter = await self._load_filter(requester.user_id, raw_filter)
        if since is not None:
            # Malformed tokens fail before any waiting; the engine decodes again against "now".
            await self._engine.decode_since(since, await self._engine.current_token())
        # Observers (presence) hear that this user is syncing, and when the request ends.
        finished = [observe(requester.user_id, requester.device_id, set_presence) for observe in self._engine.sync_observers]
        try:
            body = await self._engine.sync(
                SyncRequest(
                    user_id=requester.user_id,
                    device_id=requester.device_id,
                    since=since,
                    filter=sync_filter,
                    filter_key=raw_filter or "",
                    full_state=full_state,
                    timeout_ms=timeout,
                )
            )
        finally:
            for done in finished:
                done()
        return 200, body

    async def _load_filter(self, user_id: str, raw: str | None) -> SyncFilter:
        """Parses an inline filter or loads a stored one.

        Raises:
            MatrixError: 400 for malformed JSON, a bad filter or a malformed ID; 404 ``M_NOT_FOUND`` for
                an unknown filter ID.
        """
        if raw is None or raw == "":
            return SyncFilter()
        if raw.startswith("{"):
            if len(raw.encode("utf-8")) > MAX_FILTER_BYTES:
                raise MatrixError(413, Codes.TOO_LARGE, "Filter is too large")
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                raise MatrixError(400, Codes.NOT_JSON, "The filter is not valid JSON") from None
            validate_filter(body)
            return parse_sync_filter(body)
        if not (raw.isascii() and raw.isdigit()) or len(raw) > _MAX_FILTER_ID_DIGITS:
            raise MatrixError(400, Codes.INVALID_PARAM, "'filter' must be a filter ID or a JSON object")
        stored = await self._filters.get_filter(user_id, int(raw))
        if stored is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No such filter")
        return parse_sync_filter(stored)
