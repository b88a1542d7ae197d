"""Local-only implementations of the outward ports (a server without federation).

Each refuses remote work with the error clients got before federation existed, so the behaviour of
a federation-less server is unchanged; ``federation/`` replaces them in the composition root.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

from homeserver.api.ports import JsonDict, RemoteJoinResult, RemoteMedia, RemotePorts
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)


class LocalOnlySender:
    """Nothing leaves the server: there are no other servers in our rooms."""

    def notify_new_events(self, position: int) -> None:
        """Nothing to fan out."""

    async def send_edu(self, destinations: Collection[str], edu_type: str, content: JsonDict) -> None:
        if destinations:
            # Never reached through the API: remote users cannot join our rooms without federation.
            logger.info("federation is disabled: %s EDU for %d server(s) dropped", edu_type, len(destinations))


class LocalOnlyEventFetcher:
    """No other server to fetch from."""

    async def get_event(self, destination: str, event_id: str) -> JsonDict | None:
        return None

    async def get_missing_events(
        self, destination: str, room_id: str, earliest: Sequence[str], latest: Sequence[str], limit: int
    ) -> list[JsonDict]:
        return []

    async def get_state_ids(self, destination: str, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        raise MatrixError(502, Codes.UNKNOWN, "Federation is not enabled on this server")

    async def backfill(self, destination: str, room_id: str, from_event_ids: Sequence[str], limit: int) -> list[JsonDict]:
        return []

    async def get_event_auth(self, destination: str, room_id: str, event_id: str) -> list[JsonDict]:
        return []


class LocalOnlyMembership:
    """Remote membership dances are refused (as before federation)."""

    async def join(self, servers: Sequence[str], room_id: str, user_id: str, content: JsonDict) -> RemoteJoinResult:
        raise MatrixError(404, Codes.NOT_FOUND, "No known room with that ID or alias")

    async def invite(self, room_version: str, event: JsonDict, invite_room_state: Sequence[JsonDict]) -> JsonDict:
        # NOTSPEC: inviting users of other servers needs federation, which is disabled here.
        raise MatrixError(400, Codes.UNKNOWN, "Inviting users of other servers is not supported yet")

    async def leave(self, servers: Sequence[str], room_id: str, user_id: str) -> JsonDict:
        raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")

    async def knock(self, servers: Sequence[str], room_id: str, user_id: str, content: JsonDict) -> JsonDict:
        raise MatrixError(404, Codes.NOT_FOUND, "No known room with that ID or alias")


FEDERATION_UNAVAILABLE = "Federation is not available yet"
"""The message of a remote key request without federation (``failures``: ``{"status": 503, ...}``)."""


class LocalOnlyKeyQuerier:
    """Keys of remote users cannot be queried: their servers are reported as failures (503)."""

    async def query_keys(self, destination: str, device_keys: Mapping[str, Sequence[str]], timeout_ms: int) -> JsonDict:
        raise MatrixError(503, Codes.UNKNOWN, FEDERATION_UNAVAILABLE)

    async def claim_keys(
        self, destination: str, one_time_keys: Mapping[str, Mapping[str, str]], timeout_ms: int
    ) -> JsonDict:
        raise MatrixError(503, Codes.UNKNOWN, FEDERATION_UNAVAILABLE)

    async def get_user_devices(self, destination: str, user_id: str) -> JsonDict:
        raise MatrixError(502, Codes.UNKNOWN, "Federation is not enabled on this server")


class LocalOnlyMediaFetcher:
    """Remote media is not found (as before federation)."""

    async def fetch(self, server_name: str, media_id: str, max_bytes: int, timeout_ms: int) -> RemoteMedia:
        raise MatrixError(404, Codes.NOT_FOUND, "Media not found")


class LocalOnlyProfileQuerier:
    async def get_profile(self, user_id: str, field: str | None = None) -> JsonDict:
        raise MatrixError(404, Codes.NOT_FOUND, "Profile not found")


class LocalOnlyDirectoryQuerier:
    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        # NOTSPEC: resolving other servers' aliases needs the federation directory query.
        raise MatrixError(404, Codes.NOT_FOUND, "Room alias not found")


class LocalOnlyRoomDirectory:
    """Other servers' room directories cannot be listed (as before federation)."""

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
        # NOTSPEC: other servers' directories need federation, which is disabled here.
        raise MatrixError(400, Codes.INVALID_PARAM, "Listing other servers' rooms is not supported")


def local_only_ports() -> RemotePorts:
    """The ports of a server without federation."""
    return RemotePorts(
        sender=LocalOnlySender(),
        events=LocalOnlyEventFetcher(),
        membership=LocalOnlyMembership(),
        keys=LocalOnlyKeyQuerier(),
        media=LocalOnlyMediaFetcher(),
        profiles=LocalOnlyProfileQuerier(),
        directory=LocalOnlyDirectoryQuerier(),
        public_rooms=LocalOnlyRoomDirectory(),
    )
