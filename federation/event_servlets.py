"""Servlets serving our rooms' events to other servers (issue 13, ADR 0014).

Every route checks, before reading anything, that the requesting origin passes the room's server
ACL (403 ``M_FORBIDDEN``, server-server API "Server Access Control Lists") and has a joined member in
the room (403 ``M_FORBIDDEN``); single events must also be visible to the origin under history
visibility (:meth:`RoomHistoryAPI.server_can_see_event`). Walks (``/backfill``,
``/get_missing_events``) return events the origin may not see as redacted copies, so the graph stays
walkable without leaking content. Limits are capped (:data:`MAX_LIMIT`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from federation.interfaces import FederationRequest, FederationRouter, JsonDict
from homeserver.api.services import RoomHistoryAPI
from homeserver.identity import LocalServer
from sc_proto.errors import Codes, MatrixError
from sc_proto.events.model import Event
from sc_proto.events.redaction import redact
from sc_proto.federation.acl import SERVER_ACL_TYPE, is_server_allowed_by_acl

PREFIX = "/_matrix/federation/v1"
MAX_LIMIT = 100
"""Most events one ``/backfill`` or ``/get_missing_events`` answer carries."""
MAX_REQUEST_IDS = 100
"""Most event IDs accepted in ``v``, ``earliest_events`` or ``latest_events``."""
MAX_AUTH_CHAIN = 10_000


def _pdu_json(event: Event) -> JsonDict:
    pdu = event.get_pdu_json()
    pdu.pop("unsigned", None)
    return pdu


def _one(query: Mapping[str, Sequence[str]], name: str) -> str:
    values = query.get(name)
    if not values:
        raise MatrixError(400, Codes.MISSING_PARAM, f"Missing parameter: {name}")
    return values[0]


def _int_param(query: Mapping[str, Sequence[str]], name: str) -> int:
    raw = _one(query, name)
    if not raw.lstrip("-").isdigit() or len(raw) > 19:
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name} must be an integer")
    return int(raw)


def _id_list(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, Codes.BAD_JSON, f"{name} must be a list of event IDs")
    if len(value) > MAX_REQUEST_IDS:
        raise MatrixError(400, Codes.BAD_JSON, f"{name} has more than {MAX_REQUEST_IDS} entries")
    return list(value)


class EventServlets:
    """``/event``, ``/state``, ``/state_ids``, ``/event_auth``, ``/backfill``, ``/get_missing_events``
    and ``/timestamp_to_event``.

    Args:
        local: our server name (the ``origin`` of answers).
        history: graph reads.
        time_msec: the clock.
    """

    def __init__(self, local: LocalServer, history: RoomHistoryAPI, time_msec: Callable[[], int]) -> None:
        self._local = local
        self._history = history
        self._now = time_msec

    def register(self, router: FederationRouter) -> None:
        """Registers every route on ``router``."""
        router.register("GET", f"{PREFIX}/event/{{eventId}}", self.on_get_event)
        router.register("GET", f"{PREFIX}/state/{{roomId}}", self.on_get_state)
        router.register("GET", f"{PREFIX}/state_ids/{{roomId}}", self.on_get_state_ids)
        router.register("GET", f"{PREFIX}/event_auth/{{roomId}}/{{eventId}}", self.on_get_event_auth)
        router.register("GET", f"{PREFIX}/backfill/{{roomId}}", self.on_backfill)
        router.register("POST", f"{PREFIX}/get_missing_events/{{roomId}}", self.on_get_missing_events)
        router.register("GET", f"{PREFIX}/timestamp_to_event/{{roomId}}", self.on_timestamp_to_event)

    # ------------------------------------------------------------------ access

    @staticmethod
    def _origin(request: FederationRequest) -> str:
        if request.origin is None:
            raise MatrixError(401, Codes.UNAUTHORIZED, "Federation requests must be signed")
        return request.origin

    async def _require_in_room(self, origin: str, room_id: str) -> None:
        """ACL then membership; 404 for a room we do not know."""
        if await self._history.get_room_version(room_id) is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        acl = await self._history.get_current_state_event(room_id, SERVER_ACL_TYPE, "")
        if not is_server_allowed_by_acl(origin, acl.content if acl is not None else None):
            raise MatrixError(403, Codes.FORBIDDEN, "Server is banned from this room")
        if not await self._history.is_server_in_room(origin, room_id):
            raise MatrixError(403, Codes.FORBIDDEN, "Host not in room")

    async def _event_in_room(self, room_id: str, event_id: str) -> Event:
        event = (await self._history.get_events([event_id])).get(event_id)
        if event is None or event.room_id != room_id:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        return event

    async def _visible_copies(self, origin: str, events: Sequence[Event]) -> list[JsonDict]:
        out: list[JsonDict] = []
        for event in events:
            if await self._history.server_can_see_event(origin, event.event_id):
                out.append(_pdu_json(event))
            else:
                out.append(redact(_pdu_json(event), event.room_version))
        return out

    def _envelope(self, pdus: list[JsonDict]) -> JsonDict:
        return {"origin": self._local.name, "origin_server_ts": self._now(), "pdus": pdus}

    # ------------------------------------------------------------------ routes

    async def on_get_event(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/event/{eventId}"""
        origin = self._origin(request)
        event_id = request.path_args.get("eventId", "")
        event = (await self._history.get_events([event_id])).get(event_id)
        if event is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        acl = await self._history.get_current_state_event(event.room_id, SERVER_ACL_TYPE, "")
        if not is_server_allowed_by_acl(origin, acl.content if acl is not None else None):
            raise MatrixError(403, Codes.FORBIDDEN, "Server is banned from this room")
        if not await self._history.server_can_see_event(origin, event_id):
            raise MatrixError(403, Codes.FORBIDDEN, "Host not in room")
        return 200, self._envelope([_pdu_json(event)])

    async def _state_ids(self, request: FederationRequest) -> tuple[list[str], list[str]]:
        origin = self._origin(request)
        room_id = request.path_args.get("roomId", "")
        event_id = _one(request.query, "event_id")
        await self._require_in_room(origin, room_id)
        state = await self._history.get_state_ids_before(room_id, event_id)
        if state is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found or no state at it")
        return state, await self._history.get_auth_chain_ids(state, MAX_AUTH_CHAIN)

    async def on_get_state_ids(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/state_ids/{roomId}?event_id="""
        state, chain = await self._state_ids(request)
        return 200, {"pdu_ids": state, "auth_chain_ids": chain}

    async def on_get_state(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/state/{roomId}?event_id="""
        state, chain = await self._state_ids(request)
        events = await self._history.get_events([*state, *chain])
        return 200, {
            "pdus": [_pdu_json(events[e]) for e in state if e in events],
            "auth_chain": [_pdu_json(events[e]) for e in chain if e in events],
        }

    async def on_get_event_auth(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}"""
        origin = self._origin(request)
        room_id = request.path_args.get("roomId", "")
        await self._require_in_room(origin, room_id)
        event = await self._event_in_room(room_id, request.path_args.get("eventId", ""))
        chain = await self._history.get_auth_chain_ids([event.event_id], MAX_AUTH_CHAIN)
        events = await self._history.get_events(chain)
        return 200, {"auth_chain": [_pdu_json(events[e]) for e in chain if e in events]}

    async def on_backfill(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit="""
        origin = self._origin(request)
        room_id = request.path_args.get("roomId", "")
        from_ids = list(request.query.get("v", []))
        if not from_ids:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter: v")
        _id_list(from_ids, "v")
        limit = min(max(_int_param(request.query, "limit"), 0), MAX_LIMIT)
        await self._require_in_room(origin, room_id)
        events = await self._history.get_backfill(room_id, from_ids, limit)
        return 200, self._envelope(await self._visible_copies(origin, events))

    async def on_get_missing_events(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """POST /_matrix/federation/v1/get_missing_events/{roomId}"""
        origin = self._origin(request)
        room_id = request.path_args.get("roomId", "")
        body: Mapping[str, Any] = request.content if isinstance(request.content, Mapping) else {}
        earliest = _id_list(body.get("earliest_events"), "earliest_events")
        latest = _id_list(body.get("latest_events"), "latest_events")
        limit, min_depth = body.get("limit", 10), body.get("min_depth", 0)
        if not isinstance(limit, int) or isinstance(limit, bool) or not isinstance(min_depth, int) or isinstance(min_depth, bool):
            raise MatrixError(400, Codes.BAD_JSON, "limit and min_depth must be integers")
        await self._require_in_room(origin, room_id)
        found = await self._history.get_missing_events(room_id, earliest, latest, min(max(limit, 0), MAX_LIMIT))
        events = [e for e in found if e.depth >= min_depth]
        return 200, {"events": await self._visible_copies(origin, events)}

    async def on_timestamp_to_event(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir="""
        origin = self._origin(request)
        room_id = request.path_args.get("roomId", "")
        ts = _int_param(request.query, "ts")
        direction = _one(request.query, "dir")
        if direction not in ("f", "b"):
            raise MatrixError(400, Codes.INVALID_PARAM, "dir must be f or b")
        await self._require_in_room(origin, room_id)
        event = await self._history.get_event_at_timestamp(room_id, ts, direction == "f")
        if event is None or not await self._history.server_can_see_event(origin, event.event_id):
            raise MatrixError(404, Codes.NOT_FOUND, "No event found")
        return 200, {"event_id": event.event_id, "origin_server_ts": event.origin_server_ts}
