"""Room versions as data.

Each room version is a frozen :class:`RoomVersion` record of feature flags. Algorithms in sc_proto
(event IDs, redaction, auth rules, state resolution) branch on these flags, never on the version
string, so adding a room version is adding a record.

Flags are named after the behaviour they switch on and the version that introduced it, as written
in ``content/rooms/v*.md`` of the specification.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sc_proto.errors import UnsupportedRoomVersionError


class EventFormat(enum.Enum):
    """The shape of PDUs and their IDs."""

    V1 = 1
    """Rooms v1–v2: ``event_id`` is a field of the PDU; ``prev_events``/``auth_events`` are
    ``[event_id, {hashes}]`` pairs."""
    V2 = 2
    """Room v3: event IDs are ``$`` + the reference hash in standard unpadded base64."""
    V3 = 3
    """Rooms v4–v11: as V2 with URL-safe unpadded base64."""
    V4 = 4
    """Room v12: as V3; the room ID is ``!`` + the create event's reference hash (URL-safe), the
    create event carries no ``room_id`` and is not listed in other events' ``auth_events``."""


class StateResAlgorithm(enum.Enum):
    """Which state resolution algorithm a room version uses."""

    V1 = 1
    V2 = 2
    V2_1 = 3
    """State resolution v2 with v12's changes: the conflicted state subgraph joins the full
    conflicted set, and the iterative auth checks start from an empty state."""


class RoomDisposition(enum.Enum):
    STABLE = "stable"
    UNSTABLE = "unstable"


@dataclass(frozen=True)
class RoomVersion:
    """Feature flags of one room version. Compare versions by identity or ``identifier``."""

    identifier: str
    disposition: RoomDisposition
    event_format: EventFormat
    state_res: StateResAlgorithm
    enforce_key_validity: bool
    """v5+: signing keys must be valid at the event's ``origin_server_ts``."""
    special_case_aliases_auth: bool
    """v1–v5: ``m.room.aliases`` has its own auth rule and its content survives redaction."""
    strict_canonicaljson: bool
    """v6+: integers outside ±(2^53−1) and floats make an event invalid."""
    limit_notifications_power_levels: bool
    """v6+: changes to ``notifications`` in power levels are checked like other keys."""
    knock_join_rule: bool
    """v7+: the ``knock`` join rule and membership."""
    restricted_join_rule: bool
    """v8+: the ``restricted`` join rule (``allow`` conditions)."""
    restricted_join_rule_fix: bool
    """v9+: ``join_authorised_via_users_server`` survives redaction."""
    knock_restricted_join_rule: bool
    """v10+: the ``knock_restricted`` join rule."""
    enforce_int_power_levels: bool
    """v10+: power-level values must be integers (not strings)."""
    implicit_room_creator: bool
    """v11+: ``creator`` is gone from ``m.room.create``; the sender is the creator."""
    updated_redaction_rules: bool
    """v11+: the redaction algorithm of room v11 (``redacts`` in content, ``invite`` in power
    levels, ``signed`` of third-party invites, all of create's content preserved)."""
    privileged_creators: bool
    """v12: creators (the create event's sender plus ``additional_creators``) have infinite power
    and cannot be named in ``m.room.power_levels``."""
    room_id_from_create_event: bool
    """v12: the room ID is derived from the create event (see :attr:`EventFormat.V4`)."""

    @property
    def create_event_in_auth_events(self) -> bool:
        """Whether other events list the create event in ``auth_events`` (all but v12)."""
        return not self.room_id_from_create_event


def _v(
    identifier: str,
    event_format: EventFormat,
    state_res: StateResAlgorithm,
    since: int,
) -> RoomVersion:
    """Builds a room version whose flags follow from the version number ``since``."""
    return RoomVersion(
        identifier=identifier,
        disposition=RoomDisposition.STABLE,
        event_format=event_format,
        state_res=state_res,
        enforce_key_validity=since >= 5,
        special_case_aliases_auth=since <= 5,
        strict_canonicaljson=since >= 6,
        limit_notifications_power_levels=since >= 6,
        knock_join_rule=since >= 7,
        restricted_join_rule=since >= 8,
        restricted_join_rule_fix=since >= 9,
        knock_restricted_join_rule=since >= 10,
        enforce_int_power_levels=since >= 10,
        implicit_room_creator=since >= 11,
        updated_redaction_rules=since >= 11,
        privileged_creators=since >= 12,
        room_id_from_create_event=since >= 12,
    )


class RoomVersions:
    """Every room version sc_proto supports, as attributes."""

    V1 = _v("1", EventFormat.V1, StateResAlgorithm.V1, 1)
    V2 = _v("2", EventFormat.V1, StateResAlgorithm.V2, 2)
    V3 = _v("3", EventFormat.V2, StateResAlgorithm.V2, 3)
    V4 = _v("4", EventFormat.V3, StateResAlgorithm.V2, 4)
    V5 = _v("5", EventFormat.V3, StateResAlgorithm.V2, 5)
    V6 = _v("6", EventFormat.V3, StateResAlgorithm.V2, 6)
    V7 = _v("7", EventFormat.V3, StateResAlgorithm.V2, 7)
    V8 = _v("8", EventFormat.V3, StateResAlgorithm.V2, 8)
    V9 = _v("9", EventFormat.V3, StateResAlgorithm.V2, 9)
    V10 = _v("10", EventFormat.V3, StateResAlgorithm.V2, 10)
    V11 = _v("11", EventFormat.V3, StateResAlgorithm.V2, 11)
    V12 = _v("12", EventFormat.V4, StateResAlgorithm.V2_1, 12)


KNOWN_ROOM_VERSIONS: Mapping[str, RoomVersion] = MappingProxyType(
    {
        v.identifier: v
        for v in (
            RoomVersions.V1,
            RoomVersions.V2,
            RoomVersions.V3,
            RoomVersions.V4,
            RoomVersions.V5,
            RoomVersions.V6,
            RoomVersions.V7,
            RoomVersions.V8,
            RoomVersions.V9,
            RoomVersions.V10,
            RoomVersions.V11,
            RoomVersions.V12,
        )
    }
)

DEFAULT_ROOM_VERSION: RoomVersion = RoomVersions.V12


def get_room_version(identifier: object) -> RoomVersion:
    """Returns the :class:`RoomVersion` for ``identifier``.

    Raises:
        UnsupportedRoomVersionError: the identifier is not a known room version (or not a string).
    """
    if not isinstance(identifier, str) or identifier not in KNOWN_ROOM_VERSIONS:
        raise UnsupportedRoomVersionError(str(identifier))
    return KNOWN_ROOM_VERSIONS[identifier]
