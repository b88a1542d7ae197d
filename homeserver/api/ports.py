"""Protocols for what the core needs from outside the process (DESIGN.md 2.2 "dependency inversion").

The core never imports ``federation``: when it must reach another server it calls one of these
ports, which the composition root fills with the federation adapter or, without federation, with the
local-only implementations of :mod:`homeserver.api.local`. Arguments and results are plain strings,
JSON dicts and :mod:`sc_proto` types, so an adapter needs nothing of the core's internals.

Errors: a port raises :class:`~sc_proto.errors.MatrixError` with the status and errcode the client
should see (e.g. 502 ``M_UNKNOWN`` "remote server unreachable", 404 ``M_NOT_FOUND``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

JsonDict = dict[str, Any]


class FederationSender(Protocol):
    """Sends our events and EDUs to the other servers in a room."""

    def notify_new_events(self, position: int) -> None:
        """The ``events`` stream reached ``position``: read rows after the last one sent and fan out.

        Called after commit (never inside a transaction); must not raise or block.
        """

    async def send_edu(self, destinations: Collection[str], edu_type: str, content: JsonDict) -> None:
        """Queues an EDU for each destination (persistently where the EDU type needs it)."""


class RemoteEventFetcher(Protocol):
    """Fetches events and state the core is missing from other servers."""

    async def get_event(self, destination: str, event_id: str) -> JsonDict | None:
        """One PDU by ID (``GET /event``), or None when the server does not have it."""

    async def get_missing_events(
        self, destination: str, room_id: str, earliest: Sequence[str], latest: Sequence[str], limit: int
    ) -> list[JsonDict]:
        """PDUs between ``earliest`` and ``latest`` (``POST /get_missing_events``)."""

    async def get_state_ids(self, destination: str, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        """``(state event IDs, auth chain IDs)`` at ``event_id`` (``GET /state_ids``)."""

    async def backfill(self, destination: str, room_id: str, from_event_ids: Sequence[str], limit: int) -> list[JsonDict]:
        """Older PDUs before ``from_event_ids`` (``GET /backfill``)."""

    async def get_event_auth(self, destination: str, room_id: str, event_id: str) -> list[JsonDict]:
        """The auth chain of ``event_id`` (``GET /event_auth``): checked PDUs, bounded in number."""


@dataclass(frozen=True)
class RemoteJoinResult:
    """What a remote join returned: the signed join event and the room's state and auth chain."""

    room_version: str
    event: JsonDict
    state: list[JsonDict] = field(default_factory=list)
    auth_chain: list[JsonDict] = field(default_factory=list)
    servers_in_room: list[str] = field(default_factory=list)


class RemoteRoomMembership(Protocol):
    """The membership dances with other servers (make/send join, leave, knock; invites)."""

    async def join(self, servers: Sequence[str], room_id: str, user_id: str, content: JsonDict) -> RemoteJoinResult:
        """Joins ``user_id`` to a room on another server through one of ``servers``.

        Raises:
            MatrixError: 404 when no server knows the room, 403 when refused, 502 when unreachable.
        """

    async def invite(self, room_version: str, event: JsonDict, invite_room_state: Sequence[JsonDict]) -> JsonDict:
        """Sends an invite for a remote user to their server; returns the event as countersigned by it."""

    async def leave(self, servers: Sequence[str], room_id: str, user_id: str) -> JsonDict:
        """Leaves (or rejects an invite to) a room we are not in through one of ``servers``."""

    async def knock(self, servers: Sequence[str], room_id: str, user_id: str, content: JsonDict) -> JsonDict:
        """Knocks on a room on another server; returns the knock event."""


class RemoteKeyQuerier(Protocol):
    """E2EE key queries and claims for users of other servers."""

    async def query_keys(
        self, destination: str, device_keys: Mapping[str, Sequence[str]], timeout_ms: int
    ) -> JsonDict:
        """``POST /user/keys/query`` on ``destination``; the response body."""

    async def claim_keys(
        self, destination: str, one_time_keys: Mapping[str, Mapping[str, str]], timeout_ms: int
    ) -> JsonDict:
        """``POST /user/keys/claim`` on ``destination``; the response body."""

    async def get_user_devices(self, destination: str, user_id: str) -> JsonDict:
        """``GET /user/devices/{userId}`` (device-list resync)."""


@dataclass(frozen=True)
class RemoteMedia:
    """Media downloaded from another server."""

    content_type: str
    content: bytes
    filename: str | None = None


class RemoteMediaFetcher(Protocol):
    """Downloads media whose ``mxc://`` authority is another server."""

    async def fetch(self, server_name: str, media_id: str, max_bytes: int, timeout_ms: int) -> RemoteMedia:
        """The media's bytes (authenticated federation media).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` when unknown, 502/504 when the server fails or times out.
        """


class RemoteProfileQuerier(Protocol):
    """Profile queries for users of other servers."""

    async def get_profile(self, user_id: str, field: str | None = None) -> JsonDict:
        """``GET /query/profile``: the user's profile (or one field of it).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` when the user or field does not exist.
        """


class RemoteDirectoryQuerier(Protocol):
    """Room-alias resolution on other servers."""

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        """``GET /query/directory``: ``(room_id, servers)`` for an alias of another server.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` when the alias does not exist.
        """


class RemoteRoomDirectory(Protocol):
    """Other servers' published room directories (``/publicRooms?server=``)."""

    async def get_public_rooms(
        self,
        server: str,
        limit: int | None = None,
        since: str | None = None,
        search_term: str | None = None,
        include_all_networks: bool = False,
        third_party_instance_id: str | None = None,
        room_types: Sequence[str | None] | None = None,
    ) -> JsonDict:
        """``GET``/``POST /publicRooms`` on ``server``: its ``PublishedRoomsResponse``.

        Raises:
            MatrixError: 502 when the server fails; its 403/404 otherwise.
        """


@dataclass(frozen=True)
class RemotePorts:
    """Every outward port, as the composition root hands them to the core."""

    sender: FederationSender
    events: RemoteEventFetcher
    membership: RemoteRoomMembership
    keys: RemoteKeyQuerier
    media: RemoteMediaFetcher
    profiles: RemoteProfileQuerier
    directory: RemoteDirectoryQuerier
    public_rooms: RemoteRoomDirectory | None = None
    """Other servers' room directories (None: refused as without federation)."""
