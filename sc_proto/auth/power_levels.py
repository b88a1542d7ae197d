"""Power levels: parsing ``m.room.power_levels`` content and computing users' and events' levels.

Theory of operation: every lookup goes through :func:`parse_power_level`, which applies the room
version's rules for what counts as a power-level value:

* rooms v1-v5 accept integers, strings holding an integer (``" +100 "``) and floats (truncated
  towards zero; infinities and NaN are invalid);
* rooms v6-v9 accept integers and integer strings (canonical JSON rules out floats);
* rooms v10+ (``enforce_int_power_levels``) accept integers only.

Booleans are never power levels. A value that does not parse is treated as absent, so its default
applies; the authorization rules separately reject *new* power-levels events carrying such values.

Room creators (:func:`get_creators`) matter in two ways. Before room v12 the creator has power 100
while the room has no ``m.room.power_levels`` event. From v12 on (``privileged_creators``) every
creator has :data:`CREATOR_POWER_LEVEL`, an infinite level above any integer, whatever the power
levels say.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

from sc_proto.errors import InvalidIdentifierError
from sc_proto.events.model import Event
from sc_proto.identifiers import UserID
from sc_proto.room_versions import RoomVersion

PowerLevel = int | float
"""A user's power level: an ``int``, or :data:`CREATOR_POWER_LEVEL` for v12 creators."""

CREATOR_POWER_LEVEL: Final[float] = math.inf
"""The power level of room creators in rooms with ``privileged_creators`` (v12): infinite."""

DEFAULT_CREATOR_LEVEL: Final = 100
"""The creator's level before v12 while the room has no power-levels event."""

DEFAULT_LEVELS: Final[Mapping[str, int]] = {
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
}
"""Defaults of the named levels (client-server spec, ``m.room.power_levels``)."""

NAMED_LEVEL_KEYS: Final = (
    "users_default",
    "events_default",
    "state_default",
    "ban",
    "redact",
    "kick",
    "invite",
)
"""The top-level integer properties the authorization rules compare, in spec order."""

DEFAULT_NOTIFICATION_LEVELS: Final[Mapping[str, int]] = {"room": 50}

# "a single base 10 integer ... optionally prefixed with a single - or + ... optionally with any
# number of leading or trailing whitespace characters" (rooms/fragments/v1-stringy-power-levels).
_STRINGY_INT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def parse_power_level(value: object, room_version: RoomVersion) -> int | None:
    """Parses one power-level value according to the room version.

    Args:
        value: the JSON value found in the content.
        room_version: decides whether integer strings (v1-v9) and floats (v1-v5) are accepted.

    Returns:
        The integer level, or ``None`` if ``value`` is not a valid power level in this version.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if room_version.enforce_int_power_levels:
        return None
    if isinstance(value, str):
        if _STRINGY_INT.fullmatch(value) is None:
            return None
        return int(value.strip())
    if isinstance(value, float) and not room_version.strict_canonicaljson:
        if math.isnan(value) or math.isinf(value):
            return None
        return math.trunc(value)
    return None


def is_valid_user_id(user_id: object) -> bool:
    """Whether ``user_id`` is a user ID acceptable as an event ``sender``.

    This is the historical grammar (any localpart without ``:``, NUL or surrogates, a valid
    server name, at most 255 bytes), the same validation applied to senders.
    """
    try:
        UserID.parse(user_id, historical=True)
    except InvalidIdentifierError:
        return False
    return True


def _content(event: Event | None) -> Mapping[str, Any]:
    if event is None:
        return {}
    content = event.pdu.get("content")
    return content if isinstance(content, Mapping) else {}


def _sender(event: Event) -> str | None:
    sender = event.pdu.get("sender")
    return sender if isinstance(sender, str) else None


def get_creators(create_event: Event | None, room_version: RoomVersion | None = None) -> frozenset[str]:
    """Returns the room's creators, as the room version defines them.

    * v1-v10: ``content.creator`` of the create event;
    * v11 (``implicit_room_creator``): the create event's ``sender``;
    * v12 (``privileged_creators``): the ``sender`` plus every valid user ID in
      ``content.additional_creators``.

    Args:
        create_event: the room's ``m.room.create`` event, or ``None`` (no creators).
        room_version: defaults to the create event's room version.
    """
    if create_event is None:
        return frozenset()
    rv = room_version or create_event.room_version
    content = _content(create_event)
    if not rv.implicit_room_creator:
        creator = content.get("creator")
        return frozenset((creator,)) if isinstance(creator, str) else frozenset()
    creators: set[str] = set()
    sender = _sender(create_event)
    if sender is not None:
        creators.add(sender)
    if rv.privileged_creators:
        additional = content.get("additional_creators")
        if isinstance(additional, list):
            creators.update(u for u in additional if isinstance(u, str) and is_valid_user_id(u))
    return frozenset(creators)


def get_user_power_level(
    user_id: str,
    power_levels_event: Event | None,
    create_event: Event | None,
    room_version: RoomVersion | None = None,
) -> PowerLevel:
    """Returns ``user_id``'s power level.

    Args:
        user_id: the user.
        power_levels_event: the current ``m.room.power_levels`` event, if any.
        create_event: the room's ``m.room.create`` event (for the creators).
        room_version: defaults to the version of whichever event is given.

    Returns:
        An ``int``; :data:`CREATOR_POWER_LEVEL` for creators of v12+ rooms.
    """
    rv = room_version
    if rv is None:
        source = create_event or power_levels_event
        if source is None:
            return 0
        rv = source.room_version
    creators = get_creators(create_event, rv)
    if rv.privileged_creators and user_id in creators:
        return CREATOR_POWER_LEVEL
    if power_levels_event is None:
        return DEFAULT_CREATOR_LEVEL if user_id in creators else 0
    content = _content(power_levels_event)
    users = content.get("users")
    if isinstance(users, Mapping) and user_id in users:
        level = parse_power_level(users[user_id], rv)
        if level is not None:
            return level
    return get_named_level(power_levels_event, "users_default", DEFAULT_LEVELS["users_default"], rv)


def get_named_level(
    power_levels: Event | None,
    name: str,
    default: int | None = None,
    room_version: RoomVersion | None = None,
) -> int:
    """Returns a top-level level such as ``ban``, ``kick``, ``invite`` or ``state_default``.

    Args:
        power_levels: the current ``m.room.power_levels`` event, if any.
        name: the content key.
        default: the value when absent or invalid; defaults to :data:`DEFAULT_LEVELS` (or 0).
        room_version: defaults to the power-levels event's version.
    """
    fallback = default if default is not None else DEFAULT_LEVELS.get(name, 0)
    if power_levels is None:
        return fallback
    rv = room_version or power_levels.room_version
    level = parse_power_level(_content(power_levels).get(name), rv)
    return fallback if level is None else level


def get_required_level(
    event_type: str,
    state_key: str | None,
    power_levels: Event | None,
    room_version: RoomVersion | None = None,
) -> int:
    """Returns the *required power level* to send an event of ``event_type``.

    ``events[event_type]`` if set, else ``state_default`` for state events (``state_key`` is not
    ``None``) or ``events_default`` for other events.
    """
    if power_levels is not None:
        rv = room_version or power_levels.room_version
        events = _content(power_levels).get("events")
        if isinstance(events, Mapping) and event_type in events:
            level = parse_power_level(events[event_type], rv)
            if level is not None:
                return level
    name = "state_default" if state_key is not None else "events_default"
    return get_named_level(power_levels, name, None, room_version)


def get_notification_level(
    power_levels: Event | None, key: str, room_version: RoomVersion | None = None
) -> int:
    """Returns the level needed to trigger notification ``key`` (``room`` defaults to 50)."""
    fallback = DEFAULT_NOTIFICATION_LEVELS.get(key, 50)
    if power_levels is None:
        return fallback
    rv = room_version or power_levels.room_version
    notifications = _content(power_levels).get("notifications")
    if isinstance(notifications, Mapping) and key in notifications:
        level = parse_power_level(notifications[key], rv)
        if level is not None:
            return level
    return fallback
