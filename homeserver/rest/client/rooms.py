"""Room endpoints: creation, sending, state, membership, redaction, member lists.

* ``POST /_matrix/client/v3/createRoom``
* ``PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}``
* ``GET/PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}``, ``GET .../state``
* ``POST /_matrix/client/v3/rooms/{roomId}/{join,invite,leave,kick,ban,unban,forget}``,
  ``POST /_matrix/client/v3/join/{roomIdOrAlias}``, ``POST /_matrix/client/v3/knock/{roomIdOrAlias}``
* ``PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}``
* ``GET /_matrix/client/v3/joined_rooms``, ``GET .../rooms/{roomId}/joined_members``
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from homeserver.events.persister import TxnKey
from homeserver.http.auth import Authenticator, Requester
from homeserver.http.params import parse_room_id, parse_user_id
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import optional_str, parse_json_object_from_request, parse_strings, require_str
from homeserver.rest.client.login import client_paths
from homeserver.rooms.creation import RoomCreationService
from homeserver.rooms.membership import INVITE, LEAVE, MembershipService
from homeserver.rooms.messages import EventCreator
from homeserver.storage.stores.rooms import RoomStore
from sc_proto.errors import Codes, MatrixError
from sc_proto.events.validation import MAX_PDU_BYTES
from sc_proto.json import encode_canonical_json

# Events are at most 64 KiB; the request body of a send is bounded a little above that.
SEND_BODY_LIMIT = MAX_PDU_BYTES + 1024


def content_for_event(body: dict[str, Any]) -> dict[str, Any]:
    """Checks event content can be hashed and signed (no floats, integers within range)."""
    try:
        encode_canonical_json(body)
    except MatrixError as e:
        raise MatrixError(400, Codes.BAD_JSON, f"Event content is not valid canonical JSON: {e.message}") from None
    return body


def _via_servers(request: Request) -> list[str]:
    """The servers to join or knock through: ``via`` (spec v1.12) then the deprecated ``server_name``."""
    return [*parse_strings(request, "via"), *parse_strings(request, "server_name")]


class RoomServlets:
    """Registers the room endpoints."""

    def __init__(
        self,
        server_name: str,
        authenticator: Authenticator,
        ratelimiter: RateLimiter,
        creator: EventCreator,
        creation: RoomCreationService,
        membership: MembershipService,
        rooms: RoomStore,
        time_msec: Callable[[], int],
    ) -> None:
        self._server_name = server_name
        self._auth = authenticator
        self._ratelimiter = ratelimiter
        self._creator = creator
        self._creation = creation
        self._membership = membership
        self._rooms = rooms
        self._now = time_msec
        # Extra content checks for state events sent by clients, by event type: ``check(room_id,
        # content)`` raises to refuse (e.g. m.room.canonical_alias aliases must point at the room).
        self.state_content_checks: dict[str, Callable[[str, dict[str, Any]], Awaitable[None]]] = {}

    def register(self, resource: JsonResource) -> None:
        r = resource
        r.register("POST", client_paths("/createRoom"), self.on_create_room)
        r.register("PUT", client_paths("/rooms/{roomId}/send/{eventType}/{txnId}"), self.on_send, max_body_size=SEND_BODY_LIMIT)
        r.register("PUT", client_paths("/rooms/{roomId}/state/{eventType}/{stateKey:.*}"), self.on_put_state,
                   max_body_size=SEND_BODY_LIMIT)
        r.register("PUT", client_paths("/rooms/{roomId}/state/{eventType}"), self.on_put_state, max_body_size=SEND_BODY_LIMIT)
        r.register("PUT", client_paths("/rooms/{roomId}/redact/{eventId}/{txnId}"), self.on_redact)
        for action in ("invite", "leave", "kick", "ban", "unban", "forget"):
            r.register("POST", client_paths(f"/rooms/{{roomId}}/{action}"), self._membership_handler(action))
        r.register("POST", client_paths("/rooms/{roomId}/join"), self.on_join_room_id)
        r.register("POST", client_paths("/join/{roomIdOrAlias}"), self.on_join)
        r.register("POST", client_paths("/knock/{roomIdOrAlias}"), self.on_knock)
        r.register("GET", client_paths("/joined_rooms"), self.on_joined_rooms)
        r.register("GET", client_paths("/rooms/{roomId}/joined_members"), self.on_joined_members)

    def _rate_limit_message(self, requester: Requester) -> None:
        self._ratelimiter.check_user("message.user", requester.user_id, requester.is_admin)

    def _rate_limit_join(self, requester: Requester) -> None:
        self._ratelimiter.check_user("join.user", requester.user_id, requester.is_admin)

    async def on_create_room(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/createRoom"""
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request)
        self._rate_limit_join(requester)
        room_id, alias = await self._creation.create_room(requester.user_id, body)
        response: JsonDict = {"room_id": room_id}
        if alias is not None:
            response["room_alias"] = alias
        return 200, response

    async def on_send(self, request: Request, room_id: str, event_type: str, txn_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        body = content_for_event(parse_json_object_from_request(request))
        self._rate_limit_message(requester)
        txn = TxnKey(requester.user_id, requester.device_id or "", room_id, txn_id)
        stored = await self._creator.send(room_id, requester.user_id, event_type, body, txn=txn)
        return 200, {"event_id": stored.event_id}

    async def on_put_state(
        self, request: Request, room_id: str, event_type: str, state_key: str = ""
    ) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        body = content_for_event(parse_json_object_from_request(request))
        if event_type == "m.room.member":
            raise MatrixError(400, Codes.BAD_JSON, "Use the membership endpoints to change memberships")
        content_check = self.state_content_checks.get(event_type)
        if content_check is not None:
            await content_check(room_id, body)
        self._rate_limit_message(requester)
        stored = await self._creator.send(room_id, requester.user_id, event_type, body, state_key=state_key)
        return 200, {"event_id": stored.event_id}

    async def on_redact(self, request: Request, room_id: str, event_id: str, txn_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}"""
        requester = await self._auth.get_requester(request)
        parse_room_id(room_id)
        body = parse_json_object_from_request(request, allow_empty=True)
        content: dict[str, Any] = {}
        reason = optional_str(body, "reason")
        if reason is not None:
            content["reason"] = reason
        self._rate_limit_message(requester)
        txn = TxnKey(requester.user_id, requester.device_id or "", room_id, f"redact:{txn_id}")
        stored = await self._creator.send(
            room_id, requester.user_id, "m.room.redaction", content, txn=txn, redacts=event_id
        )
        return 200, {"event_id": stored.event_id}

    def _membership_handler(self, action: str) -> Any:
        async def handler(request: Request, room_id: str) -> tuple[int, JsonDict]:
            requester = await self._auth.get_requester(request)
            parse_room_id(room_id)
            body = parse_json_object_from_request(request, allow_empty=True)
            reason = optional_str(body, "reason")
            user = requester.user_id
            if action == "forget":
                await self._membership.forget(user, room_id)
                return 200, {}
            if action == "leave":
                await self._membership.update_membership(user, room_id, user, LEAVE, reason=reason)
                return 200, {}
            target = str(parse_user_id(require_str(body, "user_id")))
            self._rate_limit_join(requester)
            if action == "invite":
                await self._membership.update_membership(user, room_id, target, INVITE, reason=reason)
            elif action == "kick":
                await self._membership.kick(user, room_id, target, reason)
            elif action == "ban":
                await self._membership.ban(user, room_id, target, reason)
            else:  # unban
                await self._membership.unban(user, room_id, target, reason)
            return 200, {}

        handler.__doc__ = f"POST /_matrix/client/v3/rooms/{{roomId}}/{action}"
        return handler

    async def on_join_room_id(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/rooms/{roomId}/join"""
        return await self._join(request, parse_room_id(room_id))

    async def on_join(self, request: Request, room_id_or_alias: str) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/join/{roomIdOrAlias}"""
        return await self._join(request, room_id_or_alias)

    async def _join(self, request: Request, target: str) -> tuple[int, JsonDict]:
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request, allow_empty=True)
        reason = optional_str(body, "reason")
        servers = _via_servers(request)
        self._rate_limit_join(requester)
        room_id = await self._membership.join_room(requester.user_id, target, servers=servers, reason=reason)
        return 200, {"room_id": room_id}

    async def on_knock(self, request: Request, room_id_or_alias: str) -> tuple[int, JsonDict]:
        """POST /_matrix/client/v3/knock/{roomIdOrAlias}"""
        requester = await self._auth.get_requester(request)
        body = parse_json_object_from_request(request, allow_empty=True)
        reason = optional_str(body, "reason")
        servers = _via_servers(request)
        self._rate_limit_join(requester)
        room_id = await self._membership.knock_room(
            requester.user_id, room_id_or_alias, servers=servers, reason=reason
        )
        return 200, {"room_id": room_id}

    async def on_joined_rooms(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/joined_rooms"""
        requester = await self._auth.get_requester(request)
        nids = await self._rooms.get_rooms_for_user(requester.user_id)
        rooms = await self._rooms.get_rooms_by_nid(list(nids))
        return 200, {"joined_rooms": sorted(r.room_id for r in rooms.values())}

    async def on_joined_members(self, request: Request, room_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/rooms/{roomId}/joined_members"""
        requester = await self._auth.get_requester(request)
        members = await self._membership.get_joined_members(requester.user_id, parse_room_id(room_id))
        joined: JsonDict = {}
        for user_id, event in members.items():
            # The spec types both as strings: an unset (or non-string) profile field is omitted,
            # never null (found by the API fuzzer, issue 12).
            profile = {"display_name": event.content.get("displayname"), "avatar_url": event.content.get("avatar_url")}
            joined[user_id] = {k: v for k, v in profile.items() if isinstance(v, str)}
        return 200, {"joined": joined}
