"""The frozen event model.

An :class:`Event` wraps one PDU (the federation form of an event) together with its room version
and its event ID. It never changes once built; accessors read the PDU according to the room
version's :class:`~sc_proto.room_versions.EventFormat` (for example ``prev_events`` are bare IDs
from room v3 on and ``[id, hashes]`` pairs before; ``redacts`` moved into ``content`` in v11; in
v12 the create event has no ``room_id`` and its room ID is derived from its reference hash).

Hosts keep their own metadata (rejection, stream positions, outlier status) beside the event, not
inside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sc_proto.errors import InvalidEventError
from sc_proto.room_versions import EventFormat, RoomVersion

StateKey = tuple[str, str]
"""``(event type, state key)``: the key of an entry in a room's state."""


def _ids_from_refs(refs: Any, event_format: EventFormat, field: str) -> tuple[str, ...]:
    if not isinstance(refs, list):
        raise InvalidEventError(f"'{field}' must be a list")
    out: list[str] = []
    for ref in refs:
        if event_format is EventFormat.V1:
            if not (isinstance(ref, list) and len(ref) >= 1 and isinstance(ref[0], str)):
                raise InvalidEventError(f"'{field}' entries must be [event_id, hashes] pairs")
            out.append(ref[0])
        else:
            if not isinstance(ref, str):
                raise InvalidEventError(f"'{field}' entries must be event ID strings")
            out.append(ref)
    return tuple(out)


class Event:
    """One immutable room event (PDU) of a known room version.

    Build with :meth:`from_pdu` (which validates and computes the event ID) or, when the ID is
    already trusted (loaded from one's own database), with the constructor.

    Attributes:
        room_version: the event's room version.
        event_id: the event ID (``$...``).
        pdu: the PDU as a read-only mapping. Do not mutate.
    """

    __slots__ = (
        "_auth_event_ids",
        "_prev_event_ids",
        "_room_id",
        "event_id",
        "pdu",
        "room_version",
    )

    def __init__(self, pdu: Mapping[str, Any], room_version: RoomVersion, event_id: str) -> None:
        self.pdu = pdu
        self.room_version = room_version
        self.event_id = event_id
        fmt = room_version.event_format
        self._prev_event_ids = _ids_from_refs(pdu.get("prev_events", []), fmt, "prev_events")
        self._auth_event_ids = _ids_from_refs(pdu.get("auth_events", []), fmt, "auth_events")
        room_id = pdu.get("room_id")
        if room_id is None and room_version.room_id_from_create_event and pdu.get("type") == "m.room.create":
            room_id = "!" + event_id[1:]
        if not isinstance(room_id, str):
            raise InvalidEventError("'room_id' must be a string")
        self._room_id = room_id

    @classmethod
    def from_pdu(cls, pdu: Mapping[str, Any], room_version: RoomVersion) -> Event:
        """Validates a PDU's shape and builds the event, computing its ID.

        For room versions 1 and 2 the ID is the PDU's ``event_id`` field; from v3 on it is the
        reference hash.

        Raises:
            InvalidEventError: the PDU is malformed or too large.
        """
        from sc_proto.events.hashes import compute_event_id
        from sc_proto.events.validation import validate_pdu

        validate_pdu(pdu, room_version)
        if room_version.event_format is EventFormat.V1:
            event_id = pdu.get("event_id")
            if not isinstance(event_id, str):
                raise InvalidEventError("'event_id' is required in this room version")
        else:
            event_id = compute_event_id(pdu, room_version)
        return cls(pdu, room_version, event_id)

    # --- common fields -------------------------------------------------------------------------

    @property
    def type(self) -> str:
        """The event type, e.g. ``m.room.message``."""
        return str(self.pdu["type"])

    @property
    def state_key(self) -> str | None:
        """The state key, or ``None`` for a message (non-state) event."""
        sk = self.pdu.get("state_key")
        return sk if isinstance(sk, str) else None

    def is_state(self) -> bool:
        """Whether the event is a state event (it has a ``state_key``)."""
        return self.state_key is not None

    @property
    def state_tuple(self) -> StateKey:
        """``(type, state_key)`` of a state event.

        Raises:
            InvalidEventError: the event is not a state event.
        """
        sk = self.state_key
        if sk is None:
            raise InvalidEventError(f"{self.event_id} is not a state event")
        return (self.type, sk)

    @property
    def sender(self) -> str:
        """The sender's user ID."""
        return str(self.pdu["sender"])

    @property
    def room_id(self) -> str:
        """The room ID (in room version 12 derived from the create event for the create event itself)."""
        return self._room_id

    @property
    def content(self) -> Mapping[str, Any]:
        """``content``; an empty mapping when it is missing or not an object."""
        c = self.pdu.get("content", {})
        return c if isinstance(c, Mapping) else {}

    @property
    def depth(self) -> int:
        """``depth``; 0 when it is missing or not an integer."""
        d = self.pdu.get("depth", 0)
        return d if isinstance(d, int) and not isinstance(d, bool) else 0

    @property
    def origin_server_ts(self) -> int:
        """``origin_server_ts`` in milliseconds; 0 when it is missing or not an integer."""
        ts = self.pdu.get("origin_server_ts", 0)
        return ts if isinstance(ts, int) and not isinstance(ts, bool) else 0

    @property
    def prev_event_ids(self) -> Sequence[str]:
        """The IDs of ``prev_events`` (in rooms v1/v2 taken from the ``[id, hashes]`` pairs)."""
        return self._prev_event_ids

    @property
    def auth_event_ids(self) -> Sequence[str]:
        """The IDs of ``auth_events`` (in rooms v1/v2 taken from the ``[id, hashes]`` pairs)."""
        return self._auth_event_ids

    @property
    def redacts(self) -> str | None:
        """The event ID an ``m.room.redaction`` redacts (``content.redacts`` from v11 on, with the
        top-level key as fallback)."""
        if self.type != "m.room.redaction":
            return None
        if self.room_version.updated_redaction_rules:
            r = self.content.get("redacts", self.pdu.get("redacts"))
        else:
            r = self.pdu.get("redacts")
        return r if isinstance(r, str) else None

    @property
    def membership(self) -> str | None:
        """``content.membership`` of an ``m.room.member`` event, else ``None``."""
        if self.type != "m.room.member":
            return None
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    @property
    def unsigned(self) -> Mapping[str, Any]:
        """``unsigned`` (not covered by hashes or signatures); empty when missing or not an object."""
        u = self.pdu.get("unsigned", {})
        return u if isinstance(u, Mapping) else {}

    def get_pdu_json(self) -> dict[str, Any]:
        """Returns a shallow copy of the PDU as a plain dict (for sending or storing)."""
        return dict(self.pdu)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __repr__(self) -> str:
        return f"<Event {self.event_id} {self.type} {self.state_key!r} by {self.sender}>"
