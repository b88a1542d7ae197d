"""Outbound queries: other servers' aliases, profiles and room directories (spec "Querying for information").

Implements :class:`~homeserver.api.ports.RemoteDirectoryQuerier` and
:class:`~homeserver.api.ports.RemoteProfileQuerier` over :class:`~federation.interfaces.FederationHttp`,
and :class:`RemoteRoomDirectoryQuerier` for other servers' ``/publicRooms``.

Answers are peer input: each is checked and cut down to what the spec defines before the core
sees it (a malformed room ID or a non-list ``servers`` is "the remote server failed", 502; invalid
server names in ``servers`` are dropped). Errors map to what the client should see: the peer's 404
is 404 ``M_NOT_FOUND``, its 403 is 403 ``M_FORBIDDEN``, anything else (no answer, 5xx, garbage)
is 502 ``M_UNKNOWN``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from federation.interfaces import FederationHttp, RemoteHttpError, RemoteUnreachable
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import RoomAlias, RoomID, ServerName, UserID

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

DIRECTORY_PATH = "/_matrix/federation/v1/query/directory"
PROFILE_PATH = "/_matrix/federation/v1/query/profile"
PUBLIC_ROOMS_PATH = "/_matrix/federation/v1/publicRooms"
MAX_SERVERS = 100
"""Servers kept from a directory answer (a join tries them in turn; more is noise)."""
MAX_PROFILE_VALUE = 1024
"""Longest profile string value accepted from a peer (the client API caps display names lower)."""
MAX_PUBLIC_ROOMS = 500


def _remote_failure(destination: str, what: str) -> MatrixError:
    logger.info("%s query failed", what, extra={"destination": destination})
    return MatrixError(502, Codes.UNKNOWN, f"The remote server {destination} did not answer the {what} query")


async def _get(http: FederationHttp, destination: str, path: str, args: Mapping[str, Sequence[str]], what: str) -> JsonDict:
    """GET a query; maps the peer's failures to client errors (404/403 kept, the rest 502)."""
    try:
        answer = await http.get_json(destination, path, args)
    except RemoteHttpError as e:
        if e.status == 404:
            raise MatrixError(404, Codes.NOT_FOUND, f"Not found on {destination}") from None
        if e.status == 403:
            raise MatrixError(403, Codes.FORBIDDEN, f"{destination} refused the {what} query") from None
        raise _remote_failure(destination, what) from None
    except RemoteUnreachable:
        raise _remote_failure(destination, what) from None
    if not isinstance(answer, dict):
        raise _remote_failure(destination, what)
    return answer


class RemoteDirectoryQueries:
    """Resolves other servers' room aliases (``GET /query/directory``).

    Args:
        http: signed federation requests.
    """

    def __init__(self, http: FederationHttp) -> None:
        self._http = http

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        """``(room_id, servers)`` for another server's alias, asked of that server.

        Raises:
            MatrixError: 400 for a malformed alias, 404 when the server does not know it, 502 when
                it fails or answers garbage.
        """
        try:
            parsed = RoomAlias.parse(alias)
        except InvalidIdentifierError:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid room alias") from None
        destination = parsed.domain
        answer = await _get(self._http, destination, DIRECTORY_PATH, {"room_alias": [str(parsed)]}, "directory")
        room_id, servers = answer.get("room_id"), answer.get("servers")
        if not isinstance(room_id, str) or not isinstance(servers, list):
            raise _remote_failure(destination, "directory")
        try:
            RoomID.parse(room_id)
        except InvalidIdentifierError:
            raise _remote_failure(destination, "directory") from None
        kept: list[str] = []
        for server in servers:
            if isinstance(server, str) and server not in kept and _is_server_name(server):
                kept.append(server)
            if len(kept) >= MAX_SERVERS:
                break
        if not kept:
            kept = [destination]  # it knows the alias; it is the best guess for a join
        return room_id, kept


def _is_server_name(value: str) -> bool:
    try:
        ServerName.parse(value)
    except InvalidIdentifierError:
        return False
    return True


def _profile_value(key: str, value: object) -> object | None:
    """A peer's profile value if it is well-formed (None: drop it)."""
    if key == "avatar_url":
        return value if isinstance(value, str) and value.startswith("mxc://") and len(value) <= MAX_PROFILE_VALUE else None
    if isinstance(value, str):
        return value if len(value) <= MAX_PROFILE_VALUE else None
    if key == "displayname" or key == "m.tz":
        return None
    return value if isinstance(value, (bool, int, float, list, dict)) else None


class RemoteProfileQueries:
    """Profiles of other servers' users (``GET /query/profile``).

    Args:
        http: signed federation requests.
    """

    def __init__(self, http: FederationHttp) -> None:
        self._http = http

    async def get_profile(self, user_id: str, field: str | None = None) -> JsonDict:
        """The user's profile (only ``field`` when given), asked of the user's server.

        Raises:
            MatrixError: 400 malformed user ID, 404 unknown user or unset field, 403 when the
                server refuses profile lookups, 502 when it fails.
        """
        try:
            parsed = UserID.parse(user_id, historical=True)
        except InvalidIdentifierError:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid user ID") from None
        args: dict[str, list[str]] = {"user_id": [str(parsed)]}
        if field is not None:
            args["field"] = [field]
        answer = await _get(self._http, parsed.domain, PROFILE_PATH, args, "profile")
        wanted = [field] if field is not None else list(answer)
        profile: JsonDict = {}
        for key in wanted:
            if isinstance(key, str) and key in answer:
                value = _profile_value(key, answer[key])
                if value is not None:
                    profile[key] = value
        return profile


class RemoteRoomDirectoryQuerier:
    """Other servers' published room directories (``GET/POST /publicRooms``).

    Args:
        http: signed federation requests.
    """

    def __init__(self, http: FederationHttp) -> None:
        self._http = http

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
        """The server's ``/publicRooms`` answer, checked (malformed entries dropped).

        A filter (search term or room types) needs the POST form; otherwise GET.

        Raises:
            MatrixError: 404/403 as the server answered, 502 when it fails or answers garbage.
        """
        try:
            if search_term is not None or room_types is not None:
                search_filter: JsonDict = {}
                if search_term is not None:
                    search_filter["generic_search_term"] = search_term
                if room_types is not None:
                    search_filter["room_types"] = list(room_types)
                body: JsonDict = {"filter": search_filter, "include_all_networks": include_all_networks}
                if limit is not None:
                    body["limit"] = limit
                if since is not None:
                    body["since"] = since
                if third_party_instance_id is not None:
                    body["third_party_instance_id"] = third_party_instance_id
                answer = await self._http.post_json(server, PUBLIC_ROOMS_PATH, body)
            else:
                args: dict[str, list[str]] = {"include_all_networks": ["true" if include_all_networks else "false"]}
                if limit is not None:
                    args["limit"] = [str(limit)]
                if since is not None:
                    args["since"] = [since]
                if third_party_instance_id is not None:
                    args["third_party_instance_id"] = [third_party_instance_id]
                answer = await self._http.get_json(server, PUBLIC_ROOMS_PATH, args)
        except RemoteHttpError as e:
            if e.status in (403, 404):
                raise MatrixError(e.status, Codes.FORBIDDEN if e.status == 403 else Codes.NOT_FOUND,
                                  f"{server} refused the room directory query") from None
            raise _remote_failure(server, "publicRooms") from None
        except RemoteUnreachable:
            raise _remote_failure(server, "publicRooms") from None
        return _checked_public_rooms(server, answer)


def _checked_public_rooms(server: str, answer: object) -> JsonDict:
    if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
        raise _remote_failure(server, "publicRooms")
    chunk: list[JsonDict] = []
    for entry in answer["chunk"][:MAX_PUBLIC_ROOMS]:
        if not isinstance(entry, dict) or not isinstance(entry.get("room_id"), str):
            continue
        if not isinstance(entry.get("num_joined_members"), int) or isinstance(entry.get("num_joined_members"), bool):
            continue
        try:
            RoomID.parse(entry["room_id"])
        except InvalidIdentifierError:
            continue
        chunk.append(entry)
    result: JsonDict = {"chunk": chunk}
    for key in ("next_batch", "prev_batch"):
        if isinstance(answer.get(key), str):
            result[key] = answer[key]
    total = answer.get("total_room_count_estimate")
    if isinstance(total, int) and not isinstance(total, bool):
        result["total_room_count_estimate"] = total
    return result
