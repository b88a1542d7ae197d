"""Reading rooms: history, single events, context, timestamps, state and member lists.

* ``GET /_matrix/client/v3/rooms/{roomId}/messages``
* ``GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}``
* ``GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}``
* ``GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event``
* ``GET /_matrix/client/v3/rooms/{roomId}/state``, ``GET .../state/{eventType}/{stateKey}``
* ``GET /_matrix/client/v3/rooms/{roomId}/members``

Every event goes out through :class:`~homeserver.events.serialize.EventSerializer` (redacted events
show redacted content everywhere) after :mod:`homeserver.rooms.visibility` has decided it may.
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.events.serialize import EventSerializer, Viewer
from homeserver.http.auth import Authenticator, Requester
from homeserver.http.params import parse_room_id
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_integer, parse_string
from homeserver.rest.client.login import client_paths
from homeserver.rooms.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MEMBERSHIPS,
    RoomReader,
    parse_room_event_filter,
)
from sc_proto.errors import Codes, MatrixError


def _viewer(requester: Requester) -> Viewer:
    return Viewer(requester.user_id, requester.device_id)


def _parse_limit(request: Request, default: int = DEFAULT_LIMIT) -> int:
    """``limit``: a non-negative integer (400 otherwise), capped at :data:`MAX_LIMIT`."""
    return min(parse_integer(request, "limit", default, minimum=0), MAX_LIMIT)


class RoomReadServlets:
    """Registers the room read endpoints.

    Args:
        authenticator: access-token authentication.
        reader: the room reader (visibility-checked history and state).
        serializer: turns stored events into client events.
    """

    def __init__(self, authenticator: Authenticator, reader: RoomReader, serializer: EventSerializer) -> None:
        self._auth = authenticator
        self._reader = reader
        self._serializer = serializer

    def register(self, resource: JsonResource) -> None:
        r = resource
        r.register("GET", client_paths("/rooms/{roomId}/messages"), self.on_messages)
        r.register("GET", client_paths("/rooms/{roomId}/context/{eventId}"), self.on_context)
        r.register("GET", client_paths("/rooms/{roomId}/event/{eventId}"), self.on_event)
        r.register("GET", ["/_matrix/client/v1/rooms/{roomId}/timestamp_to_event"], self.on_timestamp_to_event)
        r.register("GET", client_paths("/rooms/{roomId}/state"), self.on_state)
        r.register("GET", client_paths("/rooms/{roomId}/state/{eventType}/{stateKey:.*}"), self.on_state_event)
        r.register("GET", client_paths("/rooms/{roomId}/state/{eventType}"), self.on_state_event)
        r.register("GET", client_paths("/rooms/{roomId}/members"), self.on_members)

    async def on_messages(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/rooms/{roomId}/messages"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        direction = parse_string(request, "dir", required=True, allowed_values=("b", "f"))
        from_token = parse_string(request, "from")
        to_token = parse_string(request, "to")
        limit = _parse_limit(request)
        event_filter = parse_room_event_filter(parse_string(request, "filter"))
        page = await self._reader.get_messages(
            requester.user_id,
            room_id,
            from_token=from_token or None,
            to_token=to_token or None,
            backwards=direction == "b",
            limit=limit,
            event_filter=event_filter,
        )
        viewer = _viewer(requester)
        body: JsonDict = {
            "chunk": await self._serializer.serialize(page.chunk, viewer),
            # The spec: start "will be the same as the value given in from".
            "start": from_token or page.start.encode(),
        }
        if page.end is not None:
            body["end"] = page.end.encode()
        if event_filter.lazy_load_members:
            body["state"] = await self._serializer.serialize(page.state, viewer)
        return 200, body

    async def on_context(self, request: Request, room_id: str, event_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        limit = _parse_limit(request)
        event_filter = parse_room_event_filter(parse_string(request, "filter"))
        context = await self._reader.get_context(requester.user_id, room_id, event_id, limit, event_filter)
        viewer = _viewer(requester)
        serialize = self._serializer.serialize
        return 200, {
            "event": (await serialize([context.event], viewer))[0],
            "events_before": await serialize(context.events_before, viewer),
            "events_after": await serialize(context.events_after, viewer),
            "state": await serialize(context.state, viewer),
            "start": context.start.encode(),
            "end": context.end.encode(),
        }

    async def on_event(self, request: Request, room_id: str, event_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        stored = await self._reader.get_visible_event(requester.user_id, room_id, event_id)
        return 200, (await self._serializer.serialize([stored], _viewer(requester)))[0]

    async def on_timestamp_to_event(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        ts = parse_integer(request, "ts", required=True, minimum=0)
        direction = parse_string(request, "dir", required=True, allowed_values=("b", "f"))
        stored = await self._reader.get_event_at_timestamp(requester.user_id, room_id, ts, direction == "f")
        return 200, {"event_id": stored.event_id, "origin_server_ts": stored.event.origin_server_ts}

    async def on_state(self, request: Request, room_id: str) -> tuple[int, list[JsonDict]]:
        """GET /_matrix/client/v3/rooms/{roomId}/state"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        state = await self._reader.get_state(requester.user_id, room_id)
        events = await self._reader.get_state_events(state)
        return 200, await self._serializer.serialize(events, _viewer(requester))

    async def on_state_event(
        self, request: Request, room_id: str, event_type: str, state_key: str = ""
    ) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        output = parse_string(request, "format", "content", allowed_values=("content", "event"))
        state = await self._reader.get_state(requester.user_id, room_id)
        event_id = state.get((event_type, state_key))
        events = await self._reader.get_state_events({(event_type, state_key): event_id} if event_id else {})
        if not events:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        serialized = (await self._serializer.serialize(events, _viewer(requester)))[0]
        if output == "event":
            return 200, serialized
        content: JsonDict = serialized["content"]
        return 200, content

    async def on_members(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/rooms/{roomId}/members"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        at_token = parse_string(request, "at")
        membership = parse_string(request, "membership", allowed_values=MEMBERSHIPS)
        not_membership = parse_string(request, "not_membership", allowed_values=MEMBERSHIPS)
        members = await self._reader.get_members(
            requester.user_id, room_id, at_token=at_token or None, membership=membership, not_membership=not_membership
        )
        return 200, {"chunk": await self._serializer.serialize(members, _viewer(requester))}
