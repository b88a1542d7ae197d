"""The published room directory: which rooms are listed, and the paginated, filtered listing.

Theory of operation: the listing orders published rooms by joined-member count (largest first), then
by room nid, so the order is total and stable between requests. A pagination token names the
boundary room's sort key (``n<members>_<nid>`` for the rooms after it, ``p<members>_<nid>`` for
those before it); because the key is a value, not an offset, rooms joining or leaving the
directory between pages never make a page repeat or skip an unaffected room.

Each request reads the order with one query, then describes the rooms of a page with one query for
their state event IDs plus one batched (cached) event load. With a search filter the candidates are
examined page-sized batch by batch until enough rooms match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.identity import require_room_id
from homeserver.rooms.aliases import may_send_state
from homeserver.rooms.messages import EventCreator
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.room_directory import RoomDirectoryStore
from homeserver.storage.stores.rooms import RoomStore
from sc_proto.errors import Codes, MatrixError
from sc_proto.events.redaction import redact

JsonDict = dict[str, Any]

PUBLIC = "public"
PRIVATE = "private"
VISIBILITIES = (PUBLIC, PRIVATE)

# NOTSPEC: the spec sets no upper bound on ``limit``; larger pages are cut to this size (the
# response then carries next_batch, so clients still see every room).
MAX_PAGE_SIZE = 500
_TOKEN_RE = re.compile(r"([np])(\d{1,12})_(\d{1,18})")


@dataclass(frozen=True)
class PublicRoomsQuery:
    """A ``/publicRooms`` request, parsed.

    Attributes:
        limit: the most rooms to return (None: up to :data:`MAX_PAGE_SIZE`).
        since: a pagination token from an earlier response.
        search_term: ``filter.generic_search_term`` (case-insensitive substring).
        room_types: ``filter.room_types``; ``None`` in the list stands for rooms without a type;
            ``None`` (or an empty list) means any type.
    """

    limit: int | None = None
    since: str | None = None
    search_term: str | None = None
    room_types: tuple[str | None, ...] | None = None


@dataclass(frozen=True)
class _Candidate:
    room_nid: int
    room_id: str
    joined: int

    @property
    def key(self) -> tuple[int, int]:
        return (-self.joined, self.room_nid)


def _token(prefix: str, candidate: _Candidate) -> str:
    return f"{prefix}{candidate.joined}_{candidate.room_nid}"


def parse_since_token(token: str) -> tuple[bool, tuple[int, int]]:
    """``(forwards, boundary_key)`` of a ``since`` token (400 ``M_INVALID_PARAM`` if malformed)."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        raise MatrixError(400, Codes.INVALID_PARAM, "Invalid 'since' token")
    return match.group(1) == "n", (-int(match.group(2)), int(match.group(3)))


def _str(content: Mapping[str, Any], key: str) -> str | None:
    value = content.get(key)
    return value if isinstance(value, str) and value else None


def describe_room(candidate: _Candidate, state: Mapping[str, Mapping[str, Any]]) -> JsonDict:
    """The ``PublishedRoomsChunk`` of a room from its state contents (``type -> content``)."""
    entry: JsonDict = {
        "room_id": candidate.room_id,
        "num_joined_members": candidate.joined,
        "world_readable": _str(state.get("m.room.history_visibility", {}), "history_visibility") == "world_readable",
        "guest_can_join": _str(state.get("m.room.guest_access", {}), "guest_access") == "can_join",
    }
    optional = {
        "name": _str(state.get("m.room.name", {}), "name"),
        "topic": _str(state.get("m.room.topic", {}), "topic"),
        "canonical_alias": _str(state.get("m.room.canonical_alias", {}), "alias"),
        "avatar_url": _str(state.get("m.room.avatar", {}), "url"),
        "join_rule": _str(state.get("m.room.join_rules", {}), "join_rule"),
        "room_type": _str(state.get("m.room.create", {}), "type"),
    }
    if optional["avatar_url"] is not None and not optional["avatar_url"].startswith("mxc://"):
        optional["avatar_url"] = None
    entry.update({k: v for k, v in optional.items() if v is not None})
    return entry


def matches(entry: Mapping[str, Any], state: Mapping[str, Mapping[str, Any]], query: PublicRoomsQuery) -> bool:
    """Whether a room passes the query's filter."""
    if query.room_types:
        if entry.get("room_type") not in query.room_types:
            return False
    term = (query.search_term or "").strip().casefold()
    if not term:
        return True
    alt = state.get("m.room.canonical_alias", {}).get("alt_aliases")
    haystack = [entry.get("name"), entry.get("topic"), entry.get("canonical_alias")]
    if isinstance(alt, list):
        haystack.extend(a for a in alt if isinstance(a, str))
    return any(isinstance(h, str) and term in h.casefold() for h in haystack)


class RoomDirectoryService:
    """Publishes rooms and lists the published ones.

    Args:
        server_name: our server name.
        creator: room heads (permission checks).
        rooms: room records and the ``is_public`` flag.
        events: the event store (directory state contents).
        directory: the directory's batch reads.
    """

    def __init__(
        self,
        server_name: str,
        creator: EventCreator,
        rooms: RoomStore,
        events: EventStore,
        directory: RoomDirectoryStore,
    ) -> None:
        self._server_name = server_name
        self._creator = creator
        self._rooms = rooms
        self._events = events
        self._directory = directory

    # ------------------------------------------------------------------ visibility

    async def get_visibility(self, room_id_value: object) -> str:
        """``public`` or ``private`` (404 ``M_NOT_FOUND`` for unknown rooms)."""
        room = await self._rooms.get_room(str(require_room_id(room_id_value)))
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room not found")
        return PUBLIC if room.is_public else PRIVATE

    async def set_visibility(self, user_id: str, is_admin: bool, room_id_value: object, visibility: object) -> None:
        """Publishes or unpublishes a room.

        Only server admins and joined users with the power to send ``m.room.canonical_alias`` may
        (the spec lets servers choose).

        Raises:
            MatrixError: 400 bad visibility or room ID, 404 unknown room, 403 not allowed.
        """
        room_id = str(require_room_id(room_id_value))
        if visibility not in VISIBILITIES:
            raise MatrixError(400, Codes.INVALID_PARAM, "'visibility' must be 'public' or 'private'")
        head = await self._creator.get_head(room_id)
        if head is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room not found")
        if not is_admin:
            state = await self._creator.get_state_events(head.state)
            if not may_send_state(head, state, user_id, "m.room.canonical_alias"):
                raise MatrixError(403, Codes.FORBIDDEN, "You may not change this room's directory visibility")
        await self._rooms.set_room_public(room_id, visibility == PUBLIC)

    # ------------------------------------------------------------------ listing

    async def list_public_rooms(self, query: PublicRoomsQuery) -> JsonDict:
        """The ``/publicRooms`` response for ``query``.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a malformed ``since`` token.
        """
        forwards, boundary = True, None
        if query.since is not None:
            forwards, boundary = parse_since_token(query.since)
        rows = await self._directory.get_public_rooms_by_size()
        ordered = sorted((_Candidate(*row) for row in rows), key=lambda c: c.key)
        if boundary is None:
            candidates = ordered
        elif forwards:
            candidates = [c for c in ordered if c.key > boundary]
        else:
            candidates = [c for c in reversed(ordered) if c.key < boundary]
        limit = min(query.limit or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        found = await self._collect(candidates, limit + 1, query)
        more = len(found) > limit
        page = found[:limit]
        if not forwards:
            page.reverse()
        response: JsonDict = {
            "chunk": [entry for _, entry in page],
            "total_room_count_estimate": len(ordered),
        }
        if page:
            first, last = page[0][0], page[-1][0]
            has_next = more if forwards else True
            has_prev = (boundary is not None) if forwards else more
            if has_next:
                response["next_batch"] = _token("n", last)
            if has_prev:
                response["prev_batch"] = _token("p", first)
        return response

    async def _collect(
        self, candidates: Sequence[_Candidate], wanted: int, query: PublicRoomsQuery
    ) -> list[tuple[_Candidate, JsonDict]]:
        """Describes candidates in order, batch by batch, until ``wanted`` of them match."""
        found: list[tuple[_Candidate, JsonDict]] = []
        batch_size = max(wanted, 50)
        for start in range(0, len(candidates), batch_size):
            batch = candidates[start:start + batch_size]
            states = await self._states([c.room_nid for c in batch])
            for candidate in batch:
                state = states.get(candidate.room_nid, {})
                entry = describe_room(candidate, state)
                if matches(entry, state, query):
                    found.append((candidate, entry))
                    if len(found) >= wanted:
                        return found
        return found

    async def _states(self, room_nids: list[int]) -> dict[int, dict[str, Mapping[str, Any]]]:
        ids = await self._directory.get_directory_state_ids(room_nids)
        events = await self._events.get_events(e for by_type in ids.values() for e in by_type.values())
        return {
            nid: {etype: _content(events[e]) for etype, e in by_type.items() if e in events}
            for nid, by_type in ids.items()
        }


def _content(stored: StoredEvent) -> Mapping[str, Any]:
    """The event's content as clients see it (redacted events keep only what redaction keeps)."""
    if stored.redacted_by is None:
        return stored.event.content
    content: Mapping[str, Any] = redact(stored.event.pdu, stored.event.room_version).get("content", {})
    return content
