"""The authorization rules of room versions 1-12 (``content/rooms/v*.md``, "Authorisation rules").

Theory of operation:

* :func:`check_auth` runs the rules for one event against a set of state (``auth_state``), which
  is either the event's auth events (plus, in v12, the create event), the state before the
  event, or the current state: the same function serves all three checks the server-server spec
  asks for on receipt of a PDU. It returns ``None`` when the event is allowed and raises
  :class:`~sc_proto.errors.AuthError` otherwise.
* :func:`check_auth_events_match` is the rule about the *shape* of ``auth_events`` (rule 2; rule 3
  in v12): no duplicates, nothing beyond :func:`auth_types_for_event`, the create event present
  (v1-v11) or absent (v12), one room.
* Every rejection names its rule number *as numbered in that room version's spec text*: v1-v5
  have the ``m.room.aliases`` rule 4, v12 inserts rule 2 (room ID from the create event), v10 and
  v12 insert power-levels sub-rules. Numbers are computed from feature flags (:func:`_numbers`),
  so ``"9.3: ..."`` in v11 and ``"10.3: ..."`` in v12 are the same check.

Invariants: the functions are pure; malformed input (content of the wrong type, missing keys)
yields :class:`AuthError`, never ``KeyError``/``TypeError``/``ValueError``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sc_proto.auth.membership import (
    AuthState,
    check_membership,
    content_of,
    creators_of,
    domain_of,
    get_membership,
    named_level,
    power_level_of,
    sender_of,
)
from sc_proto.auth.power_levels import (
    NAMED_LEVEL_KEYS,
    PowerLevel,
    get_required_level,
    is_valid_user_id,
    parse_power_level,
)
from sc_proto.errors import AuthError
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")
JOIN_RULES_KEY: StateKey = ("m.room.join_rules", "")


def _numbers(names: Iterable[str | None]) -> dict[str, str]:
    out: dict[str, str] = {}
    n = 0
    for name in names:
        if name is not None:
            n += 1
            out[name] = str(n)
    return out


def _top_numbers(rv: RoomVersion) -> dict[str, str]:
    return _numbers(
        [
            "create",
            "room_id" if rv.room_id_from_create_event else None,
            "auth_events",
            "federate",
            "aliases" if rv.special_case_aliases_auth else None,
            "member",
            "sender_joined",
            "third_party_invite",
            "required_level",
            "state_key",
            "power_levels",
            # v1-v2 (event format V1, whose event IDs carry a domain) check the redact level.
            "redaction" if rv.event_format is EventFormat.V1 else None,
        ]
    )


def _create_numbers(rv: RoomVersion) -> dict[str, str]:
    return _numbers(
        [
            "prev_events",
            "room_id",
            "room_version",
            None if rv.implicit_room_creator else "creator",
            "additional_creators" if rv.privileged_creators else None,
        ]
    )


def _pl_numbers(rv: RoomVersion) -> dict[str, str]:
    return _numbers(
        [
            "int_values" if rv.enforce_int_power_levels else None,
            "int_maps" if rv.enforce_int_power_levels else None,
            "users",
            "creators" if rv.privileged_creators else None,
            "no_previous",
            "named",
            "maps_old",
            "maps_new",
            "users_old",
            "users_new",
        ]
    )


def _auth_numbers(rv: RoomVersion) -> dict[str, str]:
    return _numbers(["duplicate", "unexpected", "rejected", "create", "room_id"])


# --- auth events selection ---------------------------------------------------------------------


def auth_types_for_event(
    event_or_fields: Event | Mapping[str, Any], room_version: RoomVersion
) -> list[StateKey]:
    """Returns the state keys an event's ``auth_events`` must be drawn from.

    Implements the server-server API's "Auth events selection": the create event (not in v12),
    the power levels, the sender's membership and, for member events, the target's membership,
    the join rules (for join, invite and knock), the third-party invite named by
    ``signed.token`` and the authorising user's membership of a restricted join.

    Args:
        event_or_fields: an :class:`Event` or a mapping with ``type``, ``sender``, ``content``
            and ``state_key`` (as a builder has before the event exists).
        room_version: the room version.

    Returns:
        Distinct ``(type, state_key)`` pairs in selection order; empty for ``m.room.create``.
    """
    fields: Mapping[str, Any] = event_or_fields.pdu if isinstance(event_or_fields, Event) else event_or_fields
    event_type = fields.get("type")
    if event_type == "m.room.create":
        return []
    keys: list[StateKey] = []
    if room_version.create_event_in_auth_events:
        keys.append(CREATE_KEY)
    keys.append(POWER_LEVELS_KEY)
    sender = fields.get("sender")
    if isinstance(sender, str):
        keys.append(("m.room.member", sender))
    content = fields.get("content")
    content = content if isinstance(content, Mapping) else {}
    state_key = fields.get("state_key")
    if event_type == "m.room.member" and isinstance(state_key, str):
        keys.append(("m.room.member", state_key))
        membership = content.get("membership")
        if membership in ("join", "invite", "knock"):
            keys.append(JOIN_RULES_KEY)
        tpi = content.get("third_party_invite")
        if membership == "invite" and isinstance(tpi, Mapping):
            signed = tpi.get("signed")
            token = signed.get("token") if isinstance(signed, Mapping) else None
            if isinstance(token, str):
                keys.append(("m.room.third_party_invite", token))
        via = content.get("join_authorised_via_users_server")
        if membership == "join" and room_version.restricted_join_rule and isinstance(via, str):
            keys.append(("m.room.member", via))
    return list(dict.fromkeys(keys))


def check_auth_events_match(
    event: Event,
    auth_events_by_id: Mapping[str, Event],
    room_version: RoomVersion | None = None,
    rejected_event_ids: Collection[str] = (),
) -> None:
    """Checks the rule "Considering the event's ``auth_events``" (rule 2; rule 3 in v12).

    Args:
        event: the event whose ``auth_events`` are checked.
        auth_events_by_id: the auth events, by ID (must include every ID the event lists).
        room_version: defaults to the event's room version.
        rejected_event_ids: IDs the host has rejected (rule x.3).

    Raises:
        AuthError: an auth event is missing, duplicated, unexpected, rejected, from another room,
            or the create event is missing (v1-v11) or listed (v12).
    """
    rv = room_version or event.room_version
    rule = _top_numbers(rv)["auth_events"]
    nums = _auth_numbers(rv)
    if event.pdu.get("type") == "m.room.create":
        if event.auth_event_ids:
            raise AuthError(f"{rule}.{nums['unexpected']}: m.room.create must have no auth_events")
        return
    allowed = set(auth_types_for_event(event, rv))
    seen: set[StateKey] = set()
    for event_id in event.auth_event_ids:
        auth_event = auth_events_by_id.get(event_id)
        if auth_event is None:
            raise AuthError(f"{rule}: auth event {event_id} was not provided")
        key = auth_event.state_key
        if key is None or not isinstance(auth_event.pdu.get("type"), str):
            raise AuthError(f"{rule}.{nums['unexpected']}: auth event {event_id} is not a state event")
        state_key = (auth_event.type, key)
        if state_key in seen:
            raise AuthError(f"{rule}.{nums['duplicate']}: duplicate auth events for {state_key}")
        seen.add(state_key)
        if state_key not in allowed:
            raise AuthError(f"{rule}.{nums['unexpected']}: unexpected auth event for {state_key}")
        if event_id in rejected_event_ids:
            raise AuthError(f"{rule}.{nums['rejected']}: auth event {event_id} was rejected")
        if auth_event.room_id != event.room_id:
            raise AuthError(f"{rule}.{nums['room_id']}: auth event {event_id} is from another room")
    if rv.create_event_in_auth_events and CREATE_KEY not in seen:
        raise AuthError(f"{rule}.{nums['create']}: no m.room.create event among auth_events")


def build_auth_state(
    auth_events: Iterable[Event], create_event: Event | None = None
) -> dict[StateKey, Event]:
    """Builds the ``auth_state`` mapping for :func:`check_auth` from auth events.

    Args:
        auth_events: the event's auth events (non-state events are ignored).
        create_event: the room's create event, for v12 rooms where it is not an auth event.
    """
    state: dict[StateKey, Event] = {}
    if create_event is not None:
        state[CREATE_KEY] = create_event
    for auth_event in auth_events:
        if auth_event.state_key is not None and isinstance(auth_event.pdu.get("type"), str):
            state[(auth_event.type, auth_event.state_key)] = auth_event
    return state


def auth_state_from_state_map(
    event_or_fields: Event | Mapping[str, Any],
    state_map: Mapping[StateKey, Event],
    room_version: RoomVersion,
) -> dict[StateKey, Event]:
    """Selects from a room's state the ``auth_state`` :func:`check_auth` needs for an event.

    Args:
        event_or_fields: the event, or a mapping with ``type``, ``sender``, ``content`` and
            ``state_key`` (as a builder has before the event exists).
        state_map: the room state the event is built on (or received against), by
            ``(type, state_key)``; keys it lacks are simply absent from the result.
        room_version: the room version.

    Returns:
        The entries of ``state_map`` under :func:`auth_types_for_event`, plus the create event
        (also in room version 12, where it is not an auth event but the rules read it).
    """
    keys = [CREATE_KEY, *auth_types_for_event(event_or_fields, room_version)]
    return {key: state_map[key] for key in dict.fromkeys(keys) if key in state_map}


def auth_event_ids_from_state_map(
    event_or_fields: Event | Mapping[str, Any],
    state_map: Mapping[StateKey, Event],
    room_version: RoomVersion,
) -> list[str]:
    """Returns the ``auth_events`` an event built on ``state_map`` lists (for :func:`build_event`).

    The IDs of the state events :func:`auth_types_for_event` selects, in selection order; in
    room version 12 the create event is not among them.
    """
    selected = auth_types_for_event(event_or_fields, room_version)
    return [state_map[key].event_id for key in selected if key in state_map]


# --- the rules ---------------------------------------------------------------------------------


def check_auth(
    event: Event, auth_state: Mapping[StateKey, Event], room_version: RoomVersion | None = None
) -> None:
    """Checks ``event`` against the authorization rules of its room version.

    Args:
        event: the event to authorize.
        auth_state: the state the rules consult, by ``(type, state_key)``: at least the create
            event (also in v12, although it is not an auth event there), the power levels, the
            join rules, the sender's and target's memberships and any third-party invite. Full
            room state is fine; only the entries the rules need are read.
        room_version: defaults to the event's room version.

    Raises:
        AuthError: the event is rejected; the reason starts with the rule number.
    """
    rv = room_version or event.room_version
    nums = _top_numbers(rv)
    _check_shape(event)
    if event.pdu["type"] == "m.room.create":
        _check_create(event, rv, nums["create"])
        return
    create = auth_state.get(CREATE_KEY)
    _check_room(event, create, auth_state, rv, nums)
    assert create is not None  # _check_room raised otherwise
    sender = sender_of(event)
    if content_of(create).get("m.federate", True) is False and domain_of(sender) != domain_of(
        sender_of(create)
    ):
        raise AuthError(f"{nums['federate']}: room does not federate with the sender's server")
    event_type: str = event.pdu["type"]
    state_key = event.state_key
    if rv.special_case_aliases_auth and event_type == "m.room.aliases":
        if state_key is None:
            raise AuthError(f"{nums['aliases']}.1: m.room.aliases needs a state_key")
        if domain_of(sender) != state_key:
            raise AuthError(f"{nums['aliases']}.2: sender's domain does not match state_key")
        return
    if event_type == "m.room.member":
        check_membership(event, auth_state, rv, nums["member"])
        return
    if get_membership(auth_state, sender) != "join":
        raise AuthError(f"{nums['sender_joined']}: sender is not joined to the room")
    sender_level = power_level_of(sender, auth_state, rv)
    if event_type == "m.room.third_party_invite":
        if sender_level >= named_level(auth_state, "invite", rv):
            return
        raise AuthError(f"{nums['third_party_invite']}.1: sender's power level is below the invite level")
    required = get_required_level(event_type, state_key, auth_state.get(POWER_LEVELS_KEY), rv)
    if required > sender_level:
        raise AuthError(
            f"{nums['required_level']}: sender's power level is below {required} for {event_type}"
        )
    if state_key is not None and state_key.startswith("@") and state_key != sender:
        raise AuthError(f"{nums['state_key']}: state_key starting with '@' must be the sender")
    if event_type == "m.room.power_levels":
        _check_power_levels(event, auth_state, rv, sender_level, nums["power_levels"])
        return
    if "redaction" in nums and event_type == "m.room.redaction":
        _check_redaction_v1(event, auth_state, rv, sender_level, nums["redaction"])


def _check_shape(event: Event) -> None:
    # NOTSPEC: event validation (a separate step) guarantees these; the rules re-check them so a
    # malformed event is rejected with AuthError rather than crashing the checks.
    pdu = event.pdu
    if not isinstance(pdu.get("type"), str):
        raise AuthError("event type is missing or not a string")
    if not isinstance(pdu.get("sender"), str):
        raise AuthError("event sender is missing or not a string")
    if not isinstance(pdu.get("content"), Mapping):
        raise AuthError("event content is missing or not an object")
    if "state_key" in pdu and not isinstance(pdu.get("state_key"), str):
        raise AuthError("event state_key is not a string")


def _check_create(event: Event, rv: RoomVersion, rule: str) -> None:
    nums = _create_numbers(rv)
    content = content_of(event)
    if event.prev_event_ids:
        raise AuthError(f"{rule}.{nums['prev_events']}: m.room.create must have no prev_events")
    if rv.room_id_from_create_event:
        if "room_id" in event.pdu:
            raise AuthError(f"{rule}.{nums['room_id']}: m.room.create must not have a room_id")
    elif domain_of(event.room_id) != domain_of(sender_of(event)) or not domain_of(event.room_id):
        raise AuthError(f"{rule}.{nums['room_id']}: room_id domain does not match sender domain")
    version = content.get("room_version", "1")
    if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
        raise AuthError(f"{rule}.{nums['room_version']}: unknown room_version")
    if not rv.implicit_room_creator and "creator" not in content:
        raise AuthError(f"{rule}.{nums['creator']}: m.room.create has no creator")
    if rv.privileged_creators and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise AuthError(
                f"{rule}.{nums['additional_creators']}: additional_creators must be a list of user IDs"
            )


def _check_room(
    event: Event,
    create: Event | None,
    auth_state: AuthState,
    rv: RoomVersion,
    nums: Mapping[str, str],
) -> None:
    """The room-membership rules of the checked state: create present, one room ID."""
    auth_rule = nums["auth_events"]
    auth_nums = _auth_numbers(rv)
    if rv.room_id_from_create_event:
        if create is None or create.pdu.get("type") != "m.room.create":
            raise AuthError(f"{nums['room_id']}: no m.room.create event for the room")
        if event.room_id != "!" + create.event_id[1:]:
            raise AuthError(f"{nums['room_id']}: room_id is not the create event's ID")
    elif create is None or create.pdu.get("type") != "m.room.create":
        raise AuthError(f"{auth_rule}.{auth_nums['create']}: no m.room.create event in the auth state")
    for key in auth_types_for_event(event, rv):
        consulted = auth_state.get(key)
        if consulted is not None and consulted.room_id != event.room_id:
            raise AuthError(
                f"{auth_rule}.{auth_nums['room_id']}: auth event {consulted.event_id} is from another room"
            )


def _check_redaction_v1(
    event: Event, auth_state: AuthState, rv: RoomVersion, sender_level: PowerLevel, rule: str
) -> None:
    if sender_level >= named_level(auth_state, "redact", rv):
        return
    redacts = event.redacts
    if redacts is not None and domain_of(redacts) and domain_of(redacts) == domain_of(event.event_id):
        return
    raise AuthError(f"{rule}.3: sender cannot redact events from another server")


# --- m.room.power_levels -----------------------------------------------------------------------


def _parse_map(
    value: object, rv: RoomVersion, rule: str, what: str, keys_are_users: bool = False
) -> dict[str, int]:
    """Parses ``events``/``notifications``/``users`` into ``{key: level}`` or rejects."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AuthError(f"{rule}: {what} must be an object")
    out: dict[str, int] = {}
    for key, raw in value.items():
        if keys_are_users and not is_valid_user_id(key):
            raise AuthError(f"{rule}: {what} key {key!r} is not a valid user ID")
        level = parse_power_level(raw, rv)
        if level is None:
            raise AuthError(f"{rule}: {what}[{key!r}] is not a valid power level")
        out[str(key)] = level
    return out


def _parse_new_power_levels(
    content: Mapping[str, Any], rv: RoomVersion, nums: Mapping[str, str], rule: str
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Validates a new power-levels event's content; returns (named levels, maps)."""
    # Before v10 only `users` is validated by the spec. NOTSPEC: we also reject other values that
    # are not power levels in this room version instead of guessing what they mean.
    values_rule = f"{rule}.{nums['int_values']}" if "int_values" in nums else f"{rule}.{nums['users']}"
    maps_rule = f"{rule}.{nums['int_maps']}" if "int_maps" in nums else f"{rule}.{nums['users']}"
    named: dict[str, int] = {}
    for name in NAMED_LEVEL_KEYS:
        if name in content:
            level = parse_power_level(content[name], rv)
            if level is None:
                raise AuthError(f"{values_rule}: {name} is not a valid power level")
            named[name] = level
    maps = {
        "events": _parse_map(content.get("events"), rv, maps_rule, "events"),
        "users": _parse_map(content.get("users"), rv, f"{rule}.{nums['users']}", "users", True),
    }
    if rv.limit_notifications_power_levels:
        maps["notifications"] = _parse_map(content.get("notifications"), rv, maps_rule, "notifications")
    return named, maps


def _lenient_levels(
    content: Mapping[str, Any], rv: RoomVersion
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Parses the *current* power levels, skipping values that are not valid levels."""
    named = {
        name: level
        for name in NAMED_LEVEL_KEYS
        if (level := parse_power_level(content.get(name), rv)) is not None
    }
    maps: dict[str, dict[str, int]] = {}
    for what in ("events", "users", "notifications"):
        raw = content.get(what)
        items = raw.items() if isinstance(raw, Mapping) else ()
        maps[what] = {str(k): level for k, v in items if (level := parse_power_level(v, rv)) is not None}
    return named, maps


def _check_power_levels(
    event: Event, auth_state: AuthState, rv: RoomVersion, sender_level: PowerLevel, rule: str
) -> None:
    nums = _pl_numbers(rv)
    new_named, new_maps = _parse_new_power_levels(content_of(event), rv, nums, rule)
    if rv.privileged_creators:
        creators = creators_of(auth_state, rv)
        if creators & new_maps["users"].keys():
            raise AuthError(f"{rule}.{nums['creators']}: room creators cannot be listed in users")
    current = auth_state.get(POWER_LEVELS_KEY)
    if current is None:
        return
    old_named, old_maps = _lenient_levels(content_of(current), rv)
    for name in NAMED_LEVEL_KEYS:
        old, new = old_named.get(name), new_named.get(name)
        if old == new:
            continue
        if old is not None and old > sender_level:
            raise AuthError(f"{rule}.{nums['named']}.1: current {name} is above the sender's level")
        if new is not None and new > sender_level:
            raise AuthError(f"{rule}.{nums['named']}.2: new {name} is above the sender's level")
    map_names = ("events", "notifications") if rv.limit_notifications_power_levels else ("events",)
    for what in map_names:
        old_map, new_map = old_maps.get(what, {}), new_maps.get(what, {})
        for key, old in old_map.items():
            if new_map.get(key) != old and old > sender_level:
                raise AuthError(
                    f"{rule}.{nums['maps_old']}.1: current {what}[{key!r}] is above the sender's level"
                )
        for key, new in new_map.items():
            if old_map.get(key) != new and new > sender_level:
                raise AuthError(
                    f"{rule}.{nums['maps_new']}.1: new {what}[{key!r}] is above the sender's level"
                )
    sender = sender_of(event)
    old_users, new_users = old_maps["users"], new_maps["users"]
    for user, old in old_users.items():
        if user != sender and new_users.get(user) != old and old >= sender_level:
            raise AuthError(f"{rule}.{nums['users_old']}.1: cannot change the level of {user}")
    for user, new in new_users.items():
        if old_users.get(user) != new and new > sender_level:
            raise AuthError(f"{rule}.{nums['users_new']}.1: cannot raise {user} above the sender's level")
