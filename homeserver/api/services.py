"""Protocols for what the core offers its adapters (``federation``, ``media``; DESIGN.md 2.3).

Adapters receive objects typed by these Protocols from the composition root and never reach into
``homeserver.rooms``, ``homeserver.events`` or the stores. Results are plain data defined here or in
:mod:`sc_proto`.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sc_proto.events.model import Event

JsonDict = dict[str, Any]


class PDUStatus(enum.Enum):
    """What became of a received PDU."""

    ACCEPTED = "accepted"
    """Authorised against the state before it and the room's current state; in the timeline."""
    SOFT_FAILED = "soft_failed"
    """Authorised against its own state but not the current state: stored, not sent to clients."""
    REJECTED = "rejected"
    """Failed the auth rules against its own auth events or state before it: stored as rejected."""
    OUTLIER = "outlier"
    """Stored without state (an auth event or an event fetched out of the graph)."""
    DUPLICATE = "duplicate"
    """Already known; nothing changed."""


@dataclass(frozen=True)
class PDUOutcome:
    """The result of :meth:`RoomEventsAPI.receive_pdu`.

    Attributes:
        event_id: the PDU's event ID.
        status: what became of it.
        reason: for rejections and soft failures, the auth rule that refused it.
        stream_ordering: its position in the ``events`` stream (None for outliers and rejections).
    """

    event_id: str
    status: PDUStatus
    reason: str | None = None
    stream_ordering: int | None = None


class RoomEventsAPI(Protocol):
    """The room input as seen by adapters: received PDUs join the same per-room queue as local events."""

    async def receive_pdu(self, origin: str, event: Event, *, outlier: bool = False) -> PDUOutcome:
        """Authorises and persists a PDU from ``origin`` in its room's turn.

        The state before the event is that after its prev events (resolved when they disagree); a
        missing prev event is fetched through the ``RemoteEventFetcher`` port or the PDU stored as an
        outlier. ``outlier=True`` stores an event without state (auth chains, fetched events).

        Raises:
            MatrixError: 404 for a room we do not know (and that is not a create event).
        """

    async def get_pdu(self, event_id: str) -> Event | None:
        """A stored event (outliers included), or None."""

    async def get_state_ids_at(self, room_id: str, event_id: str) -> list[str] | None:
        """The state event IDs after ``event_id``, or None when we hold no state for it."""


class MembershipAPI(Protocol):
    """Memberships of rooms, for adapters (federation joins, drive grants, calls)."""

    async def is_joined(self, room_id: str, user_id: str) -> bool:
        """Whether ``user_id`` is joined to ``room_id`` right now."""

    async def get_joined_servers(self, room_id: str) -> set[str]:
        """The server names of the room's joined members (destinations for its events)."""

    async def get_joined_rooms(self, user_id: str) -> list[str]:
        """The room IDs a user is joined to."""


@dataclass(frozen=True)
class OutboundPDU:
    """One of our events, as the federation sender fans it out.

    Attributes:
        stream_ordering: its position in the ``events`` stream.
        room_id: its room.
        event_id: its event ID.
        pdu: the PDU as sent over federation (no local-only ``unsigned`` data).
        destinations: the servers it is for: those with members joined in the state after the
            event, plus the server of a membership event's target (invitee, kicked, banned or
            leaving user). May include our own server; the sender drops it.
    """

    stream_ordering: int
    room_id: str
    event_id: str
    pdu: JsonDict
    destinations: frozenset[str]


@dataclass(frozen=True)
class OutboundEvents:
    """A page of :meth:`OutboundEventsAPI.get_outbound_events`.

    Attributes:
        upto: every timeline event with ``after < stream_ordering <= upto`` was examined (the next
            page starts after it); equals ``after`` when nothing new is readable yet.
        events: the locally-originated ones among them, ascending.
    """

    upto: int
    events: list[OutboundPDU]


class OutboundEventsAPI(Protocol):
    """The ``events`` stream as the federation sender reads it (DESIGN.md 2.4, last step)."""

    def current_position(self) -> int:
        """The position below which every event has been persisted (safe to read up to)."""

    async def get_outbound_events(self, after: int, limit: int) -> OutboundEvents:
        """Our own timeline events after stream position ``after`` (at most ``limit`` examined)."""

    async def get_pdus(self, stream_orderings: Sequence[int]) -> list[OutboundPDU]:
        """The given events (unknown ones left out), in the given order; for catch-up."""


class RoomDirectoryAPI(Protocol):
    """Our room directory, for the federation query servlets."""

    async def get_local_alias(self, alias: str) -> tuple[str, list[str]] | None:
        """``(room_id, servers)`` of one of our aliases (ours first), or None when unknown."""

    async def list_public_rooms(
        self,
        limit: int | None,
        since: str | None,
        search_term: str | None = None,
        room_types: tuple[str | None, ...] | None = None,
    ) -> JsonDict:
        """Our published rooms (the ``/publicRooms`` response body).

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a malformed ``since`` token.
        """


class ProfileAPI(Protocol):
    """Our users' public profiles, for the federation profile query."""

    async def get_local_profile(self, user_id: str) -> JsonDict | None:
        """The profile of one of our users, or None when unknown or deactivated."""


@dataclass(frozen=True)
class Requester:
    """An authenticated client, as adapters see it."""

    user_id: str
    device_id: str | None
    is_admin: bool = False


class AuthAPI(Protocol):
    """Client authentication and room-scoped access checks for adapters' servlets."""

    async def authenticate(self, request: Any, *, allow_guest: bool = False) -> Requester:
        """The requester of a Twisted request (access token), or 401 ``M_MISSING_TOKEN``/``M_UNKNOWN_TOKEN``."""

    async def can_see_event(self, user_id: str, event_id: str) -> bool:
        """Whether history visibility lets ``user_id`` see ``event_id``."""


class DeviceKeysAPI(Protocol):
    """Local E2EE keys, for answering other servers' queries."""

    async def query_local_keys(self, device_keys: Mapping[str, Sequence[str]]) -> JsonDict:
        """``/user/keys/query`` body for our users: ``device_keys`` and cross-signing keys."""

    async def claim_local_keys(self, one_time_keys: Mapping[str, Mapping[str, str]]) -> JsonDict:
        """``/user/keys/claim`` body for our users (claims are atomic)."""

    async def get_user_devices(self, user_id: str) -> JsonDict:
        """``/user/devices/{userId}`` body for one of our users."""


class SyncSourceRegistry(Protocol):
    """Where adapters register extra ``/sync`` sources (e.g. the drive stream)."""

    def register(self, source: Any) -> None:
        """Adds a :class:`~homeserver.sync.sources.registry.SyncSource` after the built-in ones."""

    def names(self) -> Collection[str]:
        """The token names of the registered sources."""


class RoomHistoryAPI(Protocol):
    """Reads of rooms' event graphs that the federation servlets serve to other servers (issue 13).

    Implemented by :class:`homeserver.events.federation_reads.RoomHistoryReader`. Rejected events
    are never returned; outliers are. Every read is bounded by its ``limit``.
    """

    async def get_room_version(self, room_id: str) -> str | None:
        """The room's version identifier, or None for a room we do not know."""

    async def get_current_state_event(self, room_id: str, event_type: str, state_key: str) -> Event | None:
        """The event at ``(event_type, state_key)`` in the room's current state, or None."""

    async def get_events(self, event_ids: Collection[str]) -> dict[str, Event]:
        """The known, non-rejected events among ``event_ids``."""

    async def get_state_ids_before(self, room_id: str, event_id: str) -> list[str] | None:
        """The state event IDs before ``event_id`` (what ``/state_ids`` serves), or None when we hold
        no state for it (unknown, rejected, outlier or in another room)."""

    async def get_auth_chain_ids(self, event_ids: Collection[str], limit: int) -> list[str]:
        """The auth chain of ``event_ids``: their auth events, recursively (an input appears only when it
        is itself an auth event of another)."""

    async def get_backfill(self, room_id: str, from_event_ids: Collection[str], limit: int) -> list[Event]:
        """``from_event_ids`` and the events before them (breadth-first over ``prev_events``),
        at most ``limit``, newest (highest depth) first."""

    async def get_missing_events(
        self, room_id: str, earliest: Collection[str], latest: Collection[str], limit: int
    ) -> list[Event]:
        """The ancestors of ``latest`` (excluded) not reachable past ``earliest``, at most ``limit``,
        oldest first (``/get_missing_events``)."""

    async def get_event_at_timestamp(self, room_id: str, ts: int, forwards: bool) -> Event | None:
        """The room's timeline event closest to ``ts`` (first at or after it when ``forwards``)."""

    async def is_server_in_room(self, server_name: str, room_id: str) -> bool:
        """Whether ``server_name`` has a joined member in the room's current state."""

    async def server_can_see_event(self, server_name: str, event_id: str) -> bool:
        """Whether history visibility lets ``server_name`` read ``event_id``.

        The server must have a joined member now or at the event; then ``world_readable`` and
        ``shared`` allow, ``invited`` needs an invited or joined member at the event, ``joined`` a
        joined member at the event.
        """


@dataclass(frozen=True)
class MembershipTemplate:
    """A ``make_join``/``make_leave``/``make_knock`` answer: the room version and the unsigned template."""

    room_version: str
    event: JsonDict


class RoomFederationAPI(Protocol):
    """What the federation membership dances need of the rooms core (ADR 0016)."""

    async def get_room_version(self, room_id: str) -> str | None:
        """The version of a room we hold (an out-of-band invite's room included), or None."""

    async def is_server_in_room(self, room_id: str) -> bool:
        """Whether one of our users is joined to the room (we hold its full current state)."""

    async def make_membership_template(self, room_id: str, user_id: str, membership: str) -> MembershipTemplate:
        """The template of ``user_id``'s ``membership`` event, built on the room's current state.

        For a join of a restricted room, ``join_authorised_via_users_server`` names one of our users
        who may invite, when the joiner is in one of the allowed rooms.

        Raises:
            MatrixError: 404 when we are not in the room; 403 when the rules refuse the membership;
                400 ``M_UNABLE_TO_AUTHORISE_JOIN`` when no local user can authorise a restricted join.
        """

    async def get_state_and_auth_chain(self, room_id: str, event_id: str) -> tuple[list[JsonDict], list[JsonDict]]:
        """``(state before event_id, auth chain of that state and the event)`` as PDUs.

        Raises:
            MatrixError: 404 when the event is unknown or has no state; 403 when it was rejected or
                soft-failed.
        """

    async def get_stripped_state(self, room_id: str) -> list[JsonDict]:
        """The room's current stripped state (spec "Stripped state"), for knocks and invites."""

    async def persist_join(
        self, origin: str, room_version: str, auth_chain: Sequence[Event], state: Sequence[Event], event: Event
    ) -> PDUOutcome:
        """Persists a room joined through ``origin`` (the checked ``send_join`` answer).

        Raises:
            MatrixError: 502 when the state does not authorise the join.
        """

    async def store_out_of_band_membership(self, event: Event, stripped_state: Sequence[JsonDict] | None) -> PDUOutcome:
        """Stores a local user's invite, leave or knock in a room we are not in (sync shows it with
        ``stripped_state``)."""
