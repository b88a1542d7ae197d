"""``GET /_matrix/client/v3/sync`` (and ``r0``): classic sync with long polling (spec "Syncing").

Query parameters: ``since`` (a ``next_batch`` token), ``timeout`` (ms, 0 = answer at once, clamped
to five minutes), ``full_state``, ``set_presence`` (passed to the engine's sync observers: presence),
``filter`` (inline JSON when it starts with ``{``, otherwise the ID of a filter the user uploaded;
loaded by :class:`~homeserver.sync.filter_loading.FilterLoader`, shared with the WebSocket push).
The route is cancellable: a client that disconnects stops its long poll.
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.http.auth import Authenticator
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_boolean, parse_integer, parse_string
from homeserver.rest.client.login import client_paths
from homeserver.storage.stores.filters import FilterStore
from homeserver.sync.engine import SyncEngine, SyncRequest
from homeserver.sync.filter_loading import FilterLoader

PRESENCE_STATES = ("offline", "online", "unavailable")


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
        self._filters = FilterLoader(filters)

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
        sync_filter, filter_key = await self._filters.load(requester.user_id, raw_filter)
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
                    filter_key=filter_key,
                    full_state=full_state,
                    timeout_ms=timeout,
                )
            )
        finally:
            for done in finished:
                done()
        return 200, body
