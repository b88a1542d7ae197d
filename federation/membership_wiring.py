"""Wiring of the membership dances (called from ``homeserver/app/feature_federation.py``).

The composition root builds the ports before the core, and the dances need the core: so the port
the core receives is a :class:`LateBoundMembership` that forwards to the real
:class:`~federation.membership.FederationMembership` once :func:`wire_membership` has built it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from federation.event_checks import EventChecker
from federation.interfaces import FederationHttp, FederationRouter, VerifyKeyLookup
from federation.membership import FederationMembership
from federation.membership_servlets import MembershipServlets
from homeserver.api.ports import JsonDict, RemoteJoinResult, RemoteRoomMembership
from homeserver.api.services import RoomEventsAPI, RoomFederationAPI
from sc_proto.crypto.keys import SigningKey
from sc_proto.errors import Codes, MatrixError


class LateBoundMembership:
    """A :class:`~homeserver.api.ports.RemoteRoomMembership` that forwards to one bound later."""

    def __init__(self) -> None:
        self._target: RemoteRoomMembership | None = None

    def bind(self, target: RemoteRoomMembership) -> None:
        """Sets the implementation every call forwards to."""
        self._target = target

    def _get(self) -> RemoteRoomMembership:
        if self._target is None:
            raise MatrixError(503, Codes.UNKNOWN, "Federation is starting")
        return self._target

    async def join(self, servers: Sequence[str], room_id: str, user_id: str, content: JsonDict) -> RemoteJoinResult:
        return await self._get().join(servers, room_id, user_id, content)

    async def invite(self, room_version: str, event: JsonDict, invite_room_state: Sequence[JsonDict]) -> JsonDict:
        return await self._get().invite(room_version, event, invite_room_state)

    async def leave(self, servers: Sequence[str], room_id: str, user_id: str) -> JsonDict:
        return await self._get().leave(servers, room_id, user_id)

    async def knock(self, servers: Sequence[str], room_id: str, user_id: str, content: JsonDict) -> JsonDict:
        return await self._get().knock(servers, room_id, user_id, content)


def wire_membership(
    *,
    server_name: str,
    signing_key: SigningKey,
    http: FederationHttp,
    keys: VerifyKeyLookup,
    router: FederationRouter,
    rooms: RoomFederationAPI,
    events: RoomEventsAPI,
    time_msec: Callable[[], int],
    port: LateBoundMembership | None = None,
    supported_versions: Iterable[str] | None = None,
    checker: EventChecker | None = None,
) -> FederationMembership:
    """Builds the outbound dances, registers the inbound servlets on ``router`` and binds ``port``.

    Args:
        rooms: ``hs.api.room_federation``.
        events: ``hs.rooms.room_input``.
        port: the late-bound port the core was built with (``RemotePorts.membership``).
        checker: the received-PDU checks shared with the inbound path (one is built when None).

    Returns:
        The :class:`~homeserver.api.ports.RemoteRoomMembership` implementation.
    """
    checker = checker if checker is not None else EventChecker(keys, time_msec)
    membership = FederationMembership(
        server_name, signing_key, http, keys, rooms, time_msec, supported_versions, checker=checker
    )
    MembershipServlets(server_name, signing_key, keys, rooms, events, time_msec, checker).register(router)
    if port is not None:
        port.bind(membership)
    return membership
