"""Authorization rules of room versions 1-12: :func:`check_auth` and its helpers.

* :mod:`sc_proto.auth.rules`: :func:`check_auth`, :func:`check_auth_events_match`,
  :func:`auth_types_for_event` (auth events selection), :func:`build_auth_state`,
  :func:`auth_state_from_state_map`, :func:`auth_event_ids_from_state_map`.
* :mod:`sc_proto.auth.power_levels`: power-level parsing and lookups, room creators.
* :mod:`sc_proto.auth.membership`: the ``m.room.member`` rules (join rules, restricted joins,
  knocks, third-party invites).
"""

from sc_proto.auth.membership import (
    check_membership,
    join_authorising_server,
    verify_third_party_signed,
)
from sc_proto.auth.power_levels import (
    CREATOR_POWER_LEVEL,
    PowerLevel,
    get_creators,
    get_named_level,
    get_notification_level,
    get_required_level,
    get_user_power_level,
    is_valid_user_id,
    parse_power_level,
)
from sc_proto.auth.rules import (
    auth_event_ids_from_state_map,
    auth_state_from_state_map,
    auth_types_for_event,
    build_auth_state,
    check_auth,
    check_auth_events_match,
)

__all__ = [
    "CREATOR_POWER_LEVEL",
    "PowerLevel",
    "auth_event_ids_from_state_map",
    "auth_state_from_state_map",
    "auth_types_for_event",
    "build_auth_state",
    "check_auth",
    "check_auth_events_match",
    "check_membership",
    "get_creators",
    "get_named_level",
    "get_notification_level",
    "get_required_level",
    "get_user_power_level",
    "is_valid_user_id",
    "join_authorising_server",
    "parse_power_level",
    "verify_third_party_signed",
]
