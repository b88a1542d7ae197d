"""Outbound membership dances: joining, leaving and knocking on rooms of other servers, and
inviting their users (implements :class:`homeserver.api.ports.RemoteRoomMembership`).

Theory of operation (spec server-server-api.md "Joining Rooms", "Knocking upon a room",
"Inviting to a room", "Leaving Rooms"):

* **make**: ``GET /make_{join,leave,knock}/{roomId}/{userId}`` (with our room versions as ``ver``
  for joins and knocks) to each candidate server in order until one answers with a template. A 400
  ``M_INCOMPATIBLE_ROOM_VERSION`` ends the search (every resident server has the same room); other
  errors and unreachable servers move on to the next; when all fail, the most telling error is the
  client's (403 over 404 over 502).
* **fill and sign**: :func:`sc_proto.federation.requests.fill_membership_template` sets our
  timestamp, origin and content (keeping ``join_authorised_via_users_server``), then we hash and
  sign it.
* **send**: ``PUT /v2/send_join``, ``/v2/send_leave``, ``/v1/send_knock`` to the server that made
  the template. A join's answer is checked before anything is stored: every state and auth-chain
  event's format, signatures (keys valid at the event's time) and hash through the same
  :class:`~federation.event_checks.EventChecker` as ``/send``, then the auth rules on each against the
  auth chain (:func:`sc_proto.federation.join_checks.check_state_against_auth_chain`); the
  restricted-join countersigned event returned by the resident server replaces ours when it is the
  same event with every required server's valid signature. The core checks the join against the
  state and persists the room (:meth:`~homeserver.api.services.RoomFederationAPI.persist_join`); a
  leave or knock is stored as an out-of-band membership (sync shows the room in ``leave``/``knock``).
* **invite**: ``PUT /v2/invite/{roomId}/{eventId}`` to the invitee's server with the stripped
  state; the answer must be the same event carrying the invitee server's valid signature.
"""

from __future__ import annotations

import logging
import secrets
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from federation.event_checks import EventChecker
from federation.interfaces import FederationHttp, RemoteHttpError, RemoteUnreachable, VerifyKeyLookup
from homeserver.api.ports import RemoteJoinResult
from homeserver.api.services import RoomFederationAPI
from homeserver.identity import require_user_id
from sc_proto.crypto.keys import SigningKey, get_key_id
from sc_proto.errors import Codes, InvalidEventError, MatrixError, RemoteProtocolError, SignatureError
from sc_proto.events.builder import finalise_event
from sc_proto.events.model import Event
from sc_proto.federation.join_checks import check_state_against_auth_chain, joined_servers
from sc_proto.federation.requests import (
    JOIN,
    KNOCK,
    LEAVE,
    InviteRequest,
    MakeMembershipResponse,
    SendJoinResponse,
    SendKnockResponse,
    check_room_version_supported,
    fill_membership_template,
    parse_invite_response,
    ver_query,
)
from sc_proto.room_versions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion, get_room_version

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

_ERROR_RANK = {403: 3, 400: 2, 404: 1}
_T = TypeVar("_T")


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _client_error(error: Exception) -> MatrixError:
    """What the client sees of a remote server's failure (a malformed answer is 502)."""
    if isinstance(error, RemoteProtocolError):
        return MatrixError(502, Codes.UNKNOWN, f"A server in the room sent a malformed answer: {error.message}")
    if isinstance(error, MatrixError):
        return error
    if isinstance(error, RemoteHttpError) and error.status in _ERROR_RANK:
        try:
            code = Codes(error.body.get("errcode"))
        except ValueError:
            code = Codes.UNKNOWN
        message = error.body.get("error")
        extra = {"room_version": error.body["room_version"]} if code is Codes.INCOMPATIBLE_ROOM_VERSION else None
        return MatrixError(error.status, code, message if isinstance(message, str) else code.value, extra)
    return MatrixError(502, Codes.UNKNOWN, "Failed to reach a server in the room")


class FederationMembership:
    """The remote membership dances (a :class:`homeserver.api.ports.RemoteRoomMembership`).

    Args:
        server_name: our server name.
        signing_key: our signing key.
        http: the federation client.
        keys: the keyring.
        rooms: the rooms core's federation API (persisting what the dances return).
        time_msec: the clock.
        supported_versions: the room versions we can join (``ver``), default every known one.
        checker: the received-PDU checks (default: one over ``keys`` and ``time_msec``; the
            composition root passes the inbound path's).
    """

    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        http: FederationHttp,
        keys: VerifyKeyLookup,
        rooms: RoomFederationAPI,
        time_msec: Callable[[], int],
        supported_versions: Iterable[str] | None = None,
        checker: EventChecker | None = None,
    ) -> None:
        self._server_name = server_name
        self._key = signing_key
        self._key_id = get_key_id(signing_key)
        self._http = http
        self._checker = checker if checker is not None else EventChecker(keys, time_msec)
        self._rooms = rooms
        self._now = time_msec
        self._versions = list(supported_versions if supported_versions is not None else KNOWN_ROOM_VERSIONS)

    # ------------------------------------------------------------------ make + sign

    async def _make(
        self, servers: Sequence[str], kind: str, room_id: str, user_id: str, content: Mapping[str, Any]
    ) -> tuple[str, RoomVersion, Event]:
        """Asks each server for a template until one answers; returns ``(server, version, signed event)``.

        Raises:
            MatrixError: every server failed (the most telling error).
        """
        args = ver_query(self._versions) if kind in (JOIN, KNOCK) else None
        path = f"/_matrix/federation/v1/make_{kind}/{_q(room_id)}/{_q(user_id)}"
        best: MatrixError | None = None
        for server in servers:
            try:
                body = await self._http.get_json(server, path, args)
                made = MakeMembershipResponse.parse(body)
                check_room_version_supported(made.room_version, self._versions)
                rv = get_room_version(made.room_version)
                filled = fill_membership_template(
                    made.event, room_id=room_id, user_id=user_id, membership=kind, origin=self._server_name,
                    origin_server_ts=self._now(), content=content,
                )
                if rv.event_format is EventFormat.V1:
                    filled["event_id"] = f"${secrets.token_urlsafe(18)}:{self._server_name}"
                return server, rv, finalise_event(filled, rv, self._server_name, self._key_id, self._key)
            except (RemoteHttpError, RemoteUnreachable, RemoteProtocolError, MatrixError) as e:
                error = _client_error(e)
                logger.info("make_%s via %s failed: %s", kind, server, error.errcode.value, extra={"room_id": room_id})
                if error.errcode is Codes.INCOMPATIBLE_ROOM_VERSION:
                    raise error from None
                if best is None or _ERROR_RANK.get(error.http_status, 0) > _ERROR_RANK.get(best.http_status, 0):
                    best = error
        raise best or MatrixError(404, Codes.NOT_FOUND, "No server to reach the room through")

    async def _put(self, server: str, path: str, body: Mapping[str, Any], parse: Callable[[JsonDict], _T]) -> _T:
        """``PUT /_matrix/federation/{path}`` and parses the answer; failures are the client's error.

        Raises:
            MatrixError: as :func:`_client_error` (a malformed answer is 502).
        """
        try:
            return parse(await self._http.put_json(server, f"/_matrix/federation/{path}", dict(body)))
        except (RemoteHttpError, RemoteUnreachable, RemoteProtocolError) as e:
            raise _client_error(e) from None

    # ------------------------------------------------------------------ join

    async def join(self, servers: Sequence[str], room_id: str, user_id: str, content: JsonDict) -> RemoteJoinResult:
        """Joins ``user_id`` to a room of another server (see the module docstring).

        Raises:
            MatrixError: 404 unknown room, 403 refused, 400 incompatible version, 502 unreachable
                or an answer that does not check out.
        """
        body: dict[str, Any] = {k: v for k, v in content.items() if k != "membership"}
        server, rv, event = await self._make(servers, JOIN, room_id, user_id, body)
        answer = await self._put(server, f"v2/send_join/{_q(room_id)}/{_q(event.event_id)}", event.pdu,
                                 SendJoinResponse.parse)
        event = await self._countersigned(event, answer.event)
        checked = check_state_against_auth_chain(
            rv, room_id,
            await self._checker.check_many(answer.state, rv), await self._checker.check_many(answer.auth_chain, rv),
        )
        if checked.dropped:
            logger.info("%d events of the send_join answer failed the auth rules", len(checked.dropped),
                        extra={"room_id": room_id})
        state, auth_chain = checked.state, checked.auth_chain
        # The core checks our join against this state (502 when it does not allow it).
        await self._rooms.persist_join(server, rv.identifier, auth_chain, state, event)
        servers_in_room = joined_servers(state)
        return RemoteJoinResult(
            rv.identifier, dict(event.pdu), [dict(e.pdu) for e in state], [dict(e.pdu) for e in auth_chain],
            servers_in_room,
        )

    async def _countersigned(self, ours: Event, returned: JsonDict | None) -> Event:
        """Our join, or the resident server's countersigned copy of it (restricted rooms)."""
        if returned is None:
            return ours
        return await self._signed_copy(ours, returned, None, "The resident server", "join")

    async def _signed_copy(self, ours: Event, returned: object, servers: Sequence[str] | None, who: str, what: str) -> Event:
        """A remote server's signed copy of our event: the same event, with valid signatures of
        ``servers`` (default: every server that must sign it).

        Raises:
            MatrixError: 502 when it is malformed, another event, or not validly signed.
        """
        try:
            event = self._checker.parse(returned, ours.room_version)
        except InvalidEventError:
            raise MatrixError(502, Codes.UNKNOWN, f"{who} returned a malformed {what} event") from None
        if event.event_id != ours.event_id:
            raise MatrixError(502, Codes.UNKNOWN, f"{who} returned a different {what} event")
        try:
            await self._checker.verify(event, servers)
        except (SignatureError, InvalidEventError):
            raise MatrixError(502, Codes.UNKNOWN, f"{who} did not validly sign the {what} event") from None
        return event

    # ------------------------------------------------------------------ leave, knock

    async def leave(self, servers: Sequence[str], room_id: str, user_id: str) -> JsonDict:
        """Leaves, or declines an invite to, a room we are not in; the leave is stored out of band.

        Raises:
            MatrixError: as :meth:`join`.
        """
        server, _rv, event = await self._make(servers, LEAVE, room_id, user_id, {})
        await self._put(server, f"v2/send_leave/{_q(room_id)}/{_q(event.event_id)}", event.pdu, dict)
        await self._rooms.store_out_of_band_membership(event, None)
        return dict(event.pdu)

    async def knock(self, servers: Sequence[str], room_id: str, user_id: str, content: JsonDict) -> JsonDict:
        """Knocks on a room of another server; the knock is stored out of band with the room's
        stripped state (``knock_room_state``).

        Raises:
            MatrixError: as :meth:`join`.
        """
        body: dict[str, Any] = {k: v for k, v in content.items() if k != "membership"}
        server, _rv, event = await self._make(servers, KNOCK, room_id, user_id, body)
        answer = await self._put(server, f"v1/send_knock/{_q(room_id)}/{_q(event.event_id)}", event.pdu,
                                 SendKnockResponse.parse)
        await self._rooms.store_out_of_band_membership(event, answer.knock_room_state)
        return dict(event.pdu)

    # ------------------------------------------------------------------ invite

    async def invite(self, room_version: str, event: JsonDict, invite_room_state: Sequence[JsonDict]) -> JsonDict:
        """Sends our invite of a remote user to their server; returns the event they countersigned.

        Raises:
            MatrixError: 400/403 as the invitee's server answered; 502 unreachable, or an answer
                without their valid signature.
        """
        rv = get_room_version(room_version)
        ours = self._checker.parse(event, rv)
        invitee_server = require_user_id(ours.state_key, "state_key").domain
        request = InviteRequest(room_version, dict(ours.pdu), list(invite_room_state))
        returned = await self._put(
            invitee_server, f"v2/invite/{_q(ours.room_id)}/{_q(ours.event_id)}", request.to_json(),
            parse_invite_response,
        )
        signed = await self._signed_copy(ours, returned, [invitee_server], "The invitee's server", "invite")
        return dict(signed.pdu)
