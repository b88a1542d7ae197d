"""Inbound membership servlets: make/send join, leave and knock, and invites for our users.

Theory of operation (spec server-server-api.md "Joining Rooms", "Knocking upon a room",
"Inviting to a room", "Leaving Rooms"). Every route is authenticated by the transport (the
``origin`` is the verified ``X-Matrix`` origin), and a server may only act for its own users: a
``make_*`` for a user of another server, or a ``send_*``/invite whose sender is not of the origin,
is 403 ``M_FORBIDDEN`` (so nobody can make claims about our users).

* ``make_join``/``make_knock`` check that the joiner supports the room's version (``ver``; 400
  ``M_INCOMPATIBLE_ROOM_VERSION``) and answer a template the room's rules allow (403 otherwise;
  a restricted join names one of our users as ``join_authorised_via_users_server``).
* ``send_join``/``send_leave``/``send_knock`` check the event is the one the path names and the
  sender's own membership event of that kind, check its format, signatures (keys valid at the
  event's time) and hash through the same :class:`~federation.event_checks.EventChecker` as
  ``/send`` (a hash mismatch is refused here, not redacted: the sender built it for us), countersign a
  restricted join we authorise, and hand it to the room input like any PDU: only an accepted (or
  already known) event is answered 200; a rejected or soft-failed one is 403 and changes nothing
  visible. ``send_join`` answers the state before the join with its auth chain (full state even
  when ``omit_members`` asks for partial state, which the spec allows).
* ``invite`` (v2) takes an invite for one of our users, checks it, signs it as our server and
  stores it: through the room input when we are in the room, else as an out-of-band membership
  with the inviter's stripped state, so the invitee sees it in ``/sync``'s ``invite`` section.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from federation.event_checks import EventChecker
from federation.interfaces import FederationRequest, FederationRouter, VerifyKeyLookup
from homeserver.api.services import PDUStatus, RoomEventsAPI, RoomFederationAPI
from homeserver.identity import LocalServer, domain_of
from sc_proto.crypto.keys import SigningKey, get_key_id
from sc_proto.crypto.signing import sign_event
from sc_proto.errors import Codes, MatrixError, SignatureError
from sc_proto.events.model import Event
from sc_proto.federation.pdu_checks import apply_content_hash, required_signers
from sc_proto.federation.requests import (
    JOIN,
    KNOCK,
    LEAVE,
    InviteRequest,
    MakeMembershipResponse,
    SendJoinResponse,
    SendKnockResponse,
    check_invite_event,
    check_membership_event,
    check_room_version_supported,
    parse_ver_query,
)
from sc_proto.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


class MembershipServlets:
    """The inbound side of the membership dances.

    Args:
        server_name: our server name.
        signing_key: our signing key (restricted-join and invite countersignatures).
        keys: the keyring.
        rooms: the rooms core's federation API.
        events: the room input (received membership events).
        time_msec: the clock (for the default checker; unused when ``checker`` is given).
        checker: the received-PDU checks (default: one over ``keys``).
    """

    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        keys: VerifyKeyLookup,
        rooms: RoomFederationAPI,
        events: RoomEventsAPI,
        time_msec: Callable[[], int] | None = None,
        checker: EventChecker | None = None,
    ) -> None:
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._key = signing_key
        self._key_id = get_key_id(signing_key)
        self._checker = checker if checker is not None else EventChecker(keys, time_msec or (lambda: 0))
        self._rooms = rooms
        self._events = events

    def register(self, router: FederationRouter) -> None:
        """Registers every route on ``router``."""
        router.register("GET", V1 + "/make_join/{roomId}/{userId}", self.on_make_join)
        router.register("PUT", V2 + "/send_join/{roomId}/{eventId}", self.on_send_join)
        router.register("GET", V1 + "/make_leave/{roomId}/{userId}", self.on_make_leave)
        router.register("PUT", V2 + "/send_leave/{roomId}/{eventId}", self.on_send_leave)
        router.register("GET", V1 + "/make_knock/{roomId}/{userId}", self.on_make_knock)
        router.register("PUT", V1 + "/send_knock/{roomId}/{eventId}", self.on_send_knock)
        router.register("PUT", V2 + "/invite/{roomId}/{eventId}", self.on_invite)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _origin(request: FederationRequest) -> str:
        if request.origin is None:
            raise MatrixError(401, Codes.UNAUTHORIZED, "Missing X-Matrix authentication")
        return request.origin

    async def _room_version(self, room_id: str) -> RoomVersion:
        version = await self._rooms.get_room_version(room_id)
        if version is None or not await self._rooms.is_server_in_room(room_id):
            raise MatrixError(404, Codes.NOT_FOUND, "This server is not in the room")
        return get_room_version(version)

    async def _make(self, request: FederationRequest, membership: str, check_versions: bool) -> tuple[int, JsonDict]:
        origin = self._origin(request)
        room_id, user_id = request.path_args["roomId"], request.path_args["userId"]
        if not user_id.startswith("@") or domain_of(user_id) != origin:
            raise MatrixError(403, Codes.FORBIDDEN, "A server may only ask for its own users")
        rv = await self._room_version(room_id)
        if check_versions:
            check_room_version_supported(rv.identifier, parse_ver_query(request.query))
        template = await self._rooms.make_membership_template(room_id, user_id, membership)
        return 200, MakeMembershipResponse(template.room_version, template.event).to_json()

    async def _receive(self, request: FederationRequest, membership: str) -> Event:
        """Checks and persists a ``send_*`` event; returns it as persisted (countersigned when we
        authorise a restricted join).

        Raises:
            MatrixError: 400 malformed or not matching the request, 403 bad signature, wrong
                sender, or refused by the rules; 404 when we are not in the room.
        """
        origin = self._origin(request)
        room_id, event_id = request.path_args["roomId"], request.path_args["eventId"]
        rv = await self._room_version(room_id)
        event = self._checker.parse(request.content, rv)
        check_membership_event(event, origin=origin, room_id=room_id, event_id=event_id, membership=membership)
        authoriser = event.content.get("join_authorised_via_users_server") if membership == JOIN else None
        ours = isinstance(authoriser, str) and self._local.is_mine(authoriser)
        await self._check(event, [s for s in required_signers(event) if not (ours and s == self._server_name)])
        if ours:
            # We authorise this restricted join: our signature is what the auth rules require.
            signed = sign_event(event.pdu, rv, self._server_name, self._key, key_id=self._key_id)
            event = Event(signed, rv, event.event_id)
        outcome = await self._events.receive_pdu(origin, event)
        if outcome.status not in (PDUStatus.ACCEPTED, PDUStatus.DUPLICATE):
            reason = outcome.reason or "the event's prev or auth events are unknown"
            raise MatrixError(403, Codes.FORBIDDEN, f"The event was not accepted: {reason}")
        return event

    async def _check(self, event: Event, servers: list[str] | None = None) -> None:
        """Hash and signature checks of a membership event sent to us (a bad hash is refused, not
        redacted: the sender built the event for us).

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` when the content hash does not match, or a signature of
                ``servers`` (default: every required one) is missing or does not verify.
        """
        if apply_content_hash(event).redacted:
            raise MatrixError(403, Codes.FORBIDDEN, "The event's content hash does not match")
        try:
            await self._checker.verify(event, servers)
        except SignatureError as e:
            raise MatrixError(403, Codes.FORBIDDEN, e.message) from None

    # ------------------------------------------------------------------ servlets

    async def on_make_join(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/make_join/{roomId}/{userId}"""
        return await self._make(request, JOIN, True)

    async def on_send_join(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}"""
        event = await self._receive(request, JOIN)
        state, auth_chain = await self._rooms.get_state_and_auth_chain(event.room_id, event.event_id)
        # ``omit_members`` (partial state) is a request the spec lets us decline: full state is sent.
        answer = SendJoinResponse(state, auth_chain, dict(event.pdu), False, None, self._server_name)
        return 200, answer.to_json()

    async def on_make_leave(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/make_leave/{roomId}/{userId}"""
        return await self._make(request, LEAVE, False)

    async def on_send_leave(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}"""
        await self._receive(request, LEAVE)
        return 200, {}

    async def on_make_knock(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """GET /_matrix/federation/v1/make_knock/{roomId}/{userId}"""
        return await self._make(request, KNOCK, True)

    async def on_send_knock(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}"""
        event = await self._receive(request, KNOCK)
        stripped = await self._rooms.get_stripped_state(event.room_id)
        return 200, SendKnockResponse(stripped).to_json()

    async def on_invite(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """PUT /_matrix/federation/v2/invite/{roomId}/{eventId}"""
        origin = self._origin(request)
        room_id, event_id = request.path_args["roomId"], request.path_args["eventId"]
        invite = InviteRequest.parse(request.content)
        check_room_version_supported(invite.room_version, KNOWN_ROOM_VERSIONS)
        rv = get_room_version(invite.room_version)
        event = self._checker.parse(invite.event, rv)
        check_invite_event(event, origin=origin, room_id=room_id, event_id=event_id)
        if not self._local.is_mine(event.state_key or ""):
            raise MatrixError(403, Codes.FORBIDDEN, "The invitee is not a user of this server")
        known = await self._rooms.get_room_version(room_id)
        if known is not None and known != rv.identifier:
            raise MatrixError(400, Codes.BAD_JSON, "The room version does not match the room")
        await self._check(event)
        signed = Event(sign_event(event.pdu, rv, self._server_name, self._key, key_id=self._key_id), rv, event_id)
        if await self._rooms.is_server_in_room(room_id):
            outcome = await self._events.receive_pdu(origin, signed)
            if outcome.status in (PDUStatus.REJECTED, PDUStatus.SOFT_FAILED):
                raise MatrixError(403, Codes.FORBIDDEN, f"The invite was not accepted: {outcome.reason}")
        else:
            await self._rooms.store_out_of_band_membership(signed, invite.invite_room_state)
        return 200, {"event": dict(signed.pdu)}


