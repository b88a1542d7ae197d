"""The ``m.room.member`` authorization rules: join rules, invites, leaves, bans and knocks.

Theory of operation: :func:`check_membership` is rule 4 of room versions 6-11 (rule 5 in v1-v5 and
v12). It returns ``None`` when the event is allowed and raises :class:`~sc_proto.errors.AuthError`
naming the sub-rule when it is rejected; :mod:`sc_proto.auth.rules` calls it with the top-level
rule number so that reasons read like the room version's spec text (``"4.3.2: ..."``).

Sub-rule numbering differs by version (v8 inserted ``join_authorised_via_users_server`` as 4.2,
v7 added knocking, v8 the ``restricted`` join rule), so numbers are computed from the room
version's feature flags, never hard-coded per version.

Every read goes through defensive accessors: malformed content (wrong types, missing keys) leads
to a rejection, never to ``KeyError``/``TypeError``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from typing import Any

import nacl.exceptions
import nacl.signing

from sc_proto.auth.power_levels import (
    PowerLevel,
    get_creators,
    get_named_level,
    get_user_power_level,
    is_valid_user_id,
)
from sc_proto.errors import AuthError, CanonicalJSONError
from sc_proto.events.model import Event, StateKey
from sc_proto.json import encode_canonical_json
from sc_proto.room_versions import RoomVersion

AuthState = Mapping[StateKey, Event]
"""Events the rules consult, keyed by ``(type, state_key)``."""

JOIN = "join"
INVITE = "invite"
LEAVE = "leave"
BAN = "ban"
KNOCK = "knock"

PUBLIC = "public"
RESTRICTED = "restricted"
KNOCK_RESTRICTED = "knock_restricted"

# NOTSPEC: the spec does not say which join rule applies when the room has no m.room.join_rules
# event; like deployed servers we treat it as "invite" so an invited user can still join.
DEFAULT_JOIN_RULE = INVITE


def content_of(event: Event | None) -> Mapping[str, Any]:
    """Returns an event's content, or ``{}`` if it is absent or not an object."""
    if event is None:
        return {}
    content = event.pdu.get("content")
    return content if isinstance(content, Mapping) else {}


def sender_of(event: Event) -> str:
    """Returns an event's ``sender``, or ``""`` when it is missing or not a string."""
    sender = event.pdu.get("sender")
    return sender if isinstance(sender, str) else ""


def domain_of(identifier: str) -> str:
    """Returns the server-name part of a ``sigil localpart:domain`` identifier (or ``""``)."""
    return identifier.partition(":")[2]


def get_membership(auth_state: AuthState, user_id: str) -> str | None:
    """Returns ``user_id``'s current membership (``None`` if they have no member event)."""
    event = auth_state.get(("m.room.member", user_id))
    membership = content_of(event).get("membership")
    return membership if isinstance(membership, str) else None


def get_join_rule(auth_state: AuthState) -> str:
    """Returns the room's current ``join_rule`` (see :data:`DEFAULT_JOIN_RULE` when absent)."""
    event = auth_state.get(("m.room.join_rules", ""))
    if event is None:
        return DEFAULT_JOIN_RULE
    rule = content_of(event).get("join_rule")
    return rule if isinstance(rule, str) else ""


def power_level_of(user_id: str, auth_state: AuthState, room_version: RoomVersion) -> PowerLevel:
    """Returns ``user_id``'s power level in the state ``auth_state``."""
    return get_user_power_level(
        user_id,
        auth_state.get(("m.room.power_levels", "")),
        auth_state.get(("m.room.create", "")),
        room_version,
    )


def named_level(auth_state: AuthState, name: str, room_version: RoomVersion) -> int:
    """Returns the ``invite``/``kick``/``ban``/``redact`` level in the state ``auth_state``."""
    return get_named_level(auth_state.get(("m.room.power_levels", "")), name, None, room_version)


def join_authorising_server(event: Event) -> str | None:
    """Returns the server that must have signed a join via ``join_authorised_via_users_server``.

    Hosts add this server to the signatures they require when verifying the event (rule 4.2 of
    rooms v8+). ``None`` when the room version has no restricted rooms or the key is absent or
    not a user ID.
    """
    if not event.room_version.restricted_join_rule:
        return None
    via = content_of(event).get("join_authorised_via_users_server")
    if not isinstance(via, str) or not is_valid_user_id(via):
        return None
    return domain_of(via)


def _numbers(names: list[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    n = 0
    for name in names:
        if name is not None:
            n += 1
            out[name] = n
    return out


def _member_numbers(rv: RoomVersion) -> dict[str, int]:
    return _numbers(
        [
            "missing",
            "via_signed" if rv.restricted_join_rule else None,
            JOIN,
            INVITE,
            LEAVE,
            BAN,
            KNOCK if rv.knock_join_rule else None,
            "unknown",
        ]
    )


def _join_numbers(rv: RoomVersion) -> dict[str, int]:
    return _numbers(
        [
            "creator",
            "sender",
            "banned",
            INVITE,
            RESTRICTED if rv.restricted_join_rule else None,
            PUBLIC,
            "otherwise",
        ]
    )


def check_membership(event: Event, auth_state: AuthState, room_version: RoomVersion, rule: str) -> None:
    """Applies the ``m.room.member`` rules to ``event``.

    Args:
        event: an ``m.room.member`` event.
        auth_state: the state to check against (create event, power levels, join rules, the
            sender's and target's membership, the third-party invite, the authorising user's
            membership).
        room_version: the room version whose rules apply.
        rule: the number of the membership rule in this version (``"4"`` or ``"5"``).

    Raises:
        AuthError: the event is rejected; the reason starts with the sub-rule number.
    """
    nums = _member_numbers(room_version)
    state_key = event.pdu.get("state_key")
    content = content_of(event)
    membership = content.get("membership")
    if not isinstance(state_key, str) or not isinstance(membership, str):
        raise AuthError(f"{rule}.{nums['missing']}: member event needs a state_key and a membership")
    if room_version.restricted_join_rule and "join_authorised_via_users_server" in content:
        _check_via_signed(event, f"{rule}.{nums['via_signed']}")
    if membership == JOIN:
        _check_join(event, state_key, auth_state, room_version, f"{rule}.{nums[JOIN]}")
    elif membership == INVITE:
        _check_invite(event, state_key, auth_state, room_version, f"{rule}.{nums[INVITE]}")
    elif membership == LEAVE:
        _check_leave(event, state_key, auth_state, room_version, f"{rule}.{nums[LEAVE]}")
    elif membership == BAN:
        _check_ban(event, state_key, auth_state, room_version, f"{rule}.{nums[BAN]}")
    elif membership == KNOCK and room_version.knock_join_rule:
        _check_knock(event, state_key, auth_state, room_version, f"{rule}.{nums[KNOCK]}")
    else:
        raise AuthError(f"{rule}.{nums['unknown']}: unknown membership {membership!r}")


def _check_via_signed(event: Event, rule: str) -> None:
    # NOTSPEC: a pure library cannot fetch server keys, so this rule checks that a signature from
    # the authorising server is present; the host verifies it cryptographically as part of the
    # signature checks (see join_authorising_server), before the auth rules run.
    server = join_authorising_server(event)
    if server is None:
        raise AuthError(f"{rule}.1: join_authorised_via_users_server is not a valid user ID")
    signatures = event.pdu.get("signatures")
    sigs = signatures.get(server) if isinstance(signatures, Mapping) else None
    if not isinstance(sigs, Mapping) or not sigs:
        raise AuthError(f"{rule}.1: event is not signed by {server}, the authorising server")


def _check_join(event: Event, state_key: str, auth_state: AuthState, rv: RoomVersion, rule: str) -> None:
    nums = _join_numbers(rv)
    create = auth_state.get(("m.room.create", ""))
    sender = sender_of(event)
    if create is not None and list(event.prev_event_ids) == [create.event_id]:
        if rv.implicit_room_creator:
            creator: object = sender_of(create)
        else:
            creator = content_of(create).get("creator")
        if state_key == creator:
            return
    if sender != state_key:
        raise AuthError(f"{rule}.{nums['sender']}: sender does not match state_key")
    current = get_membership(auth_state, sender)
    if current == BAN:
        raise AuthError(f"{rule}.{nums['banned']}: sender is banned")
    join_rule = get_join_rule(auth_state)
    otherwise = f"{rule}.{nums['otherwise']}"
    if join_rule == INVITE or (join_rule == KNOCK and rv.knock_join_rule):
        if current in (INVITE, JOIN):
            return
        raise AuthError(f"{otherwise}: join rule is {join_rule!r} and sender is not invited")
    restricted = (join_rule == RESTRICTED and rv.restricted_join_rule) or (
        join_rule == KNOCK_RESTRICTED and rv.knock_restricted_join_rule
    )
    if restricted:
        sub = f"{rule}.{nums[RESTRICTED]}"
        if current in (JOIN, INVITE):
            return
        via = content_of(event).get("join_authorised_via_users_server")
        if not isinstance(via, str):
            raise AuthError(f"{sub}.2: restricted join without join_authorised_via_users_server")
        if get_membership(auth_state, via) != JOIN:
            raise AuthError(f"{sub}.2: authorising user {via} is not joined")
        if power_level_of(via, auth_state, rv) < named_level(auth_state, "invite", rv):
            raise AuthError(f"{sub}.2: authorising user {via} cannot invite")
        return
    if join_rule == PUBLIC:
        return
    raise AuthError(f"{otherwise}: join rule {join_rule!r} does not allow joining")


def _check_invite(event: Event, state_key: str, auth_state: AuthState, rv: RoomVersion, rule: str) -> None:
    content = content_of(event)
    target = get_membership(auth_state, state_key)
    if "third_party_invite" in content:
        _check_third_party_invite(event, state_key, target, auth_state, f"{rule}.1")
        return
    sender = sender_of(event)
    if get_membership(auth_state, sender) != JOIN:
        raise AuthError(f"{rule}.2: sender is not joined")
    if target in (JOIN, BAN):
        raise AuthError(f"{rule}.3: target is already {target}")
    if power_level_of(sender, auth_state, rv) >= named_level(auth_state, "invite", rv):
        return
    raise AuthError(f"{rule}.5: sender's power level is below the invite level")


def _check_third_party_invite(
    event: Event, state_key: str, target: str | None, auth_state: AuthState, rule: str
) -> None:
    if target == BAN:
        raise AuthError(f"{rule}.1: target is banned")
    tpi = content_of(event).get("third_party_invite")
    signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
    if not isinstance(signed, Mapping):
        raise AuthError(f"{rule}.2: third_party_invite has no signed object")
    mxid = signed.get("mxid")
    token = signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError(f"{rule}.3: signed needs string mxid and token")
    if mxid != state_key:
        raise AuthError(f"{rule}.4: signed mxid does not match state_key")
    invite_event = auth_state.get(("m.room.third_party_invite", token))
    if invite_event is None:
        raise AuthError(f"{rule}.5: no m.room.third_party_invite for the token")
    if sender_of(invite_event) != sender_of(event):
        raise AuthError(f"{rule}.6: sender did not send the m.room.third_party_invite")
    if verify_third_party_signed(signed, content_of(invite_event)):
        return
    raise AuthError(f"{rule}.8: no signature in signed matches the invite's public keys")


def _decode_base64(value: object) -> bytes | None:
    """Decodes unpadded base64 in the standard or URL-safe alphabet (``None`` if malformed)."""
    if not isinstance(value, str):
        return None
    text = value.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _public_keys(invite_content: Mapping[str, Any]) -> Iterator[bytes]:
    candidates: list[object] = [invite_content.get("public_key")]
    keys = invite_content.get("public_keys")
    if isinstance(keys, list):
        candidates.extend(k.get("public_key") for k in keys if isinstance(k, Mapping))
    for candidate in candidates:
        key = _decode_base64(candidate)
        if key is not None and len(key) == 32:
            yield key


def verify_third_party_signed(signed: Mapping[str, Any], invite_content: Mapping[str, Any]) -> bool:
    """Whether any ed25519 signature in ``signed`` verifies with a key of the invite.

    Args:
        signed: ``content.third_party_invite.signed`` of the member event (``mxid``, ``token``,
            ``signatures``).
        invite_content: content of the ``m.room.third_party_invite`` event (``public_key`` and
            ``public_keys``).
    """
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    unsigned_part = {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
    try:
        message = encode_canonical_json(unsigned_part)
    except CanonicalJSONError:
        return False
    sigs: list[bytes] = []
    for by_key in signatures.values():
        if not isinstance(by_key, Mapping):
            continue
        for key_id, sig in by_key.items():
            raw = _decode_base64(sig)
            if isinstance(key_id, str) and key_id.startswith("ed25519:") and raw and len(raw) == 64:
                sigs.append(raw)
    for key in _public_keys(invite_content):
        verify_key = nacl.signing.VerifyKey(key)
        for sig in sigs:
            try:
                verify_key.verify(message, sig)
            except nacl.exceptions.BadSignatureError:
                continue
            return True
    return False


def _check_leave(event: Event, state_key: str, auth_state: AuthState, rv: RoomVersion, rule: str) -> None:
    sender = sender_of(event)
    current = get_membership(auth_state, sender)
    if sender == state_key:
        allowed = (INVITE, JOIN, KNOCK) if rv.knock_join_rule else (INVITE, JOIN)
        if current in allowed:
            return
        raise AuthError(f"{rule}.1: cannot leave with membership {current!r}")
    if current != JOIN:
        raise AuthError(f"{rule}.2: sender is not joined")
    sender_level = power_level_of(sender, auth_state, rv)
    if get_membership(auth_state, state_key) == BAN and sender_level < named_level(auth_state, "ban", rv):
        raise AuthError(f"{rule}.3: sender's power level is below the ban level to unban")
    target_level = power_level_of(state_key, auth_state, rv)
    if sender_level >= named_level(auth_state, "kick", rv) and target_level < sender_level:
        return
    raise AuthError(f"{rule}.5: sender cannot kick the target")


def _check_ban(event: Event, state_key: str, auth_state: AuthState, rv: RoomVersion, rule: str) -> None:
    sender = sender_of(event)
    if get_membership(auth_state, sender) != JOIN:
        raise AuthError(f"{rule}.1: sender is not joined")
    sender_level = power_level_of(sender, auth_state, rv)
    target_level = power_level_of(state_key, auth_state, rv)
    if sender_level >= named_level(auth_state, "ban", rv) and target_level < sender_level:
        return
    raise AuthError(f"{rule}.3: sender cannot ban the target")


def _check_knock(event: Event, state_key: str, auth_state: AuthState, rv: RoomVersion, rule: str) -> None:
    join_rule = get_join_rule(auth_state)
    allowed = (KNOCK, KNOCK_RESTRICTED) if rv.knock_restricted_join_rule else (KNOCK,)
    if join_rule not in allowed:
        raise AuthError(f"{rule}.1: join rule {join_rule!r} does not allow knocking")
    sender = sender_of(event)
    if sender != state_key:
        raise AuthError(f"{rule}.2: sender does not match state_key")
    current = get_membership(auth_state, sender)
    if current not in (BAN, INVITE, JOIN):
        return
    raise AuthError(f"{rule}.4: cannot knock with membership {current!r}")


def creators_of(auth_state: AuthState, room_version: RoomVersion) -> frozenset[str]:
    """Returns the room creators according to the create event in ``auth_state``."""
    return get_creators(auth_state.get(("m.room.create", "")), room_version)
