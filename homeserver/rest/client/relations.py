"""Relations and threads endpoints.

* ``GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]``
* ``GET /_matrix/client/v1/rooms/{roomId}/threads``

Both serve events with bundled aggregations (through the one serializer).
"""

from __future__ import annotations

from twisted.web.server import Request

from homeserver.events.serialize import EventSerializer, Viewer
from homeserver.http.auth import Authenticator
from homeserver.http.params import parse_event_id, parse_room_id
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_boolean, parse_integer, parse_string
from homeserver.relations.service import RelationsQuery, RelationsService
from homeserver.storage.stores.relations import MAX_RECURSION_DEPTH
from sc_proto.errors import Codes, MatrixError

V1 = "/_matrix/client/v1"
DEFAULT_RELATIONS_LIMIT = 20
DEFAULT_THREADS_LIMIT = 20
MAX_LIMIT = 100
MAX_TOKEN_LENGTH = 512




def _token(request: Request, name: str) -> str | None:
    value = parse_string(request, name)
    if value is not None and len(value) > MAX_TOKEN_LENGTH:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} is too long")
    return value or None


def _limit(request: Request, default: int) -> int:
    return min(parse_integer(request, "limit", default, minimum=1), MAX_LIMIT)


class RelationServlets:
    """Registers the relations and threads endpoints.

    Args:
        authenticator: access-token authentication.
        relations: the relations service.
        serializer: turns stored events into client events.
    """

    def __init__(self, authenticator: Authenticator, relations: RelationsService, serializer: EventSerializer) -> None:
        self._auth = authenticator
        self._relations = relations
        self._serializer = serializer

    def register(self, resource: JsonResource) -> None:
        base = f"{V1}/rooms/{{roomId}}/relations/{{eventId}}"
        resource.register("GET", [base], self.on_relations)
        resource.register("GET", [f"{base}/{{relType}}"], self.on_relations)
        resource.register("GET", [f"{base}/{{relType}}/{{eventType}}"], self.on_relations)
        resource.register("GET", [f"{V1}/rooms/{{roomId}}/threads"], self.on_threads)

    async def on_relations(
        self, request: Request, room_id: str, event_id: str, rel_type: str | None = None, event_type: str | None = None
    ) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        parse_event_id(event_id)
        direction = parse_string(request, "dir", "b", allowed_values=("b", "f"))
        recurse = parse_boolean(request, "recurse")
        from_token = _token(request, "from")
        query = RelationsQuery(
            rel_type=rel_type,
            event_type=event_type,
            from_token=from_token,
            to_token=_token(request, "to"),
            backwards=direction == "b",
            limit=_limit(request, DEFAULT_RELATIONS_LIMIT),
            recurse=bool(recurse),
        )
        page = await self._relations.get_relations(requester.user_id, room_id, event_id, query)
        viewer = Viewer(requester.user_id, requester.device_id)
        body: JsonDict = {"chunk": await self._serializer.serialize(page.chunk, viewer)}
        if page.next_batch is not None:
            body["next_batch"] = page.next_batch
        if from_token is not None:
            body["prev_batch"] = from_token
        if recurse is not None:
            body["recursion_depth"] = MAX_RECURSION_DEPTH if recurse else 1
        return 200, body

    async def on_threads(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v1/rooms/{roomId}/threads"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        include = parse_string(request, "include", "all", allowed_values=("all", "participated"))
        page = await self._relations.get_threads(
            requester.user_id,
            room_id,
            participated=include == "participated",
            from_token=_token(request, "from"),
            limit=_limit(request, DEFAULT_THREADS_LIMIT),
        )
        viewer = Viewer(requester.user_id, requester.device_id)
        body: JsonDict = {"chunk": await self._serializer.serialize(page.chunk, viewer)}
        if page.next_batch is not None:
            body["next_batch"] = page.next_batch
        return 200, body
